"""The consumer runner against the real broker: batches, commit after handling, retries, a
failed batch split into records, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from contacts_shared.kafka import (
    ConsumerRunner,
    EventPublisher,
    OutgoingMessage,
    SupervisedConsumer,
    one_at_a_time,
)

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
    batches: list[list[bytes]] = []
    handled: list[bytes] = []
    all_seen = asyncio.Event()

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        values = [record.value for record in records]
        batches.append(values)
        if b"poison" in values:
            raise ValueError("cannot digest")
        handled.extend(values)
        if b"three" in values:
            all_seen.set()

    first = consumer(bootstrap, topic, group)
    await first.start()
    runner = ConsumerRunner(first, publisher, handle, max_attempts=3, retry_backoff_seconds=0.01)
    await run_until(runner, all_seen)
    await first.stop()
    # The whole batch three times, then each record alone: the poison one three times.
    whole = [b"one", b"poison", b"three"]
    assert batches == [whole] * 3 + [[b"one"]] + [[b"poison"]] * 3 + [[b"three"]]
    assert handled == [b"one", b"three"]
    parked = REGISTRY.get_sample_value("contacts_dead_lettered_records_total", {"topic": topic})
    assert parked == 1  # counted, for /metrics

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
    await run_until(ConsumerRunner(second, publisher, one_at_a_time(handle_again)), four_seen)
    await second.stop()
    await publisher.close()
    assert again == [b"four"]


async def test_a_supervised_consumer_creates_its_topics_and_their_dead_letter_topics(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic = f"supervised.{unique}"
    publisher = EventPublisher(bootstrap, client_id="test", topics=[], partitions=1)

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        return None

    supervised = SupervisedConsumer(
        bootstrap,
        group_id=f"group-{unique}",
        topics=[topic],
        publisher=publisher,
        handler=handle,
    )
    task = asyncio.create_task(supervised.run())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not {topic, f"{topic}.dlq"} <= set(await admin.list_topics()):
            assert asyncio.get_running_loop().time() < deadline, "topics never created"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
        supervised.stop()
        await asyncio.wait_for(task, timeout=10)
        await publisher.close()
