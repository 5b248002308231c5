"""Session fixtures shared by every test suite: the real Kafka and MongoDB-protocol server.

Where they come from, in order: addresses in the environment (CONTACTS_KAFKA_BOOTSTRAP_SERVERS
and CONTACTS_MONGODB_URL); else testcontainers where a Docker engine answers; else the project's
own local stack (Kafka from Maven Central, FerretDB v2 on PostgreSQL with DocumentDB), installed
and started on first use.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from cloudevents.core.bindings.common import CONTENT_TYPE_HEADER
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo import MongoClient
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from contacts_shared import tracing
from contacts_shared.events import EventEnvelope
from contacts_shared.kafka import Record


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap_servers: str
    mongodb_url: str


def _docker_engine_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "no"
        return False
    return True


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    kafka = os.environ.get("CONTACTS_KAFKA_BOOTSTRAP_SERVERS")
    mongo = os.environ.get("CONTACTS_MONGODB_URL")
    if kafka and mongo:
        yield Infrastructure(kafka, mongo)
        return
    if _docker_engine_available():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.mongodb import MongoDbContainer

        with ExitStack() as stack:
            kafka_container = stack.enter_context(KafkaContainer().with_kraft())
            mongo_container = stack.enter_context(MongoDbContainer("mongo:7"))
            yield Infrastructure(
                kafka_container.get_bootstrap_server(), mongo_container.get_connection_url()
            )
        return
    from contacts_devstack.stack import StackConfig, start_infrastructure

    cfg = StackConfig()
    start_infrastructure(cfg)
    yield Infrastructure(cfg.kafka_bootstrap, cfg.mongodb_url)


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Iterator[str]:
    """A short id that keeps a test's accounts, databases and topics apart from others'.
    After a test that used the real servers, the databases and topics named with it are
    dropped, so runs against a long-lived local stack do not pile them up."""
    suffix = uuid.uuid4().hex[:12]
    yield suffix
    if "infrastructure" not in request.fixturenames:
        return
    infrastructure = request.getfixturevalue("infrastructure")
    with MongoClient(infrastructure.mongodb_url, serverSelectionTimeoutMS=5000) as client:
        for name in client.list_database_names():
            if name.endswith(suffix):
                client.drop_database(name)
    asyncio.run(_delete_topics(infrastructure.kafka_bootstrap_servers, suffix))


async def _delete_topics(bootstrap_servers: str, containing: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if containing in name]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


T = TypeVar("T")


async def _read_topic(
    bootstrap_servers: str,
    topic: str,
    parse: Callable[[Record], T],
    until: Callable[[list[T]], bool],
    timeout: float,
) -> list[T]:
    """A topic's records from the beginning, each as `parse` reads it, until `until(read)`
    holds or `timeout` passes."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    read: list[T] = []
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not until(read) and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                read.extend(parse(r) for r in records)
    finally:
        await consumer.stop()
    return read


EnvelopeReader = Callable[..., Awaitable[list[EventEnvelope]]]


@pytest.fixture
def read_envelopes(infrastructure: Infrastructure) -> EnvelopeReader:
    """Reads a topic from the beginning until `until(envelopes)` holds or `timeout` passes."""

    async def read(
        topic: str, *, until: Callable[[list[EventEnvelope]], bool], timeout: float = 30.0
    ) -> list[EventEnvelope]:
        return await _read_topic(
            infrastructure.kafka_bootstrap_servers,
            topic,
            lambda record: EventEnvelope.model_validate_json(record.value),
            until,
            timeout,
        )

    return read


RecordReader = Callable[..., Awaitable[list[Record]]]


@pytest.fixture
def read_records(infrastructure: Infrastructure) -> RecordReader:
    """Reads a topic's records as sent (headers too) from the beginning until `until(records)`
    holds or `timeout` passes."""

    async def read(
        topic: str, *, until: Callable[[list[Record]], bool], timeout: float = 30.0
    ) -> list[Record]:
        return await _read_topic(
            infrastructure.kafka_bootstrap_servers, topic, lambda record: record, until, timeout
        )

    return read


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process for the test (`contacts_shared.tracing`), every span ended
    kept in memory; off again after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


