"""The lag and backlog gauges against the real servers: a partition's lag while records wait
and 0 once they are handled; events stored and not yet published counted (outbox and
journal), with the age of the oldest, read from indexes only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from contacts_shared.journal import EventJournal, JournaledWrite, JournalRound
from contacts_shared.kafka import ConsumerRunner, EventPublisher, OutgoingMessage, Record
from contacts_shared.metrics import Backlog
from contacts_shared.mongo import connect
from contacts_shared.outbox import OUTBOX, OUTBOX_INDEX, OutboxRelay, outbox_backlog

pytestmark = pytest.mark.integration


async def eventually(
    check: Callable[[], Any], want: Callable[[Any], bool], timeout: float = 30
) -> Any:
    """`check()` once `want` holds of it; fails with the last value when `timeout` passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not want(value := check()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert want(value), value
    return value


def lag(group: str, topic: str, partition: int) -> float | None:
    labels = {"group": group, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("contacts_consumer_lag", labels)


async def test_lag_shows_records_not_yet_handled_and_drops_to_zero(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic, group = f"lag.{unique}", f"lag-{unique}"
    publisher = EventPublisher(bootstrap, client_id="test", topics=[topic], partitions=1)
    await publisher.publish(OutgoingMessage(topic, "k", str(n).encode()) for n in range(10))
    first_handled, release = asyncio.Event(), asyncio.Event()
    handled: list[int] = []

    async def handle(records: Sequence[Record]) -> None:
        if first_handled.is_set():
            await release.wait()  # the rest wait: their lag shows meanwhile
        handled.extend(record.offset for record in records)
        first_handled.set()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    runner = ConsumerRunner(consumer, publisher, handle, batch_size=3, group=group)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(first_handled.wait(), 30)
        # The first batch handled and committed; the others fetched, not yet handled.
        waiting = 10 - len(handled)
        assert waiting > 0
        await eventually(lambda: lag(group, topic, 0), lambda v: v == waiting)
        release.set()
        await eventually(lambda: lag(group, topic, 0), lambda v: v == 0)
        assert handled == list(range(10))
    finally:
        release.set()
        runner.stop()
        await asyncio.wait_for(task, 10)
        await consumer.stop()
        await publisher.close()
    # Stopped: its partitions are released, and so are their series.
    assert lag(group, topic, 0) is None


class HeldPublisher(EventPublisher):
    """The real publisher, holding every publish until `release` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()

    async def publish(self, messages: Iterable[OutgoingMessage]) -> None:
        await self.release.wait()
        await super().publish(messages)


def backlog(service: str) -> tuple[float | None, float | None]:
    labels = {"service": service}
    return (
        REGISTRY.get_sample_value("contacts_outbox_backlog", labels),
        REGISTRY.get_sample_value("contacts_outbox_oldest_age_seconds", labels),
    )


def entry(topic: str, key: str, n: int, time: datetime | None) -> dict[str, Any]:
    envelope: dict[str, Any] = {"n": n}
    if time is not None:
        envelope["time"] = time.isoformat().replace("+00:00", "Z")
    return {"id": f"{key}-{n}", "topic": topic, "key": key, "envelope": envelope}


async def test_the_backlog_counts_events_not_yet_published_then_none(
    infrastructure: Any, unique: str
) -> None:
    topic, service = f"backlog.{unique}", f"svc-{unique}"
    client = connect(infrastructure.mongodb_url, app_name="test")
    collection = client[f"backlog_{unique}"]["docs"]
    await collection.create_indexes([OUTBOX_INDEX])
    stored = datetime.now(UTC) - timedelta(seconds=60)
    # Left unpublished a minute ago: an event, and a command (which tells no time).
    await collection.insert_one(
        {"_id": "left", OUTBOX: [entry(topic, "left", 1, stored), entry(topic, "left", 2, None)]}
    )
    publisher = HeldPublisher(
        infrastructure.kafka_bootstrap_servers, client_id=service, topics=[topic], partitions=1
    )
    relay = OutboxRelay(collection, publisher, batch_size=10, scan_seconds=60, backlog_seconds=0.1)
    task = asyncio.create_task(relay.run())
    try:
        events, age = await eventually(lambda: backlog(service), lambda v: v[0] == 2)
        assert age is not None and 60 <= age < 120
        publisher.release.set()
        assert await eventually(lambda: backlog(service), lambda v: v[0] == 0) == (0, 0)
    finally:
        publisher.release.set()
        relay.stop()
        await asyncio.wait_for(task, 10)
        await publisher.close()
        await client.close()
    assert backlog(service) == (None, None)  # no relay of the service's in this process now


async def test_a_journal_counts_its_events_until_it_is_removed(
    infrastructure: Any, unique: str
) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    database = client[f"backlog_{unique}"]
    journal = EventJournal(database["journal"], database["docs"], lease_seconds=30)
    publisher = EventPublisher(
        infrastructure.kafka_bootstrap_servers, client_id="test", topics=[], partitions=1
    )
    message = OutgoingMessage("t", "k", b"{}")
    before = datetime.now(UTC) - timedelta(seconds=1)
    token = await journal.record(
        [JournaledWrite("a", [message, message]), JournaledWrite("b", [message])]
    )
    await journal.record([JournaledWrite("c", [message])])
    counted = await journal.backlog()
    assert counted.events == 4
    assert counted.oldest is not None and before <= counted.oldest <= datetime.now(UTC)

    await journal.publish(JournalRound(tokens=[token]), publisher)  # its writes all lost
    assert (await journal.backlog()).events == 1
    await client.close()


async def test_the_backlog_is_read_from_indexes_only(
    infrastructure: Any, unique: str, mongo_queries: Any, indexes_read: Any
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True, event_listeners=[mongo_queries]
    )
    database = client[f"backlog_{unique}"]
    documents, journal_collection = database["docs"], database["journal"]
    await documents.create_indexes([OUTBOX_INDEX])
    await documents.insert_many(
        [{"_id": f"done{n}", OUTBOX: []} for n in range(50)]
        + [{"_id": "left", OUTBOX: [entry("t", "left", 1, datetime.now(UTC))]}]
    )
    journal = EventJournal(journal_collection, documents, lease_seconds=30)
    await journal.record([JournaledWrite("left", [OutgoingMessage("t", "k", b"{}")])])
    mongo_queries.sent.clear()

    measures: list[Callable[[], Awaitable[Backlog]]] = [
        lambda: outbox_backlog(documents),
        journal.backlog,
    ]
    assert [(await measure()).events for measure in measures] == [1, 1]
    served = {"docs": "outbox_pending", "journal": "_id_"}
    assert mongo_queries.collections() == ["docs", "journal"]
    for command, collection in zip(mongo_queries.sent, mongo_queries.collections(), strict=True):
        assert await indexes_read(database, command) == {served[collection]}, command
    await client.close()
