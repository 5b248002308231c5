"""Kafka adapters: an event publisher (acks=all, idempotent, keyed by aggregate) and a consumer
runner (manual commit after handling, bounded retries, dead-letter topic, graceful shutdown)."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, KafkaTimeoutError
from prometheus_client import Counter

from contacts_shared import tracing
from contacts_shared.faults import OUTAGES, is_outage, next_outage_pause
from contacts_shared.metrics import PartitionLags, partition_lags
from contacts_shared.settings import ServiceSettings
from contacts_shared.topics.gate import TopicGate, TopicsNotReady

log = logging.getLogger(__name__)

# Served at each process's /metrics: an alert on it is how a parked record gets looked at.
DEAD_LETTERED = Counter(
    "contacts_dead_lettered_records_total",
    "Records parked in a dead-letter topic once their handler kept failing, by topic",
    ["topic"],
)

TOPIC_ALREADY_EXISTS = 36
# The longest a consumer loop waits for its positions to show its lag (they are known at once
# but right after a rebalance).
LAG_POSITION_SECONDS = 1.0

# What a parked record carries besides its own headers (read back by `dead_letters`).
DLQ_HEADER_PREFIX = "dlq-"
ERROR_HEADER = "dlq-error"
ORIGINAL_TOPIC_HEADER = "dlq-original-topic"
ORIGINAL_PARTITION_HEADER = "dlq-original-partition"
ORIGINAL_OFFSET_HEADER = "dlq-original-offset"


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    # The key's partition (`partition_of`) when the sender knows it already; else the producer
    # hashes the key again.
    partition: int | None = None

    def with_headers(self, headers: tuple[tuple[str, bytes], ...]) -> OutgoingMessage:
        """The same message with these headers (made directly: `dataclasses.replace` takes
        several times as long, and every record of a traced publish goes through here)."""
        return OutgoingMessage(self.topic, self.key, self.value, headers, self.partition)


# The Kafka protocol binding of CloudEvents, structured mode: a record whose value is a whole
# envelope in JSON says so in this header, so a consumer on a CloudEvents SDK reads every
# attribute from the value (events.EventEnvelope).
CONTENT_TYPE_HEADER = "content-type"
CLOUDEVENTS_JSON = "application/cloudevents+json"
EVENT_HEADERS = ((CONTENT_TYPE_HEADER, CLOUDEVENTS_JSON.encode()),)


def event_message(topic: str, key: str, envelope: bytes) -> OutgoingMessage:
    """The record of an event: its envelope's JSON, in CloudEvents structured mode."""
    return OutgoingMessage(topic, key, envelope, EVENT_HEADERS)


