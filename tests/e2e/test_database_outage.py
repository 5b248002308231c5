"""contact-svc while its MongoDB server is away: not ready, 503 problems instead of 500s, and
back by itself when the server returns, with every webhook record it accepted applied (none
dead-lettered). The server "goes away" behind a TCP proxy that the test cuts and restores, so
the shared test server keeps running for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

pytestmark = pytest.mark.integration

BATCHES, PER_BATCH = 10, 100


class CuttableProxy:
    """Forwards a local port to `upstream` from a thread of its own (the services start
    synchronously); `cut` closes the port and every connection through it."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0  # chosen by the system at the first start, kept after
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        self._writers |= {client_w, server_w}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        self._writers -= {client_w, server_w}


@pytest.fixture
def mongo_proxy(infrastructure: Any) -> Iterator[CuttableProxy]:
    mongo = urlparse(infrastructure.mongodb_url)
    proxy = CuttableProxy(mongo.hostname or "127.0.0.1", mongo.port or 27017)
    proxy.start()
    yield proxy
    proxy.close()


async def test_an_outage_answers_503_and_loses_no_accepted_webhook(
    infrastructure: Any,
    unique: str,
    service_process: Any,
    mongo_proxy: CuttableProxy,
    send_webhook: Any,
) -> None:
    proxy = mongo_proxy
    commands_topic = f"contacts.commands.outage.{unique}"
    env = {
        "CONTACTS_ENVIRONMENT": "test",
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap_servers,
        "CONTACTS_TOPIC_PROFILES_EVENTS": f"profiles.events.outage.{unique}",
        "CONTACTS_TOPIC_CONTACTS_EVENTS": f"contacts.events.outage.{unique}",
        "CONTACTS_TOPIC_CONTACTS_COMMANDS": commands_topic,
        "CONTACTS_API_KEYS": f"outage-key=acct-{unique}",
    }
    profile_svc = service_process(
        "profile_svc.app:create_app",
        {
            **env,
            "CONTACTS_MONGODB_URL": infrastructure.mongodb_url,
            "CONTACTS_MONGODB_DATABASE": f"profile_svc_outage_{unique}",
        },
    )
    contact_svc = service_process(
        "contact_svc.app:create_app",
        {
            **env,
            "CONTACTS_MONGODB_URL": f"mongodb://127.0.0.1:{proxy.port}/",
            "CONTACTS_MONGODB_DATABASE": f"contact_svc_outage_{unique}",
            "CONTACTS_PROFILE_EVENTS_GROUP": f"schemas-{unique}",
            "CONTACTS_CONTACT_COMMANDS_GROUP": f"commands-{unique}",
            "CONTACTS_SUPPRESSIONS_GROUP": f"suppressions-{unique}",
            "CONTACTS_STATS_GROUP": f"stats-{unique}",
        },
    )
    profile_svc.start()
    contact_svc.start()
    auth = {"Authorization": "Bearer outage-key"}
    async with httpx.AsyncClient(headers=auth, timeout=30) as api:
        profile = (await api.post(f"{profile_svc.url}/v1/profiles", json={"name": "Outage"})).json()
        base = f"{contact_svc.url}/v1/profiles/{profile['id']}/contacts"
        deadline = time.monotonic() + 30
        while (await api.get(base)).status_code == 404:
            assert time.monotonic() < deadline, "contact-svc never learnt of the profile"
            await asyncio.sleep(0.1)
        source = (
            await api.post(
                f"{contact_svc.url}/v1/webhook-sources",
                json={"profile_id": profile["id"], "mapping": {"email": "email"}},
            )
        ).json()
        for batch in range(BATCHES):
            records: list[dict[str, object]] = [
                {"email": f"o{batch}-{i}@outage.example"} for i in range(PER_BATCH)
            ]
            accepted = await send_webhook(
                api, f"{contact_svc.url}{source['endpoint']}", source["secret"], records
            )
            assert accepted.status_code == 202, accepted.text

        proxy.cut()
        ready = await api.get(f"{contact_svc.url}/readyz")
        assert ready.status_code == 503 and "mongodb" in ready.text
        listing = await api.get(base)
        assert listing.status_code == 503, listing.text
        assert listing.headers["content-type"].startswith("application/problem+json")
        assert listing.headers["retry-after"]
        await asyncio.sleep(6)  # past the driver's server selection timeout, consumers waiting

        proxy.start()
        deadline = time.monotonic() + 60
        while (await api.get(f"{contact_svc.url}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "never ready again"
            await asyncio.sleep(0.5)
        stats_url = f"{contact_svc.url}/v1/profiles/{profile['id']}/stats"
        while (total := (await api.get(stats_url)).json()["total"]) < BATCHES * PER_BATCH:
            assert time.monotonic() < deadline, f"{total} of {BATCHES * PER_BATCH} applied"
            await asyncio.sleep(0.5)
    assert total == BATCHES * PER_BATCH  # counted from their events: applied and published

    dead_letters = AIOKafkaConsumer(
        f"{commands_topic}.dlq",
        bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await dead_letters.start()
    try:
        parked = await dead_letters.getmany(timeout_ms=2000)
    finally:
        await dead_letters.stop()
    assert not any(parked.values()), "records dead-lettered during the outage"
