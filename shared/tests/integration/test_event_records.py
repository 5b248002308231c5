"""Events on the real broker in the CloudEvents Kafka binding's structured mode, through the
shared publish paths (an outbox's relay, a journal's round and the sweep of a dead writer's
journal), read back with the official SDK; a command sharing an outbox goes without the
header."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat

from contacts_shared.commands import PurgeForImport
from contacts_shared.events import EventEnvelope, ProfileDeleted
from contacts_shared.journal import JOURNAL, EventJournal, JournaledWrite, JournalRound
from contacts_shared.kafka import EventPublisher
from contacts_shared.mongo import Collection, Document, connect
from contacts_shared.outbox import (
    OUTBOX,
    OutboxRelay,
    QueuedDocuments,
    command_entry,
    outbox_entries,
)
from contacts_shared.schema import ProfileType
from contacts_shared.settings import ServiceSettings

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    settings: ServiceSettings
    documents: Collection
    journal_collection: Collection
    publisher: EventPublisher

    @property
    def topic(self) -> str:
        return self.settings.topic_profiles_events

    def entries(self, profile_id: str, versions: range) -> list[Document]:
        """Outbox entries of events of the profile, as a service queues them."""
        events = [
            ProfileDeleted(profile_id=profile_id, type=ProfileType.REGULAR, version=version)
            for version in versions
        ]
        return outbox_entries(events, account_id="acct", settings=self.settings)


@pytest.fixture
async def stack(infrastructure: Any, unique: str) -> AsyncIterator[Stack]:
    settings = ServiceSettings(
        service_name="records-svc", topic_profiles_events=f"records.{unique}"
    )
    client = connect(infrastructure.mongodb_url, app_name="test")
    database = client[f"records_{unique}"]
    publisher = EventPublisher(
        infrastructure.kafka_bootstrap_servers,
        client_id="test",
        topics=[settings.topic_profiles_events],
        partitions=2,
    )
    yield Stack(settings, database["docs"], database["docs_journal"], publisher)
    await publisher.close()
    await client.close()


Reading = tuple[str | None, dict[str, Any] | None]


def sdk_reading(entry: Document) -> Reading:
    """What a consumer on the SDK must read of the record of an event's outbox entry:
    structured mode, every attribute of the envelope, the record key (`partitionkey`), the
    data."""
    envelope = EventEnvelope.model_validate(entry["envelope"])
    return JSONFormat.CONTENT_TYPE, {**envelope.model_dump(), "partitionkey": entry["key"]}


def by_id(readings: Iterable[Reading]) -> list[Reading]:
    """In event id order, records that are no event first: the partitions' records arrive
    interleaved."""
    return sorted(readings, key=lambda reading: reading[1]["id"] if reading[1] else "")


async def test_the_relay_publishes_events_in_structured_mode_and_commands_bare(
    stack: Stack, read_cloud_events: Any
) -> None:
    relay = OutboxRelay(stack.documents, stack.publisher, batch_size=10, scan_seconds=60)
    first, second = stack.entries("p1", range(1, 3)), stack.entries("p2", range(1, 2))
    purge = PurgeForImport(import_id="i1", account_id="acct", profile_id="p1")
    command = command_entry(purge, topic=stack.topic, key="p1")
    await stack.documents.insert_one({"_id": "p1", OUTBOX: [*first, command]})
    await stack.documents.insert_one({"_id": "p2", OUTBOX: second})
    queued = QueuedDocuments()
    queued("p1")  # read back from the server
    queued("p2", second)  # relayed from memory, as for a writer that just inserted it
    await relay.publish_now(queued)

    read = await read_cloud_events(stack.topic, count=4)
    assert by_id((r.content_type, r.event) for r in read) == by_id(
        [(None, None), *map(sdk_reading, first + second)]
    )
    assert {e["envelope"]["source"] for e in first + second} == {"/records-svc"}


async def test_journaled_events_stay_in_structured_mode_when_a_dead_writers_journal_is_swept(
    stack: Stack, read_cloud_events: Any
) -> None:
    journal = EventJournal(stack.journal_collection, stack.documents, lease_seconds=0.5)
    # A writer that lives: its round published from memory.
    lived = stack.entries("a", range(1, 3))
    write = JournaledWrite.of("a", lived)
    token = await journal.record([write])
    await stack.documents.insert_one({"_id": "a", JOURNAL: token})
    done = JournalRound()
    done.applied(token, [write])
    await journal.publish(done, stack.publisher)
    # A writer that died once its document was written: its events read back from the journal.
    died = stack.entries("b", range(1, 3))
    token = await journal.record([JournaledWrite.of("b", died)])
    await stack.documents.insert_one({"_id": "b", JOURNAL: token})
    await asyncio.sleep(0.6)
    assert await journal.sweep(stack.publisher) == 1

    read = await read_cloud_events(stack.topic, count=4)
    assert by_id((r.content_type, r.event) for r in read) == by_id(map(sdk_reading, lived + died))