_MURMUR_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), unsigned: the one
    aiokafka's default partitioner uses, in half its time (the key's words read at once), which
    counts at two records a contact."""
    length = len(data)
    h = 0x9747B28C ^ length
    for word in struct.unpack_from(f"<{length >> 2}I", data):
        k = (word * _MURMUR_M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _MURMUR_M) & 0xFFFFFFFF
        h = ((h * _MURMUR_M) & 0xFFFFFFFF) ^ k
    if tail := length & 3:
        whole = length - tail
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _MURMUR_M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _MURMUR_M) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_of(key: str, partitions: int) -> int:
    """The partition a record keyed `key` lands on among `partitions`, as Kafka's default
    partitioner (murmur2) chooses it, so a sender can number its records per partition."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def key_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's default partitioner (Kafka's) with the faster `murmur2`."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int,
    *,
    configs: Mapping[str, str] | None = None,
) -> set[str]:
    """Create the topics that do not exist yet (brokers in production refuse auto-creation),
    with `configs` if given; the names of every topic there is then."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        wanted = set(topics)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, 1, topic_configs=dict(configs or {}))
            for name in sorted(wanted - existing)
        ]
        if missing:
            response = await admin.create_topics(missing)
            for name, code, *_ in response.topic_errors:
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"could not create topic {name}: error code {code}")
        return existing | wanted
    finally:
        await admin.close()


class EventPublisher:
    """Publishes to Kafka; connects on first use so a service starts while Kafka is down."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        topics: Iterable[str],
        partitions: int,
        call_timeout: float = 8.0,
        gate: TopicGate | None = None,
    ) -> None:
        """`call_timeout`: the longest a start or a publish may wait for the broker before it
        fails with KafkaTimeoutError (an outage: consumers wait, requests answer 503).
        `gate`: verifies the topics before the first connection (`TopicGate.of_service`);
        without one, `topics` are created with `partitions` each (tests, tools)."""
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        # The topics of this process's publisher and consumers.
        self.topics = gate or TopicGate.creating(bootstrap_servers, partitions)
        self.topics.need(topics)
        self._call_timeout = call_timeout
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def of_service(cls, settings: ServiceSettings, topics: Iterable[str]) -> EventPublisher:
        """The publisher of a service, to `topics`, with its settings' timeout."""
        return cls(
            settings.kafka_bootstrap_servers,
            client_id=settings.service_name,
            topics=topics,
            partitions=settings.topic_partitions,
            call_timeout=settings.kafka_call_timeout_seconds,
            gate=TopicGate.of_service(settings),
        )

    @property
    def client_id(self) -> str:
        """Who publishes: the service's name, for a publisher `of_service`."""
        return self._client_id

    async def producer(self) -> AIOKafkaProducer:
        """The started producer; raises KafkaError while the broker cannot be reached."""
        async with self._lock, self._deadline("start"):
            if self._producer is None:
                await self.topics.ensure()
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap_servers,
                    client_id=self._client_id,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=5,
                    request_timeout_ms=int(self._call_timeout * 1000),
                    partitioner=key_partitioner,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    @asynccontextmanager
    async def _deadline(self, call: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._call_timeout):
                yield
        except TimeoutError as exc:
            raise KafkaTimeoutError(
                f"Kafka did not answer a {call} within {self._call_timeout:g}s"
            ) from exc

    async def publish(self, messages: Iterable[OutgoingMessage]) -> None:
        """Send every message and wait until the broker has acknowledged all of them.

        Messages with the same key keep their order: the producer is idempotent, so retries
        cannot reorder or duplicate within a partition.
        """
        producer = await self.producer()
        # Each message carries the context of a publish span (tracing.publishing).
        with tracing.publishing(list(messages)) as traced:
            async with self._deadline("publish"):
                pending = [
                    await producer.send(
                        m.topic,
                        m.value,
                        key=m.key.encode(),
                        partition=m.partition,
                        headers=list(m.headers) or None,
                    )
                    for m in traced
                ]
                await asyncio.gather(*pending)

    async def partitions_of(self, topic: str) -> int:
        """How many partitions `topic` has (a sender numbering its records per partition)."""
        producer = await self.producer()
        return len(await producer.partitions_for(topic))

    async def check(self) -> None:
        """Raise unless the broker answers a metadata request."""
        producer = await self.producer()
        async with self._deadline("metadata request"):
            await producer.client.fetch_all_metadata()

    async def close(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


Record: TypeAlias = ConsumerRecord[bytes, bytes]
RecordHandler = Callable[[Record], Awaitable[None]]
# Handles records of one partition, in offset order, as a whole: a handler that folds a batch
# into bulk reads and writes does a few round trips where one per record would do hundreds.
BatchHandler = Callable[[Sequence[Record]], Awaitable[None]]


class OneAtATime:
    """A batch handler that hands each record to `handler` in turn, each in a consumer span
    of its own (a batch's span would join only the first record's trace)."""

    def __init__(self, handler: RecordHandler) -> None:
        self._handler = handler

    async def __call__(self, records: Sequence[Record]) -> None:
        for record in records:
            with tracing.consuming([record]):
                await self._handler(record)


def one_at_a_time(handler: RecordHandler) -> BatchHandler:
    """A batch handler that hands each record to `handler` in turn."""
    return OneAtATime(handler)


class GuardedHandler:
    """Runs a batch handler so that no record is skipped silently.

    A batch whose handler keeps failing is retried `max_attempts` times with backoff, then its
    records are handled one by one, each retried the same way and then published to
    `<topic><dead_letter_suffix>` with the error in its headers, so one poison message never
    blocks its partition and is never silently dropped. While a server or broker is away
    (`faults.is_outage`) the handler is retried until it is back, with no further fetches
    meanwhile, and the process reports not ready (`faults.OUTAGES`). Handlers must be
    idempotent: after a crash, or a failed batch, records are delivered again.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        handler: BatchHandler,
        *,
        dead_letter_suffix: str = ".dlq",
        max_attempts: int = 3,
        retry_backoff_seconds: float = 0.2,
    ) -> None:
        self._publisher = publisher
        self._handler = handler
        self._dead_letter_suffix = dead_letter_suffix
        self._max_attempts = max_attempts
        self._retry_backoff_seconds = retry_backoff_seconds
        self.stopping = asyncio.Event()

    async def handle(self, records: Sequence[Record]) -> None:
        # A consumer span over the batch, unless the handler makes one per record.
        per_record = isinstance(self._handler, OneAtATime)
        with tracing.consuming(() if per_record else records):
            if await self._attempt(records) is not None:
                for record in records:
                    if (error := await self._attempt([record])) is not None:
                        await self._dead_letter(record, error)

    async def _attempt(self, records: Sequence[Record]) -> Exception | None:
        """Handle the records, retrying with backoff; the last error if every attempt failed.
        While a backing server is away the attempts are not counted: the records are fine
        and must not be dead-lettered; the process is not ready for as long as it waits."""
        part = f"consumer of {records[0].topic}[{records[0].partition}]"
        try:
            return await self._attempt_waiting_out(records, part)
        finally:
            OUTAGES.over(part)

    async def _attempt_waiting_out(self, records: Sequence[Record], part: str) -> Exception | None:
        error: Exception | None = None
        attempt, outage_pause = 1, self._retry_backoff_seconds
        while attempt <= self._max_attempts:
            try:
                await self._handler(records)
                return None
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then parked
                error = exc
                position = {
                    "topic": records[0].topic,
                    "partition": records[0].partition,
                    "offsets": f"{records[0].offset}-{records[-1].offset}",
                    "error": repr(exc),
                }
                if is_outage(exc):
                    if self.stopping.is_set():
                        raise  # uncommitted: the next owner of the partition handles them
                    OUTAGES.waiting(part)
                    log.warning("a backing server is away, waiting for it", extra=position)
                    await asyncio.sleep(outage_pause)
                    outage_pause = next_outage_pause(outage_pause)
                    continue
                OUTAGES.over(part)
                log.warning(
                    "handler failed, retrying"
                    if attempt < self._max_attempts
                    else "handler failed",
                    extra={**position, "attempt": attempt},
                )
                if attempt < self._max_attempts:
                    await asyncio.sleep(self._retry_backoff_seconds * 2 ** (attempt - 1))
                attempt += 1
        return error

    async def _dead_letter(self, record: Record, exc: Exception) -> None:
        topic = record.topic + self._dead_letter_suffix
        log.error(
            "handler failed for good, record sent to the dead-letter topic",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "dead_letter_topic": topic,
                "error": repr(exc),
            },
        )
        headers = (
            *tuple(record.headers),
            (ERROR_HEADER, repr(exc).encode()),
            (ORIGINAL_TOPIC_HEADER, record.topic.encode()),
            (ORIGINAL_PARTITION_HEADER, str(record.partition).encode()),
            (ORIGINAL_OFFSET_HEADER, str(record.offset).encode()),
        )
        key = record.key.decode() if record.key is not None else ""
        await self._publisher.publish([OutgoingMessage(topic, key, record.value or b"", headers)])
        DEAD_LETTERED.labels(topic=record.topic).inc()
        tracing.failed(exc)


class ConsumerRunner:
    """Feeds each partition's batch of records to a handler (guarded: retried, then
    dead-lettered), the partitions' batches at once, and commits their offsets only once they
    are handled."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        publisher: EventPublisher,
        handler: BatchHandler,
        *,
        dead_letter_suffix: str = ".dlq",
        max_attempts: int = 3,
        retry_backoff_seconds: float = 0.2,
        batch_size: int = 500,
        group: str | None = None,
    ) -> None:
        """`group`: the consumer's group, to show its partitions' lag (`contacts_consumer_lag`)."""
        self._consumer = consumer
        self._guard = GuardedHandler(
            publisher,
            handler,
            dead_letter_suffix=dead_letter_suffix,
            max_attempts=max_attempts,
            retry_backoff_seconds=retry_backoff_seconds,
        )
        self._batch_size = batch_size
        self._lags = PartitionLags(group) if group is not None else None

    def stop(self) -> None:
        """Finish the batch in hand, commit, and return from `run`."""
        self._guard.stopping.set()

    async def run(self) -> None:
        try:
            while not self._guard.stopping.is_set():
                await self._poll()
                await self._show_lag()
        finally:
            if self._lags is not None:
                self._lags.clear()  # the partitions are released, another process shows them

    async def _poll(self) -> None:
        batches = await self._consumer.getmany(timeout_ms=500, max_records=self._batch_size)
        if not batches:
            return
        # Partitions are independent (one aggregate's records share one): their batches are
        # handled side by side, so one's round trips overlap another's.
        await asyncio.gather(*(self._guard.handle(records) for records in batches.values()))
        await self._consumer.commit(
            {partition: records[-1].offset + 1 for partition, records in batches.items()}
        )

    async def _show_lag(self) -> None:
        """Show each owned partition's lag: its log end as the last fetch response told it (no
        request of its own) less the consumer's position, which is past every record handled
        and committed."""
        if self._lags is None:
            return
        consumer = self._consumer
        owned = consumer.assignment()
        highwaters = {tp: consumer.highwater(tp) for tp in owned}
        positions = {}
        try:
            # Known at once for a partition fetched from (it has a highwater); bounded anyway.
            async with asyncio.timeout(LAG_POSITION_SECONDS):
                for tp, highwater in highwaters.items():
                    if highwater is not None:
                        positions[tp] = await consumer.position(tp)
        except (TimeoutError, IllegalStateError):
            return  # a rebalance meanwhile: the next poll shows the new assignment
        self._lags.update(owned, partition_lags(owned, highwaters.get, positions))


