"""Profile schema types shared by the services through the profile events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ProfileType(StrEnum):
    REGULAR = "regular"
    VIRTUAL = "virtual"
    MOBILE_ONLY = "mobile_only"


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"
    EMAIL = "email"
    PHONE = "phone"


class ContactStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    BLOCKED = "blocked"


class FieldSpec(BaseModel):
    """A profile field: `name` as users write it in CSV headers, `key` as stored (MongoDB-safe)."""

    model_config = ConfigDict(frozen=True)

    name: str
    key: str
    type: FieldType
    required: bool = False
    # The field that identifies a contact: `email` on regular profiles, `phone` on mobile-only.
    identity: bool = False


class ProfileSnapshot(BaseModel):
    """A profile as it stands after a change; carried by every profile event but deletion."""

    model_config = ConfigDict(frozen=True)

    id: str
    account_id: str
    name: str
    description: str
    type: ProfileType
    fields: tuple[FieldSpec, ...]
    base_profile_id: str | None = None
    rules: dict[str, Any] | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class ContactSnapshot(BaseModel):
    """A contact as it stands after a change; carried by every contact event but deletion."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="`profile_id:key`, also the Kafka message key")
    account_id: str
    profile_id: str
    key: str = Field(description="normalized email (regular) or E.164 phone (mobile-only)")
    fields: dict[str, Any] = Field(description="values by field key (see the profile's fields)")
    status: ContactStatus
    status_reason: str | None = None
    status_source: str
    status_changed_at: datetime
    source: str = Field(description="what wrote it last: api, webhook:<id>, import:<id>")
    version: int
    created_at: datetime
    updated_at: datetime
