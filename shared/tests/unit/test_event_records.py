"""Event records in the CloudEvents Kafka binding's structured mode: the `content-type` header
on every event record, none on a command, and the envelope whole as the official SDK reads it."""

from __future__ import annotations

import json
from typing import Any

from cloudevents.core.bindings.common import CONTENT_TYPE_HEADER
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from contacts_shared.commands import PurgeForImport
from contacts_shared.events import EventEnvelope, ProfileDeleted, to_envelope
from contacts_shared.journal import entry_message
from contacts_shared.kafka import OutgoingMessage, event_message
from contacts_shared.outbox import command_entry, outbox_entries
from contacts_shared.schema import ProfileType
from contacts_shared.settings import ServiceSettings

# As the SDK names them, not as we do: what a consumer on it looks for.
STRUCTURED = ((CONTENT_TYPE_HEADER, JSONFormat.CONTENT_TYPE.encode()),)
DELETED = ProfileDeleted(profile_id="p1", type=ProfileType.REGULAR, version=4)


def sdk_reading(message: OutgoingMessage) -> dict[str, Any]:
    """The attributes and data the official SDK reads of a record, its mode told by its
    headers."""
    kafka = KafkaMessage(dict(message.headers), message.key.encode(), message.value)
    event = from_kafka(kafka, JSONFormat())
    return {**event.get_attributes(), "data": event.get_data()}


def test_an_event_record_is_a_structured_cloud_event() -> None:
    envelope = to_envelope(DELETED, account_id="acct", source="/profile-svc")
    message = event_message("profiles.events", "p1", envelope.model_dump_json().encode())
    assert message.headers == STRUCTURED
    assert (message.topic, message.key, message.partition) == ("profiles.events", "p1", None)
    assert EventEnvelope.model_validate_json(message.value) == envelope
    # Every attribute, the extensions too; the SDK adds the record key as `partitionkey`.
    assert sdk_reading(message) == {**envelope.model_dump(), "partitionkey": "p1"}


def test_an_outbox_publishes_events_as_cloud_events_and_commands_as_they_are() -> None:
    [entry] = outbox_entries([DELETED], account_id="acct", settings=ServiceSettings())
    purge = PurgeForImport(import_id="i1", account_id="acct", profile_id="p1")
    command = command_entry(purge, topic="contacts.commands", key="p1")

    event = entry_message(entry)
    assert event.headers == STRUCTURED
    envelope = EventEnvelope.model_validate(entry["envelope"])
    assert sdk_reading(event) == {**envelope.model_dump(), "partitionkey": "p1"}
    sent = entry_message(command)
    assert sent.headers == ()
    assert json.loads(sent.value) == purge.model_dump(mode="json")
