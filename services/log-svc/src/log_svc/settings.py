"""log-svc settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from contacts_shared.settings import ServiceSettings


class LogSettings(ServiceSettings):
    service_name: str = "log-svc"
    mongodb_database: str = "log_svc"
    imports_events_group: str = "log-svc.imports"
    contacts_events_group: str = "log-svc.contacts"
    profile_events_group: str = "log-svc.profiles"
