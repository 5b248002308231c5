"""The consumer runner against the real broker: commit after handling, retries, dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from contacts_shared.kafka import ConsumerRunner, EventPublisher, OutgoingMessage

pytestmark = pytest.mark.integration


def consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def run_until(runner: ConsumerRunner, done: asyncio.Event) -> None:
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(done.wait(), timeout=30)
    runner.stop()
    await asyncio.wait_for(task, timeout=10)


async def test_poison_records_go_to_the_dead_letter_topic_and_offsets_are_committed(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic, group = f"runner.{unique}", f"group-{unique}"
    publisher = EventPublisher(
        bootstrap, client_id="test", topics=[topic, f"{topic}.dlq"], partitions=1
    )
    await publisher.publish(
        OutgoingMessage(topic, "k", body) for body in (b"one", b"poison", b"three")
    )
    handled: list[bytes] = []
    attempts: dict[bytes, int] = {}
    all_seen = asyncio.Event()

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        attempts[record.value] = attempts.get(record.value, 0) + 1
        if record.value == b"poison":
            raise ValueError("cannot digest")
        handled.append(record.value)
        if record.value == b"three":
            all_seen.set()

    first = consumer(bootstrap, topic, group)
    await first.start()
    runner = ConsumerRunner(first, publisher, handle, max_attempts=3, retry_backoff_seconds=0.01)
    await run_until(runner, all_seen)
    await first.stop()
    assert handled == [b"one", b"three"]
    assert attempts == {b"one": 1, b"poison": 3, b"three": 1}

    dead = consumer(bootstrap, f"{topic}.dlq", f"dlq-reader-{unique}")
    await dead.start()
    batch = await dead.getmany(timeout_ms=10_000)
    await dead.stop()
    [record] = [r for records in batch.values() for r in records]
    headers = dict(record.headers)
    assert record.value == b"poison"
    assert headers["dlq-original-topic"] == topic.encode()
    assert headers["dlq-original-offset"] == b"1"
    assert b"cannot digest" in headers["dlq-error"]

    # A restarted member of the group starts after the committed offsets: nothing again.
    await publisher.publish([OutgoingMessage(topic, "k", b"four")])
    four_seen = asyncio.Event()
    again: list[bytes] = []

    async def handle_again(record: ConsumerRecord[bytes, bytes]) -> None:
        again.append(record.value)
        if record.value == b"four":
            four_seen.set()

    second = consumer(bootstrap, topic, group)
    await second.start()
    await run_until(ConsumerRunner(second, publisher, handle_again), four_seen)
    await second.stop()
    await publisher.close()
    assert again == [b"four"]