@dataclass(frozen=True)
class SdkRecord:
    """A record as a consumer on the official CloudEvents SDK reads it: its `content-type`
    header and, if that says structured mode, the event's attributes (the record key among them
    as `partitionkey`) and its `data`; else None."""

    content_type: str | None
    event: dict[str, Any] | None


def _sdk_record(record: Record) -> SdkRecord:
    headers = dict(record.headers)
    content_type = headers[CONTENT_TYPE_HEADER].decode() if CONTENT_TYPE_HEADER in headers else None
    if content_type != JSONFormat.CONTENT_TYPE:
        return SdkRecord(content_type, None)
    event = from_structured(KafkaMessage(headers, record.key, record.value), JSONFormat())
    return SdkRecord(content_type, {**event.get_attributes(), "data": event.get_data()})


SdkReader = Callable[..., Awaitable[list[SdkRecord]]]


@pytest.fixture
def read_cloud_events(infrastructure: Infrastructure) -> SdkReader:
    """Reads a topic from the beginning with the official CloudEvents SDK (`SdkRecord`) until
    `count` records are read or `timeout` passes."""

    async def read(topic: str, *, count: int, timeout: float = 30.0) -> list[SdkRecord]:
        return await _read_topic(
            infrastructure.kafka_bootstrap_servers,
            topic,
            _sdk_record,
            lambda found: len(found) >= count,
            timeout,
        )

    return read


class MongoQueries(CommandListener):
    """The queries (`find` and `aggregate` commands) a client sends, each kept whole as it
    started, in `sent`: to count, or to explain."""

    QUERIES = frozenset({"find", "aggregate"})

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name in self.QUERIES:
            self.sent.append(dict(event.command))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def collections(self) -> list[str]:
        """The collection each query read, in the order sent (a command's name comes first,
        naming it)."""
        return [next(iter(command.values())) for command in self.sent]


@pytest.fixture
def mongo_queries() -> MongoQueries:
    """A recorder of the queries a client sends: give it to the client among its
    `event_listeners`."""
    return MongoQueries()


def plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of a query plan: PostgreSQL's JSON plan as FerretDB's explain returns it, or
    MongoDB's stages (its winning plan)."""
    if isinstance(plan, list):
        for item in plan:
            yield from plan_nodes(item)
    elif isinstance(plan, dict):
        if "Node Type" in plan or "stage" in plan:
            yield plan
        for key, value in plan.items():
            if key != "rejectedPlans":
                yield from plan_nodes(value)


# What of a recorded query is explained: the rest (session, cluster time...) is the client's.
EXPLAINED = frozenset(
    {"find", "filter", "projection", "sort", "hint", "limit", "aggregate", "pipeline", "cursor"}
)
IndexesRead = Callable[[Any, Mapping[str, Any]], Awaitable[set[str]]]


@pytest.fixture
def indexes_read() -> IndexesRead:
    """Explains a recorded query (`MongoQueries.sent`) on a database and answers the indexes its
    plan reads; fails the test if the plan reads none, or scans a whole collection."""

    async def read(database: Any, command: Mapping[str, Any]) -> set[str]:
        # In the command's own order: its name comes first.
        query = {k: v for k, v in command.items() if k in EXPLAINED}
        plan = await database.command("explain", query)
        nodes = list(plan_nodes(plan))
        used = {str(i) for n in nodes if (i := n.get("Index Name") or n.get("indexName"))}
        scans = [
            n for n in nodes if n.get("Node Type") == "Seq Scan" or n.get("stage") == "COLLSCAN"
        ]
        assert used and not scans, (command, plan)
        return used

    return read
