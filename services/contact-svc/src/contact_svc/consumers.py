"""Kafka entry points of contact-svc: the projection of profile schemas, and contact
commands (webhook records) applied by the one consumer that owns each contact's partition."""

from __future__ import annotations

import logging

from aiokafka import ConsumerRecord

from contact_svc.domain import ProfileSchema
from contact_svc.handlers import apply_upsert
from contact_svc.repository import ContactRepository, SchemaStore
from contacts_shared.commands import UpsertContact
from contacts_shared.events import (
    EventEnvelope,
    ProfileDeleted,
    ProfileEvent,
    UnknownEventType,
    parse_event,
)

log = logging.getLogger(__name__)


async def apply_profile_event(
    record: ConsumerRecord[bytes, bytes], *, schemas: SchemaStore
) -> None:
    """Keep the profile's schema at its newest version; replays and repeats change nothing."""
    envelope = EventEnvelope.model_validate_json(record.value)
    try:
        event = parse_event(envelope)
    except UnknownEventType:
        return  # a newer producer's event type: nothing this version needs from it
    if isinstance(event, ProfileDeleted):
        gone = ProfileSchema(event.profile_id, envelope.accountid, event.type, (), event.version)
        await schemas.apply(gone, deleted=True)
    elif isinstance(event, ProfileEvent):
        await schemas.apply(ProfileSchema.of(event.profile), deleted=False)


async def apply_contact_command(
    record: ConsumerRecord[bytes, bytes], *, schemas: SchemaStore, contacts: ContactRepository
) -> None:
    """Apply an upsert from `contacts.commands`; a redelivered one finds nothing to change."""
    command = UpsertContact.model_validate_json(record.value)
    if await apply_upsert(command, schemas=schemas, contacts=contacts) is None:
        log.warning(
            "command for a profile that is gone, dropped",
            extra={"profile_id": command.profile_id, "command_id": command.command_id},
        )
