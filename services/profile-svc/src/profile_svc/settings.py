"""profile-svc settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from contacts_shared.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    service_name: str = "profile-svc"
    mongodb_database: str = "profile_svc"
