"""profile-svc write path, end to end: HTTP write -> MongoDB -> outbox relay -> Kafka event.

Run against the running local stack (`make run`, then `make bench`). Prints the HTTP write rate
and latency, and the latency from each write's response to its event on Kafka, next to a
baseline measured in the same process: the same document written straight to MongoDB and its
event sent straight to Kafka (no HTTP, no outbox), so the ratio holds on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from figures import percentile
from pymongo import AsyncMongoClient

from contacts_shared.events import EventEnvelope
from contacts_shared.kafka import ensure_topics
from contacts_shared.settings import ServiceSettings


def report(name: str, latencies_ms: list[float], elapsed_s: float) -> None:
    p50, p99 = statistics.median(latencies_ms), percentile(latencies_ms, 0.99)
    rate = len(latencies_ms) / elapsed_s
    print(f"{name:<34} {rate:8.1f} ops/s   p50 {p50:8.2f} ms   p99 {p99:8.2f} ms")


async def consume(consumer: AIOKafkaConsumer, arrived: dict[str, float]) -> None:
    """Stamp each event's arrival, from before the first write until cancelled."""
    while True:
        batches = await consumer.getmany(timeout_ms=50)
        now = time.perf_counter()
        for records in batches.values():
            for record in records:
                envelope = EventEnvelope.model_validate_json(record.value)
                arrived.setdefault(envelope.subject, now)


async def all_arrived(wanted: set[str], arrived: dict[str, float]) -> None:
    while not wanted <= arrived.keys():
        await asyncio.sleep(0.05)


async def main(url: str, api_key: str, count: int, concurrency: int) -> None:
    settings = ServiceSettings()
    topic = settings.topic_profiles_events
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="latest"
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # join and settle at the end of the topic
    run = uuid.uuid4().hex[:8]

    # The service: concurrent HTTP creates, each answered after the MongoDB write.
    responded: dict[str, float] = {}
    write_ms: list[float] = []
    limiter = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as api:

        async def create(index: int) -> None:
            async with limiter:
                started = time.perf_counter()
                response = await api.post("/v1/profiles", json={"name": f"bench {run} {index}"})
                response.raise_for_status()
                done = time.perf_counter()
                write_ms.append((done - started) * 1000)
                responded[response.json()["id"]] = done

        arrived: dict[str, float] = {}
        consuming = asyncio.create_task(consume(consumer, arrived))
        started = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(count)))
        writes_elapsed = time.perf_counter() - started
        await asyncio.wait_for(all_arrived(set(responded), arrived), timeout=300)
        consuming.cancel()
    await consumer.stop()
    relay_ms = [(arrived[key] - responded[key]) * 1000 for key in responded]

    # Baseline: the same number of documents and events, written directly.
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(settings.mongodb_url)
    collection = client["bench"][f"baseline_{run}"]
    baseline_topic = f"bench.baseline.{run}"
    await ensure_topics(settings.kafka_bootstrap_servers, [baseline_topic], partitions=6)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    base_ms: list[float] = []

    async def direct(index: int) -> None:
        async with limiter:
            started = time.perf_counter()
            await collection.insert_one({"_id": f"{run}-{index}", "name": f"bench {index}"})
            await producer.send_and_wait(baseline_topic, b"{}", key=str(index).encode())
            base_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(direct(i) for i in range(count)))
    base_elapsed = time.perf_counter() - started
    await producer.stop()
    await client.drop_database("bench")
    await client.close()

    print(f"profile-svc write path: {count} creates, concurrency {concurrency}")
    report("HTTP create (answered after write)", write_ms, writes_elapsed)
    report("response -> event on Kafka", relay_ms, writes_elapsed)
    report("baseline: insert + send_and_wait", base_ms, base_elapsed)
    print(
        f"ratio: service create rate / baseline rate = "
        f"{(count / writes_elapsed) / (count / base_elapsed):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8101")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.api_key, args.count, args.concurrency))
