"""Dead letters against the real broker: a record the real consumer runner parks is listed with
its reason, replayed onto its topic with its key, value and headers, and replayed only once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import REGISTRY

from contacts_shared.dead_letters import (
    REPLAYED_FROM_HEADER,
    DeadLetter,
    Position,
    ReplayOutcome,
    Selection,
    list_dead_letters,
    read_to_end,
    replay_dead_letters,
    replayed_positions,
    topics_of,
)
from contacts_shared.kafka import (
    ConsumerRunner,
    EventPublisher,
    OutgoingMessage,
    Record,
    one_at_a_time,
)

pytestmark = pytest.mark.integration

OWN_HEADERS = (("event-type", b"contact.upserted"), ("traceparent", b"00-4bf9-00f0-01"))


def counted(name: str, topic: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": topic}) or 0.0


async def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def letters_of(bootstrap: str, topic: str) -> list[DeadLetter]:
    return [letter async for letter in list_dead_letters(bootstrap, topic)]


async def replay(bootstrap: str, topic: str, selection: Selection, **kw: Any) -> list[str]:
    outcomes: list[ReplayOutcome] = [
        o async for o in replay_dead_letters(bootstrap, topic, selection, **kw)
    ]
    return [f"{o.outcome} {o.letter.value.decode()}" for o in outcomes]


async def cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        wanted = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
        [response] = await admin.describe_configs([wanted])
    finally:
        await admin.close()
    [entry] = response.to_object()["resources"][0]["config_entries"]
    return str(entry["config_value"])


async def records_of(bootstrap: str, topic: str) -> list[Record]:
    return [record async for record in read_to_end(bootstrap, topic)]


async def test_a_parked_record_is_listed_then_replayed_once(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic = f"letters.{unique}"
    dlq = f"{topic}.dlq"
    publisher = EventPublisher(bootstrap, client_id="test", topics=[topic, dlq], partitions=2)
    await publisher.publish(
        [
            OutgoingMessage(topic, "contact-1", b"fine"),
            OutgoingMessage(topic, "contact-2", b"poison-2", OWN_HEADERS),
            OutgoingMessage(topic, "contact-3", b"poison-3", OWN_HEADERS),
        ]
    )
    started = datetime.now(UTC) - timedelta(seconds=5)  # the broker's clock may differ a little
    fixed = False
    failed: dict[bytes, Record] = {}
    handled: list[Record] = []

    async def handle(record: Record) -> None:
        if record.value.startswith(b"poison") and not fixed:
            failed[record.value] = record
            raise ValueError(f"cannot digest {record.value!r}")
        handled.append(record)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"group-{unique}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    runner = ConsumerRunner(
        consumer, publisher, one_at_a_time(handle), max_attempts=2, retry_backoff_seconds=0.01
    )
    running = asyncio.create_task(runner.run())
    try:
        # The real GuardedHandler parks both poison records.
        parked = "contacts_dead_lettered_records_total"
        await eventually(lambda: counted(parked, topic) == 2, "both poison records parked")
        letters = await letters_of(bootstrap, topic)
        assert letters == await letters_of(bootstrap, dlq)  # named either way
        assert letters == sorted(letters, key=lambda letter: letter.position)
        by_value = {letter.value: letter for letter in letters}
        assert sorted(by_value) == [b"poison-2", b"poison-3"]
        for value, letter in by_value.items():
            source = failed[value]
            assert letter.topic == dlq and letter.key == source.key.decode()
            assert letter.original_topic == topic
            assert (letter.original_partition, letter.original_offset) == (
                source.partition,
                source.offset,
            )
            assert letter.error == repr(ValueError(f"cannot digest {value!r}"))
            assert letter.size == len(value) and not letter.replayed
            assert started <= letter.timestamp <= datetime.now(UTC) + timedelta(seconds=5)
            assert letter.headers[:2] == OWN_HEADERS
        two, three = by_value[b"poison-2"], by_value[b"poison-3"]

        # A dry run sends nothing.
        before = await records_of(bootstrap, topic)
        only_two = Selection(positions=frozenset({two.position}))
        assert await replay(bootstrap, topic, only_two, dry_run=True) == ["would-replay poison-2"]
        assert len(await records_of(bootstrap, topic)) == len(before)

        fixed = True  # the handler's bug is mended: the replayed records go through
        replays = "contacts_dead_letters_replayed_total"
        assert await replay(bootstrap, dlq, only_two) == ["replayed poison-2"]
        assert counted(replays, topic) == 1
        await eventually(lambda: any(r.value == b"poison-2" for r in handled), "poison-2 handled")
        [back] = [r for r in handled if r.value == b"poison-2"]
        assert back.topic == topic and back.key == b"contact-2"
        assert tuple(back.headers) == (
            *OWN_HEADERS,
            (REPLAYED_FROM_HEADER, f"{dlq}:{two.position}".encode()),
        )

        # The same replay again puts nothing back.
        after_one = await records_of(bootstrap, topic)
        assert len(after_one) == len(before) + 1
        assert await replay(bootstrap, topic, only_two) == ["already-replayed poison-2"]
        assert len(await records_of(bootstrap, topic)) == len(after_one)
        assert counted(replays, topic) == 1
        assert [letter.replayed for letter in await letters_of(bootstrap, topic)] == [
            letter is two for letter in letters
        ]

        # All of them: only the one not replayed yet goes; then nothing, however often.
        assert sorted(await replay(bootstrap, topic, Selection())) == [
            "already-replayed poison-2",
            "replayed poison-3",
        ]
        for _ in range(2):
            assert sorted(await replay(bootstrap, topic, Selection())) == [
                "already-replayed poison-2",
                "already-replayed poison-3",
            ]
        assert counted(replays, topic) == 2
        # The marks: one per position, in a compacted topic, so they last as long as it does.
        assert await cleanup_policy(bootstrap, f"{dlq}.replayed") == "compact"
        assert await replayed_positions(bootstrap, topics_of(topic)) == {
            two.position,
            three.position,
        }
        replayed = [
            dict(r.headers)[REPLAYED_FROM_HEADER]
            for r in await records_of(bootstrap, topic)
            if REPLAYED_FROM_HEADER in dict(r.headers)
        ]
        assert sorted(replayed) == sorted(
            f"{dlq}:{p}".encode() for p in (two.position, three.position)
        )
        await eventually(lambda: any(r.value == b"poison-3" for r in handled), "poison-3 handled")
        assert counted(parked, topic) == 2  # nothing parked again
    finally:
        runner.stop()
        await asyncio.wait_for(running, timeout=10)
        await consumer.stop()
        await publisher.close()


async def test_a_replay_filters_by_error_and_age_and_reads_only_what_is_there(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic = f"filters.{unique}"
    dlq = f"{topic}.dlq"
    publisher = EventPublisher(bootstrap, client_id="test", topics=[topic, dlq], partitions=1)
    try:
        parked = [
            OutgoingMessage(
                dlq,
                f"k{n}",
                f"v{n}".encode(),
                (
                    ("dlq-error", error.encode()),
                    ("dlq-original-topic", topic.encode()),
                    ("dlq-original-partition", b"0"),
                    ("dlq-original-offset", str(n).encode()),
                ),
            )
            for n, error in enumerate(["KeyError('edad')", "TimeoutError()", "KeyError('rut')"])
        ]
        await publisher.publish(parked)
        keyed = Selection(error_contains="keyerror")
        assert await replay(bootstrap, topic, keyed, dry_run=True) == [
            "would-replay v0",
            "would-replay v2",
        ]
        future = Selection(since=datetime.now(UTC) + timedelta(hours=1))
        assert await replay(bootstrap, topic, future) == []
        assert await records_of(bootstrap, topic) == []
        assert await replay(bootstrap, topic, Selection(positions=frozenset({Position(0, 1)}))) == [
            "replayed v1"
        ]
        [back] = await records_of(bootstrap, topic)
        assert (back.key, back.value) == (b"k1", b"v1")

        # A listing stops at the end as of its call, whatever arrives meanwhile.
        listed = 0
        async for _ in list_dead_letters(bootstrap, topic):
            listed += 1
            await publisher.publish([OutgoingMessage(dlq, "late", b"late")])
        assert listed == 3
        assert len(await letters_of(bootstrap, topic)) == 6
    finally:
        await publisher.close()
