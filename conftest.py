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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import MongoClient

from contacts_shared.events import EventEnvelope


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


EnvelopeReader = Callable[..., Awaitable[list[EventEnvelope]]]


@pytest.fixture
def read_envelopes(infrastructure: Infrastructure) -> EnvelopeReader:
    """Reads a topic from the beginning until `until(envelopes)` holds or `timeout` passes."""

    async def read(
        topic: str, *, until: Callable[[list[EventEnvelope]], bool], timeout: float = 30.0
    ) -> list[EventEnvelope]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=infrastructure.kafka_bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        envelopes: list[EventEnvelope] = []
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while not until(envelopes) and asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    envelopes.extend(EventEnvelope.model_validate_json(r.value) for r in records)
        finally:
            await consumer.stop()
        return envelopes

    return read
