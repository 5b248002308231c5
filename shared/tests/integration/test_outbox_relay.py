"""The outbox relay against the real servers: inserted documents relayed from memory, updated
ones read back, leftovers found by the scan, each document's events in order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from contacts_shared.kafka import EventPublisher
from contacts_shared.mongo import connect
from contacts_shared.outbox import OUTBOX, OutboxRelay, outbox_update

pytestmark = pytest.mark.integration


def entry(topic: str, key: str, n: int) -> dict[str, Any]:
    return {"id": f"{key}-{n}", "topic": topic, "key": key, "envelope": {"n": n}}


async def test_each_documents_events_leave_once_and_in_order(
    infrastructure: Any, unique: str
) -> None:
    topic = f"relay.{unique}"
    client = connect(infrastructure.mongodb_url, app_name="test")
    collection = client[f"relay_{unique}"]["docs"]
    publisher = EventPublisher(
        infrastructure.kafka_bootstrap_servers, client_id="test", topics=[topic], partitions=1
    )
    relay = OutboxRelay(collection, publisher, batch_size=10, scan_seconds=60)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    seen: list[tuple[str, int]] = []

    async def read_until(count: int, timeout: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(seen) < count and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen.extend((r.key.decode(), json.loads(r.value)["n"]) for r in records)

    # Left by a crashed writer: never notified, found by the scan at start.
    await collection.insert_one({"_id": "left", OUTBOX: [entry(topic, "left", 1)]})
    task = asyncio.create_task(relay.run())
    await consumer.start()
    await read_until(1)
    # Inserted with its entries: relayed from memory.
    inserted = [entry(topic, "a", 1), entry(topic, "a", 2)]
    await collection.insert_one({"_id": "a", OUTBOX: inserted})
    relay.notify("a", inserted)
    # Inserted, then changed before the relay got to it: read back, both entries in order.
    first = [entry(topic, "b", 1)]
    await collection.insert_one({"_id": "b", OUTBOX: first})
    await collection.update_one({"_id": "b"}, outbox_update([entry(topic, "b", 2)]))
    relay.notify("b", first)
    relay.notify("b")
    await read_until(5)
    await read_until(6, timeout=2)  # anything published twice would arrive meanwhile
    await consumer.stop()
    relay.stop()
    await task
    await publisher.close()
    pending = await collection.count_documents({f"{OUTBOX}.id": {"$gt": ""}})
    await client.close()

    assert seen[0] == ("left", 1)
    assert [n for key, n in seen if key == "a"] == [1, 2]
    assert [n for key, n in seen if key == "b"] == [1, 2]
    assert len(seen) == 5
    assert pending == 0
