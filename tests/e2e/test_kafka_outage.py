"""contact-svc while Kafka is away, under a webhook load (issue 19): the broker is killed with
SIGKILL and started again on its own data, and meanwhile every webhook is answered 202 or 503
(problem+json, Retry-After) within the request deadline, never 500, never left hanging; readiness
stays 200, as reads keep being served (issue 23: Kafka is not in an API's readiness once its
topics were verified at start); 202s resume with no service restarted; every record of a delivery
answered 202 is stored exactly once. The broker is a private one of the test's own, started with
devstack's functions on free ports under the test's tmp dir: the shared broker is never touched."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contacts_devstack.processes import StackConfig, free_port, port_open
from contacts_devstack.stack import (
    format_kafka_storage,
    install_kafka,
    java_command,
    kafka_properties,
)

pytestmark = pytest.mark.integration

DEADLINE = 10.0  # CONTACTS_REQUEST_DEADLINE_SECONDS of the services under test
ANSWER_MARGIN = 2.0  # an answer may come this long after the deadline (scheduling, transfer)
CLIENT_TIMEOUT = DEADLINE + 10.0  # a client giving up this late means the service hung
SENDERS, PER_BATCH = 4, 50
# Between one sender's deliveries: 4 senders stay under the 5,000 records a second a source may
# send (CONTACTS_WEBHOOK_RECORDS_PER_SECOND, default), so no answer is a rate limit's 429.
SENDER_PAUSE = 0.05
LOAD_BEFORE, ACCEPTED_BEFORE = 3.0, 20  # seconds of load, and 202s, before the broker is killed
# From the kill to the restart, deliveries going on all along. The broker then takes some 14 s
# more to listen: JVM start, and KRaft refuses its registration (DUPLICATE_BROKER_REGISTRATION)
# until the killed incarnation's session expires (broker.session.timeout.ms, 9 s).
OUTAGE_SECONDS = 18.0
ACCEPTED_AFTER = 20  # deliveries sent after the restart and answered 202 before the load stops
READINESS_POLL = 0.5  # seconds between two reads of contact-svc's /readyz while under load


class PrivateKafka:
    """A single-node KRaft broker of the test's own: devstack's server properties, storage
    format and java command for a config homed in `home` on free ports, run with the main
    stack's jars (linked in as the private home's `kafka/libs`). Killed with SIGKILL, it is
    started again with the same ports and data directory, and recovers from its log."""

    def __init__(self, home: Path) -> None:
        main = StackConfig()
        install_kafka(main)  # the jars, unless the main stack has resolved them already
        controller_port = free_port()
        kafka_port = free_port()
        while kafka_port == controller_port:
            kafka_port = free_port()
        self.cfg = replace(
            main,
            home=home,
            kafka_port=kafka_port,
            controller_port=controller_port,
            kafka_heap="512m",
        )
        (home / "kafka").mkdir(parents=True)
        self.cfg.kafka_libs.symlink_to(main.kafka_libs, target_is_directory=True)
        properties = kafka_properties(self.cfg)
        format_kafka_storage(self.cfg, properties)
        self._command = java_command(self.cfg, "kafka.Kafka", str(properties))
        self.log_path = home / "kafka.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.cfg.kafka_bootstrap

    def launch(self) -> None:
        """Start the broker process; `listening` and `writable` wait for it."""
        assert self._process is None or self._process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    async def listening(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(self.cfg.host, self.cfg.kafka_port):
            self._assert_alive()
            assert time.monotonic() < deadline, f"private Kafka never listened: {self._tail()}"
            await asyncio.sleep(0.1)

    async def writable(self, timeout: float = 90.0) -> None:
        """Wait until a producer's record is acknowledged (the broker elected itself leader)."""
        await self.listening(timeout)
        deadline = time.monotonic() + timeout
        while True:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            try:
                await producer.start()
                await producer.send_and_wait("private-kafka-probe", b"probe")
                return
            except KafkaError:
                self._assert_alive()
                assert time.monotonic() < deadline, (
                    f"private Kafka never took a record: {self._tail()}"
                )
                await asyncio.sleep(0.5)
            finally:
                await producer.stop()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no flush beyond what the broker already wrote."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)

    def _assert_alive(self) -> None:
        assert self._process is not None and self._process.poll() is None, (
            f"private Kafka exited: {self._tail()}"
        )

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path / "kafka-home")
    try:
        yield kafka
    finally:
        kafka.kill()


