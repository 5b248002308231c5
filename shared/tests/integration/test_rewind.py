"""The rewind command against the real broker: a stopped group's offsets go back to the start
of its topics (a dry run moves nothing), its consumer then reads every record again; a group
with a member running is refused."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contacts_shared.kafka import EventPublisher, OutgoingMessage
from contacts_shared.rewind import command, rewind

pytestmark = pytest.mark.integration

RECORDS = 12


def consumer_of(bootstrap: str, group: str, topic: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def read_and_commit(bootstrap: str, group: str, topic: str) -> list[bytes]:
    """What the group reads of `topic` from its committed offsets, committed after."""
    consumer = consumer_of(bootstrap, group, topic)
    await consumer.start()
    try:
        read: list[bytes] = []
        while batch := await consumer.getmany(timeout_ms=3000):
            read += [
                record.value for records in batch.values() for record in records if record.value
            ]
        await consumer.commit()
        return read
    finally:
        await consumer.stop()


async def test_a_stopped_group_is_rewound_and_reads_everything_again(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic, group = f"rewound.{unique}", f"projection.{unique}"
    publisher = EventPublisher(bootstrap, client_id="test", topics=[topic], partitions=3)
    sent = [f"event-{n}".encode() for n in range(RECORDS)]
    try:
        await publisher.publish(OutgoingMessage(topic, f"key-{n}", v) for n, v in enumerate(sent))
    finally:
        await publisher.close()
    assert sorted(await read_and_commit(bootstrap, group, topic)) == sorted(sent)
    assert await read_and_commit(bootstrap, group, topic) == []

    dry = await rewind(bootstrap, group, [topic], execute=False)
    assert sorted(m.partition.partition for m in dry) == [0, 1, 2]
    assert sum(m.committed or 0 for m in dry) == RECORDS and {m.start for m in dry} == {0}
    assert await read_and_commit(bootstrap, group, topic) == []  # the dry run moved nothing

    out = io.StringIO()
    status = await command([group, topic, "--execute", "--bootstrap-servers", bootstrap], out=out)
    assert status == 0, out.getvalue()
    assert f"group {group} rewound: 3 partitions, {RECORDS} records to read again" in out.getvalue()
    assert sorted(await read_and_commit(bootstrap, group, topic)) == sorted(sent)


async def test_a_running_group_or_an_unknown_topic_is_refused(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic, group = f"running.{unique}", f"live.{unique}"
    publisher = EventPublisher(bootstrap, client_id="test", topics=[topic], partitions=1)
    try:
        await publisher.publish([OutgoingMessage(topic, "key", b"one")])
    finally:
        await publisher.close()
    running = consumer_of(bootstrap, group, topic)
    await running.start()
    try:
        await running.getmany(timeout_ms=3000)
        await running.commit()
        out = io.StringIO()
        assert (
            await command([group, topic, "--execute", "--bootstrap-servers", bootstrap], out=out)
            == 1
        )
        assert f"refused: group {group} has 1 member(s): stop its consumers first" in out.getvalue()
        assert await running.committed(TopicPartition(topic, 0)) == 1
    finally:
        await running.stop()

    out = io.StringIO()
    assert (
        await command([group, f"missing.{unique}", "--bootstrap-servers", bootstrap], out=out) == 1
    )
    assert f"refused: no such topic: missing.{unique}" in out.getvalue()