class SupervisedConsumer:
    """Runs a ConsumerRunner for a consumer group, reconnecting while Kafka is away, so a
    service starts and serves reads before the broker is reachable."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        group_id: str,
        topics: Iterable[str],
        publisher: EventPublisher,
        handler: BatchHandler,
        dead_letter_suffix: str = ".dlq",
        batch_size: int = 500,
        fetch_min_bytes: int = 1,
        fetch_wait_ms: int = 500,
    ) -> None:
        """`fetch_min_bytes`, `fetch_wait_ms`: the broker answers a fetch once it has that
        much, or the wait is over (Kafka's defaults: at once)."""
        self._batch_size = batch_size
        self._fetch = {"fetch_min_bytes": fetch_min_bytes, "fetch_max_wait_ms": fetch_wait_ms}
        self._bootstrap_servers = bootstrap_servers
        self._group_id = group_id
        self._topics = tuple(topics)
        # The dead-letter topics too: a broker that does not create topics on first use
        # would otherwise fail the very write that parks a bad record.
        publisher.topics.need(
            [*self._topics, *(topic + dead_letter_suffix for topic in self._topics)]
        )
        self._publisher = publisher
        self._handler = handler
        self._dead_letter_suffix = dead_letter_suffix
        self._runner: ConsumerRunner | None = None
        self._stopping = asyncio.Event()
        self._part = f"consumer group {group_id}"

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                *self._topics,
                bootstrap_servers=self._bootstrap_servers,
                group_id=self._group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self._fetch,
            )
            try:
                await self._publisher.topics.ensure()
                await consumer.start()
                self._runner = ConsumerRunner(
                    consumer,
                    self._publisher,
                    self._handler,
                    dead_letter_suffix=self._dead_letter_suffix,
                    batch_size=self._batch_size,
                    group=self._group_id,
                )
                if self._stopping.is_set():
                    return
                backoff = 0.5
                OUTAGES.over(self._part)
                await self._runner.run()
            except Exception as exc:  # noqa: BLE001 - broker away: reconnect with backoff
                if is_outage(exc):
                    OUTAGES.waiting(self._part)
                if not isinstance(exc, TopicsNotReady):  # the gate said why, once
                    log.warning(
                        "consumer failed, reconnecting",
                        extra={"group": self._group_id, "error": repr(exc)},
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                await consumer.stop()

    def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            self._runner.stop()


def service_consumer(
    settings: ServiceSettings,
    publisher: EventPublisher,
    group: str,
    topic: str,
    handler: BatchHandler,
    *,
    projection: bool = False,
) -> SupervisedConsumer:
    """A service's consumer of `topic` in `group`, as every service runs them: polls of
    `consumer_batch_records`, dead letters beside the topic, outages waited out; a
    `projection` that may lag fetches in larger batches (`projection_fetch_*`)."""
    fetch = (
        {
            "fetch_min_bytes": settings.projection_fetch_min_bytes,
            "fetch_wait_ms": settings.projection_fetch_wait_ms,
        }
        if projection
        else {}
    )
    return SupervisedConsumer(
        settings.kafka_bootstrap_servers,
        group_id=group,
        topics=[topic],
        publisher=publisher,
        handler=handler,
        dead_letter_suffix=settings.dead_letter_suffix,
        batch_size=settings.consumer_batch_records,
        **fetch,
    )
