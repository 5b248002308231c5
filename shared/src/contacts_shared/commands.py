"""Commands on Kafka: requests to change state, applied by the owning service's consumer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class UpsertContact(BaseModel):
    """Create a contact or change only the given values (on `contacts.commands`, keyed
    `profile_id:key`, so that one writer applies one contact's commands in order)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["contacts.command.upsert_contact"] = "contacts.command.upsert_contact"
    command_id: str
    account_id: str
    profile_id: str
    key: str = Field(description="normalized email or E.164 phone")
    values: dict[str, Any] = Field(description="validated values by field key")
    source: str = Field(description="e.g. webhook:<source id>")
    received_at: datetime

    @property
    def partition_key(self) -> str:
        return f"{self.profile_id}:{self.key}"
