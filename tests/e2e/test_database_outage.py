"""contact-svc while its database is away: not ready, 503 problems instead of 500s, and back by
itself when the database returns, with every webhook record it accepted and every command that
arrived meanwhile applied (none dead-lettered). The database goes away in two ways, leaving the
shared test servers running for everyone else: the connection to the MongoDB server is cut
(a TCP proxy, any server); and, on the local stack, PostgreSQL vanishes behind a FerretDB of the
test's own that stays up, then that FerretDB is killed with SIGKILL, and both come back."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contacts_devstack.documentdb import ferretdb_process
from contacts_devstack.processes import StackConfig, free_port, port_open
from contacts_devstack.stack import start_infrastructure
from contacts_shared.commands import UpsertContact

pytestmark = pytest.mark.integration

BATCHES, PER_BATCH = 10, 100  # accepted through the webhook before the outage
DURING = 100  # commands put on the topic at each step of the outage


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


class PrivateFerretDB:
    """A FerretDB of the test's own, for the local stack's PostgreSQL reached through a
    cuttable proxy: PostgreSQL can vanish behind it, and it can be killed and started again."""

    def __init__(self, home: Path) -> None:
        cfg = StackConfig()
        start_infrastructure(cfg)  # the local stack's PostgreSQL, whatever server the suite uses
        self.postgres = CuttableProxy(cfg.host, cfg.postgres_port)
        self.postgres.start()
        self.port = free_port()
        own = replace(cfg, mongo_port=self.port, postgres_port=self.postgres.port)
        self._command = ferretdb_process(own, home / "state").command
        self._log = home / "ferretdb.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.url = f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", self.port):
            assert self._process.poll() is None, "FerretDB exited at start"
            assert time.monotonic() < deadline, "FerretDB never listened"
            time.sleep(0.1)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)


@dataclass(frozen=True)
class Outage:
    """Where contact-svc finds its database, the steps that take it away, those that restore it."""

    mongodb_url: str
    steps: Sequence[Callable[[], None]]
    restore: Sequence[Callable[[], None]]


@pytest.fixture(params=["connection cut", "postgresql gone then ferretdb killed"])
def database_outage(
    request: pytest.FixtureRequest, infrastructure: Any, tmp_path: Path
) -> Iterator[Outage]:
    if request.param == "connection cut":
        mongo = urlparse(infrastructure.mongodb_url)
        proxy = CuttableProxy(mongo.hostname or "127.0.0.1", mongo.port or 27017)
        proxy.start()
        yield Outage(f"mongodb://127.0.0.1:{proxy.port}/", [proxy.cut], [proxy.start])
        proxy.close()
        return
    ferretdb = PrivateFerretDB(tmp_path / "ferretdb")
    ferretdb.start()
    yield Outage(
        ferretdb.url,
        [ferretdb.postgres.cut, ferretdb.kill],
        [ferretdb.postgres.start, ferretdb.start],
    )
    ferretdb.kill()
    ferretdb.postgres.close()


async def test_an_outage_answers_503_and_loses_nothing(
    infrastructure: Any,
    unique: str,
    service_process: Any,
    send_webhook: Any,
    dead_letters: Any,
    database_outage: Outage,
) -> None:
    """Webhooks accepted; then each step of the outage in turn, checking contact-svc is not
    ready and answers 503 after it, and putting commands on the topic for its consumer to meet
    the outage; then the restore steps, and every contact applied and counted, none parked."""
    commands_topic = f"contacts.commands.outage.{unique}"
    account = f"acct-{unique}"
    env = {
        "CONTACTS_ENVIRONMENT": "test",
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap_servers,
        "CONTACTS_TOPIC_PROFILES_EVENTS": f"profiles.events.outage.{unique}",
        "CONTACTS_TOPIC_CONTACTS_EVENTS": f"contacts.events.outage.{unique}",
        "CONTACTS_TOPIC_CONTACTS_COMMANDS": commands_topic,
        "CONTACTS_API_KEYS": f"outage-key={account}",
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
            "CONTACTS_MONGODB_URL": database_outage.mongodb_url,
            "CONTACTS_MONGODB_DATABASE": f"contact_svc_outage_{unique}",
            "CONTACTS_PROFILE_EVENTS_GROUP": f"schemas-{unique}",
            "CONTACTS_CONTACT_COMMANDS_GROUP": f"commands-{unique}",
            "CONTACTS_CONTACT_EVENTS_GROUP": f"contact-events-{unique}",
        },
    )
    profile_svc.start()
    contact_svc.start()
    auth = {"Authorization": "Bearer outage-key"}
    commands = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap_servers)
    await commands.start()
    try:
        async with httpx.AsyncClient(headers=auth, timeout=30) as api:
            profile = (
                await api.post(f"{profile_svc.url}/v1/profiles", json={"name": "Outage"})
            ).json()
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

            for number, step in enumerate(database_outage.steps):
                step()
                deadline = time.monotonic() + 15
                while (ready := await api.get(f"{contact_svc.url}/readyz")).status_code != 503:
                    assert time.monotonic() < deadline, f"still ready after step {number}"
                    await asyncio.sleep(0.2)
                assert "mongodb" in ready.text
                listing = await api.get(base)
                assert listing.status_code == 503, listing.text
                assert listing.headers["content-type"].startswith("application/problem+json")
                assert listing.headers["retry-after"]
                for i in range(DURING):
                    command = UpsertContact(
                        command_id=str(uuid.uuid4()),
                        account_id=account,
                        profile_id=profile["id"],
                        key=f"d{number}-{i}@outage.example",
                        values={"email": f"d{number}-{i}@outage.example"},
                        source="test",
                        received_at=datetime.now(UTC),
                    )
                    await commands.send_and_wait(
                        commands_topic,
                        command.model_dump_json().encode(),
                        key=command.partition_key.encode(),
                    )
                await asyncio.sleep(6)  # past the driver's server selection timeout

            for step in database_outage.restore:
                step()
            expected = BATCHES * PER_BATCH + DURING * len(database_outage.steps)
            deadline = time.monotonic() + 60
            while (await api.get(f"{contact_svc.url}/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "never ready again"
                await asyncio.sleep(0.5)
            stats_url = f"{contact_svc.url}/v1/profiles/{profile['id']}/stats"
            while (total := (await api.get(stats_url)).json()["total"]) < expected:
                assert time.monotonic() < deadline, f"{total} of {expected} applied"
                await asyncio.sleep(0.5)
        assert total == expected  # counted from their events: applied and published
    finally:
        await commands.stop()

    parked = await dead_letters(infrastructure.kafka_bootstrap_servers, [f"{commands_topic}.dlq"])
    assert not any(parked.values()), f"records dead-lettered during the outage: {parked}"
    # An outage is waited out, never counted as the records' failure (which ends in parking).
    failures = [
        line for line in contact_svc.log_path.read_text().splitlines() if "handler failed" in line
    ]
    assert not failures, failures[:3]
