"""log-svc settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from contacts_shared.settings import ServiceSettings


class LogSettings(ServiceSettings):
    service_name: str = "log-svc"
    mongodb_database: str = "log_svc"
    imports_events_group: str = "log-svc.imports"
    contacts_events_group: str = "log-svc.contacts"
    profile_events_group: str = "log-svc.profiles"
    # The audit trail may lag a second where the other projections lag a quarter: each of its
    # partition batches is one insert, whose fixed cost on the server is that of tens of
    # entries, so it fetches four times the bytes (under bench/webhook_ingest.py, batches of
    # about 210 entries instead of 65).
    projection_fetch_min_bytes: int = Field(default=1_048_576, ge=1)
    projection_fetch_wait_ms: int = Field(default=1000, ge=0)
