"""The journal of bulk writes against the real servers: a round's events published and its
journal removed; what a dead writer left published for exactly the writes that applied; an
outbox write on a document of a live journal published after the journal's events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from contacts_shared.journal import (
    JOURNAL,
    PART_BYTES,
    EventJournal,
    JournaledWrite,
    JournalRound,
)
from contacts_shared.kafka import EventPublisher
from contacts_shared.mongo import Collection, connect
from contacts_shared.outbox import OUTBOX, OutboxRelay, QueuedDocuments, outbox_update

pytestmark = pytest.mark.integration


def entry(topic: str, key: str, n: int, padding: str = "") -> dict[str, Any]:
    return {"id": f"{key}-{n}", "topic": topic, "key": key, "envelope": {"n": n, "p": padding}}


@dataclass
class Stack:
    topic: str
    documents: Collection
    journal_collection: Collection
    publisher: EventPublisher
    consumer: AIOKafkaConsumer
    seen: list[tuple[str, int]]

    def journal(self, lease_seconds: float = 30) -> EventJournal:
        return EventJournal(self.journal_collection, self.documents, lease_seconds=lease_seconds)

    async def read(self, count: int, timeout: float = 30) -> list[tuple[str, int]]:
        """What arrived once `count` have (or the timeout passed)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.seen) < count and asyncio.get_running_loop().time() < deadline:
            for records in (await self.consumer.getmany(timeout_ms=300)).values():
                self.seen.extend((r.key.decode(), json.loads(r.value)["n"]) for r in records)
        return self.seen


@pytest.fixture
async def stack(infrastructure: Any, unique: str) -> AsyncIterator[Stack]:
    topic = f"journal.{unique}"
    client = connect(infrastructure.mongodb_url, app_name="test")
    database = client[f"journal_{unique}"]
    publisher = EventPublisher(
        infrastructure.kafka_bootstrap_servers, client_id="test", topics=[topic], partitions=1
    )
    await publisher.producer()  # creates the topic before the consumer looks for it
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    yield Stack(topic, database["docs"], database["docs_journal"], publisher, consumer, [])
    await consumer.stop()
    await publisher.close()
    await client.close()


async def test_a_round_publishes_its_applied_writes_and_removes_its_journal(
    stack: Stack,
) -> None:
    journal = stack.journal()
    # Big enough events that the journal takes several parts.
    padding = "x" * (PART_BYTES // 40)
    writes = [
        JournaledWrite.of(f"d{i}", [entry(stack.topic, f"d{i}", 1, padding)]) for i in range(100)
    ]
    token = await journal.record(writes)
    assert await stack.journal_collection.count_documents({}) > 2  # a header and parts
    assert token in await journal.live_tokens()
    await stack.documents.insert_many([{"_id": f"d{i}", JOURNAL: token} for i in range(100)])
    round = JournalRound()
    round.applied(token, writes[:60])  # say the other 40 did not apply
    await journal.publish(round, stack.publisher)

    seen = await stack.read(60)
    await stack.read(61, timeout=2)
    assert sorted(seen) == sorted((f"d{i}", 1) for i in range(60))
    assert await stack.journal_collection.count_documents({}) == 0
    assert await journal.live_tokens() == []


async def test_what_a_dead_writer_left_is_published_for_the_writes_that_applied(
    stack: Stack,
) -> None:
    journal = stack.journal(lease_seconds=0.5)
    writes = [JournaledWrite.of(f"d{i}", [entry(stack.topic, f"d{i}", 1)]) for i in range(10)]
    token = await journal.record(writes)
    # The writer died after writing d0-d5: d6-d9 were never written, or refused (another
    # write stamped differently got there first).
    await stack.documents.insert_many([{"_id": f"d{i}", JOURNAL: token} for i in range(6)])
    await stack.documents.insert_many([{"_id": "d6", JOURNAL: "another"}])

    assert await journal.sweep(stack.publisher) == 0  # still within its lease: the writer's
    await asyncio.sleep(0.6)
    assert await journal.sweep(stack.publisher) == 1

    seen = await stack.read(6)
    await stack.read(7, timeout=2)
    assert sorted(seen) == [(f"d{i}", 1) for i in range(6)]
    assert await stack.journal_collection.count_documents({}) == 0


async def test_an_outbox_write_on_a_live_journals_document_leaves_after_its_events(
    stack: Stack,
) -> None:
    journal = stack.journal()
    relay = OutboxRelay(
        stack.documents, stack.publisher, batch_size=10, scan_seconds=60, journal=journal
    )
    writes = [JournaledWrite.of(k, [entry(stack.topic, k, 1)]) for k in ("a", "b")]
    token = await journal.record(writes)
    await stack.documents.insert_many([{"_id": k, JOURNAL: token} for k in ("a", "b")])
    # Before the journal's writer publishes (or after it died), "a" is written again through
    # its outbox and relayed.
    await stack.documents.update_one({"_id": "a"}, outbox_update([entry(stack.topic, "a", 2)]))
    queued = QueuedDocuments()
    queued("a")
    await relay.publish_now(queued)

    seen = await stack.read(2)
    await stack.read(3, timeout=2)
    assert seen == [("a", 1), ("a", 2)]  # not b: its writer publishes it
    assert await stack.documents.count_documents({f"{OUTBOX}.id": {"$gt": ""}}) == 0


async def test_the_relay_sweeps_what_a_dead_writer_left(stack: Stack) -> None:
    journal = stack.journal(lease_seconds=0.5)
    relay = OutboxRelay(
        stack.documents, stack.publisher, batch_size=10, scan_seconds=0.2, journal=journal
    )
    writes = [JournaledWrite.of(k, [entry(stack.topic, k, 1)]) for k in ("a", "b")]
    token = await journal.record(writes)
    await stack.documents.insert_many([{"_id": "a", JOURNAL: token}])  # b: never written
    task = asyncio.create_task(relay.run())
    seen = await stack.read(1)
    await stack.read(2, timeout=2)
    relay.stop()
    await task
    assert seen == [("a", 1)]
    assert await stack.journal_collection.count_documents({}) == 0
