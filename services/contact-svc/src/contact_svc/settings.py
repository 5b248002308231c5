"""contact-svc settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from contacts_shared.settings import ServiceSettings


class ContactSettings(ServiceSettings):
    service_name: str = "contact-svc"
    mongodb_database: str = "contact_svc"
    # Region of phone numbers written without a country code (ISO 3166-1 alpha-2).
    default_phone_region: str = Field(default="CL", pattern="^[A-Z]{2}$")
    profile_events_group: str = "contact-svc.profile-schemas"
    contact_commands_group: str = "contact-svc.commands"
    suppressions_group: str = "contact-svc.suppressions"
    stats_group: str = "contact-svc.stats"
