"""Kafka entry points of contact-svc: the projection of profile schemas."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from contact_svc.domain import ProfileSchema
from contact_svc.repository import SchemaStore
from contacts_shared.events import (
    EventEnvelope,
    ProfileDeleted,
    ProfileEvent,
    UnknownEventType,
    parse_event,
)


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