async def test_kafka_killed_under_load_answers_503_in_time_and_loses_nothing(
    platform_env: Any,
    service_process: Any,
    profile_known_to_contacts: Any,
    webhook_source: Callable[
        [httpx.AsyncClient, str, str], Awaitable[Any]
    ],  # makes a WebhookSource
    webhook_load: Callable[..., Any],  # conftest: WebhookLoad (the class)
    readiness_watch: Callable[..., AbstractAsyncContextManager[list[Any]]],
    stored_keys: Callable[[httpx.AsyncClient, str], Awaitable[dict[str, int]]],
    dead_letters: Callable[[str, list[str]], Awaitable[dict[str, list[str]]]],
    private_kafka: PrivateKafka,
) -> None:
    private_kafka.launch()
    await private_kafka.writable()
    on_private = {
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": private_kafka.bootstrap,
        "CONTACTS_REQUEST_DEADLINE_SECONDS": str(DEADLINE),
    }
    settings = platform_env("kafkaout")  # the suite's MongoDB, topics and groups of this test
    profile_svc = service_process(
        "profile_svc.app:create_app", {**settings["profile"], **on_private}
    )
    contact_svc = service_process(
        "contact_svc.app:create_app", {**settings["contact"], **on_private}
    )
    profile_svc.start()
    contact_svc.start()

    auth = {"Authorization": "Bearer kafkaout-key"}
    async with (
        httpx.AsyncClient(headers=auth, timeout=30) as api,
        httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as stores,
    ):
        profile = await profile_known_to_contacts(
            api, profile_svc.url, contact_svc.url, {"name": "Kafka outage"}
        )
        source = await webhook_source(api, contact_svc.url, profile["id"])
        load = webhook_load(
            stores, source, SENDERS, PER_BATCH, SENDER_PAUSE, "kafka-outage.example"
        )
        answers = load.answers
        watch = readiness_watch(api, {"contact-svc": contact_svc}, poll=READINESS_POLL)
        async with watch as readiness:  # from the load's start to its end
            began = time.monotonic()
            load.start()
            try:
                await load.wait_accepted(
                    ACCEPTED_BEFORE, began, 60, "no load before the outage", lasting=LOAD_BEFORE
                )
                private_kafka.kill()
                killed = time.monotonic()
                await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself, deliveries going on
                read_during_outage = await api.get(
                    f"{contact_svc.url}/v1/profiles/{profile['id']}/contacts"
                )
                private_kafka.launch()
                relaunched = time.monotonic()
                await private_kafka.listening()
                listening = time.monotonic()
                await load.wait_accepted(
                    ACCEPTED_AFTER,
                    relaunched,
                    90,
                    "webhooks never accepted again after the restart",
                )
            finally:
                await load.stop()
        stopped = time.monotonic()

        # Readiness stayed 200 while the broker was away: the pod serves reads meanwhile.
        away = [(r.at, r.status, r.body) for r in readiness if killed <= r.at <= relaunched]
        assert away, "readiness never asked while Kafka was down"
        not_ready = [each for each in away if each[1] != 200]
        assert not not_ready, f"contact-svc not ready while Kafka was down: {not_ready[:3]}"
        assert read_during_outage.status_code == 200, read_during_outage.text

        # Every delivery answered, in time, 202 or a 503 problem with Retry-After.
        by_status: dict[int | None, int] = {}
        for answer in answers:
            by_status[answer.status] = by_status.get(answer.status, 0) + 1
        slowest = max(answer.elapsed for answer in answers)
        accepted_again = min(
            a.answered for a in answers if a.status == 202 and a.answered >= relaunched
        )
        summary = (
            f"{len(answers)} deliveries by status {by_status}; slowest answer {slowest:.2f}s; "
            f"outage: killed {killed - began:.1f}s into the load, "
            f"relaunched after {relaunched - killed:.1f}s, "
            f"listening after {listening - killed:.1f}s, first 202 again after "
            f"{accepted_again - killed:.1f}s; "
            f"load stopped after {stopped - began:.1f}s"
        )
        print(summary)
        wrong = [a for a in answers if a.status not in (202, 503)]
        assert not wrong, f"{summary}; answers neither 202 nor 503: {wrong[:3]}"
        late = [a for a in answers if a.elapsed > DEADLINE + ANSWER_MARGIN]
        assert not late, f"{summary}; answers past the deadline: {late[:3]}"
        refused = [a for a in answers if a.status == 503]
        for answer in refused:
            assert answer.content_type.startswith("application/problem+json"), answer
            assert answer.retry_after and answer.retry_after.isdigit(), answer
        assert any(killed <= a.started < relaunched for a in refused), (
            f"{summary}; no 503 while Kafka was down: the test missed the outage"
        )
        # No service restarted.
        assert len(load.accepted_since(relaunched)) >= ACCEPTED_AFTER, summary

        # Nothing accepted is lost, nothing stored twice: every record of every delivery
        # answered 202 is listed once (a 503'd delivery's records may or may not be there).
        accepted = {email for a in answers if a.status == 202 for email in a.emails}
        base = f"{contact_svc.url}/v1/profiles/{profile['id']}/contacts"
        stats_url = f"{contact_svc.url}/v1/profiles/{profile['id']}/stats"
        deadline = time.monotonic() + 90
        while True:
            stored = await stored_keys(api, base)
            missing = accepted - stored.keys()
            total = (await api.get(stats_url)).json()["total"]
            if not missing and total == len(stored):
                break
            assert time.monotonic() < deadline, (
                f"{summary}; {len(missing)} of {len(accepted)} accepted contacts missing "
                f"(e.g. {sorted(missing)[:3]}); {len(stored)} stored, statistics count {total}"
            )
            await asyncio.sleep(0.5)
        twice = {key: n for key, n in stored.items() if n != 1}
        assert not twice, f"contacts listed more than once: {list(twice.items())[:3]}"
        sent = {email for a in answers for email in a.emails}
        assert stored.keys() <= sent, f"unexpected contacts: {sorted(stored.keys() - sent)[:3]}"
        print(
            f"{len(accepted)} contacts accepted, {len(stored)} stored "
            f"({len(stored) - len(accepted)} of 503'd deliveries), statistics count {total}"
        )

    # The outage was waited out: no record dead-lettered, no handler failure for it. The
    # dead-letter topics of the three topics contact-svc consumes are every one this broker
    # can hold (profile-svc consumes none), each created when its consumer started.
    consumed = [
        settings["contact"][name]
        for name in (
            "CONTACTS_TOPIC_PROFILES_EVENTS",
            "CONTACTS_TOPIC_CONTACTS_COMMANDS",
            "CONTACTS_TOPIC_CONTACTS_EVENTS",
        )
    ]
    parked = await dead_letters(private_kafka.bootstrap, [topic + ".dlq" for topic in consumed])
    assert not any(parked.values()), f"records dead-lettered during the outage: {parked}"
    failures = [
        line for line in contact_svc.log_path.read_text().splitlines() if "handler failed" in line
    ]
    assert not failures, failures[:3]
