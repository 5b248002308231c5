"""console settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """Where the services' APIs are, and how the session cookie is sealed."""

    model_config = SettingsConfigDict(env_prefix="CONTACTS_", extra="ignore")

    environment: Literal["local", "test", "staging", "production"] = "local"
    service_name: str = "console"
    log_level: str = "INFO"
    profile_svc_url: str = "http://127.0.0.1:8101"
    contact_svc_url: str = "http://127.0.0.1:8102"
    import_svc_url: str = "http://127.0.0.1:8103"
    segment_svc_url: str = "http://127.0.0.1:8104"
    log_svc_url: str = "http://127.0.0.1:8105"
    # The Fernet key (urlsafe base64 of 32 bytes) sealing the session cookie, the same in every
    # replica. Unset (local and test only): one is made at start, and a restart signs everyone
    # out.
    console_session_key: str | None = None
    # Behind TLS: the cookie is sent over HTTPS only.
    console_secure_cookies: bool = False
    # A signed-in session lasts this long without a new sign-in.
    console_session_hours: float = Field(default=12, gt=0)
    # Each call to a service: past it, the page says the service is slow, and the rest works.
    console_api_timeout_seconds: float = Field(default=5.0, gt=0)
