"""import-svc settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from contacts_shared.settings import ServiceSettings


class ImportSettings(ServiceSettings):
    service_name: str = "import-svc"
    mongodb_database: str = "import_svc"
    # Uploads are streamed to storage, never held whole; this bounds one upload.
    max_request_bytes: int = Field(default=2 * 1024**3, ge=1024)
    default_phone_region: str = Field(default="CL", pattern="^[A-Z]{2}$")
    profile_events_group: str = "import-svc.profile-schemas"
    results_group: str = "import-svc.results"
    # Rows sent to Kafka between checkpoints; a restart resends at most this many.
    rows_per_checkpoint: int = Field(default=2000, ge=1)
    # A worker renews its hold on an import this often; another takes over after the lease.
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    # A progress stream tells an import's progress this often, and closes after this long
    # (a client reconnects), so no request is held forever.
    progress_every_seconds: float = Field(default=1.0, gt=0)
    progress_stream_seconds: float = Field(default=600.0, gt=0)
