"""Figures the benches print: percentiles of latencies, and the raw write rate of the same
documents straight into the same server, the baseline a pipeline is compared with."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

Documents = AsyncCollection[dict[str, Any]]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def p50_p99(latencies_ms: list[float]) -> str:
    p50, p99 = statistics.median(latencies_ms), percentile(latencies_ms, 0.99)
    return f"p50 {p50:9.2f} ms   p99 {p99:9.2f} ms"


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """Milliseconds each of `repeat` calls took, one after the other."""
    latencies = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def bulk_upsert_rate(
    collection: Documents, chunks: AsyncIterable[Sequence[dict[str, Any]]]
) -> float:
    """Documents a second, upserted by `_id` in unordered bulks (one per chunk): only the
    writes are timed, not the reading of the chunks."""
    written, seconds = 0, 0.0
    async for chunk in chunks:
        started = time.perf_counter()
        await collection.bulk_write(
            [UpdateOne({"_id": d["_id"]}, {"$set": d}, upsert=True) for d in chunk],
            ordered=False,
        )
        seconds += time.perf_counter() - started
        written += len(chunk)
    return written / seconds


async def indexed_like(source: Documents, target: Documents) -> Documents:
    """`target` with the indexes `source` has (the contacts' listing indexes, say)."""
    for name, index in (await source.index_information()).items():
        if name != "_id_":
            options = {k: index[k] for k in ("sparse", "unique") if k in index}
            await target.create_index(index["key"], name=name, **options)
    return target


async def stored_documents(
    collection: Documents, query: dict[str, Any], size: int = 1000
) -> AsyncIterable[list[dict[str, Any]]]:
    """The documents matching `query`, in chunks of `size`, as they are stored."""
    chunk: list[dict[str, Any]] = []
    async for document in collection.find(query, {"outbox": 0}):
        chunk.append(document)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def latest_consumer(topic: str, bootstrap_servers: str) -> AIOKafkaConsumer:
    """A started consumer of `topic` that reads only what is published from now on."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    for partition in consumer.assignment():
        await consumer.position(partition)  # resolve "latest" now: only what follows counts
    return consumer
