"""PostgreSQL killed under webhook load (issue 19): contact-svc and log-svc keep their databases
on a private PostgreSQL cluster and FerretDB (tests/e2e/conftest.py: `PrivateCluster`, created,
started and started again by devstack's own functions), whose PostgreSQL is killed with SIGKILL
(every process, or the postmaster alone) three times in a row while stores post signed
deliveries, and started again each time by devstack (which checks and repairs the documents
after an unclean stop). Every delivery is answered 202, or 503 problem+json with Retry-After
(once the source's 1 s cache is over, its read fails), within the request deadline, never 500,
never left hanging; readiness goes 503 while PostgreSQL is away; writes resume by themselves
within seconds of each restart and readiness comes back, no service restarted; afterwards
every record of every delivery answered 202 is stored once, the statistics count exactly what
is stored, each contact's audit trail holds its one creation, nothing is dead-lettered and no
handler failed. profile-svc and Kafka are the suite's, with this test's own topics and groups."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from contacts_devstack.recovery import CheckReport

pytestmark = pytest.mark.integration

KILLS = 3
DEADLINE = 10.0  # CONTACTS_REQUEST_DEADLINE_SECONDS of the services under test (the default)
ANSWER_MARGIN = 2.0  # an answer may come this long after the deadline (scheduling, transfer)
CLIENT_TIMEOUT = DEADLINE + 20.0  # a client giving up this late means the service hung
# A MongoDB round trip that takes longer is an outage (default 20 s): below the deadline, so
# a call stuck on a dead server fails, and is answered 503, before the deadline answers for it.
CALL_TIMEOUT = 5.0
# Senders, records in each of their deliveries, and the pause between one sender's deliveries:
# about 1,000 records a second while accepted, below a source's 5,000 (no 429), and about what
# a small machine's stack applies as they come, so each kill meets commands being written.
SENDERS, PER_BATCH, SENDER_PAUSE = 4, 25, 0.05
# Before each kill: this long under load since the last restart, and this many 202s.
LOAD_BEFORE, ACCEPTED_BEFORE = 2.0, 20
# From the kill to the restart, deliveries going on: past the 1 s source cache, so deliveries
# meet the dead database (503) and commands accepted before it wait for it.
OUTAGE_SECONDS = 3.0
# From devstack's start returning to a contact of a delivery accepted after it being readable.
RESUME_WITHIN = 15.0
# From the last restart until contact-svc and log-svc answer /readyz 200 again: every consumer
# and relay retries an outage within 5 s (faults.MAX_OUTAGE_PAUSE_SECONDS), then a pass.
READY_WITHIN = 15.0
READINESS_POLL = 0.25
# After the load, until every accepted contact is stored, counted and in the audit trail. The
# events of writes whose answer a kill cut off wait in their journal for its lease
# (CONTACTS_JOURNAL_LEASE_SECONDS, 30 s, ADR 12) and the relay's next scan: up to a minute.
SETTLE_WITHIN = 120.0
AUDIT_CONCURRENCY = 16


@dataclass(frozen=True)
class Restart:
    """One kill and restart of PostgreSQL, in seconds from the kill (`at`)."""

    at: float  # time.monotonic() of the kill
    check: CheckReport | None  # devstack's check of the documents after the unclean stop
    killing: float  # until every killed process was gone
    restarted: float  # devstack's start returned: PostgreSQL serves, FerretDB listens
    accepted: float  # a delivery sent after the restart answered 202
    readable: float  # a contact of that delivery readable through contact-svc
    refused: int  # deliveries answered 503 from the kill to the first 202 after the restart
    probe: str  # the contact read

    @property
    def resumed_after_restart(self) -> float:
        return self.readable - self.restarted


def ready_again(
    readiness: list[Any],  # conftest: Readiness
    service: str,
    restarted: float,
    until: float = math.inf,
) -> float | None:
    """Seconds from `restarted` to the service's first 200 at or after it, if before `until`."""
    ready = [r.at for r in readiness if r.service == service and r.status == 200]
    first = min((at for at in ready if at >= restarted), default=None)
    return first - restarted if first is not None and first < until else None


async def audit_trails(
    api: httpx.AsyncClient, url: str, keys: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Each key's whole audit trail from log-svc (paged by version), a few at once."""
    limit = asyncio.Semaphore(AUDIT_CONCURRENCY)

    async def trail(key: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        after = 0
        async with limit:
            while True:
                response = await api.get(f"{url}/{key}", params={"after_version": after})
                assert response.status_code == 200, response.text
                page = response.json()
                entries += page["items"]
                if page["next_after_version"] is None:
                    return entries
                after = page["next_after_version"]

    return dict(zip(keys, await asyncio.gather(*(trail(key) for key in keys)), strict=True))


def log_lines(path: Path) -> list[dict[str, Any]]:
    """A service's JSON log lines (uvicorn's few plain ones left out)."""
    lines = []
    for text in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


def waits(lines: list[dict[str, Any]], topic: str) -> int:
    """How many times a consumer of `topic` found the database away and waited for it."""
    return sum(
        1
        for line in lines
        if line.get("message") == "a backing server is away, waiting for it"
        and line.get("topic") == topic
    )


@pytest.mark.parametrize("kill", ["every process", "the postmaster alone"])
async def test_postgres_killed_under_webhook_load_loses_nothing(
    private_cluster: Any,  # conftest: PrivateCluster
    infrastructure: Any,
    unique: str,
    platform_env: Any,
    service_process: Any,
    profile_known_to_contacts: Any,
    readiness_watch: Callable[..., AbstractAsyncContextManager[list[Any]]],
    webhook_source: Callable[
        [httpx.AsyncClient, str, str], Awaitable[Any]
    ],  # makes a WebhookSource
    webhook_load: Callable[..., Any],  # conftest: WebhookLoad (the class)
    stored_keys: Callable[[httpx.AsyncClient, str], Awaitable[dict[str, int]]],
    dead_letters: Callable[[str, list[str]], Awaitable[dict[str, list[str]]]],
    kill: str,
) -> None:
    kill_postgres: Callable[[], None] = {
        "every process": private_cluster.kill_every_process,
        "the postmaster alone": private_cluster.kill_postmaster,
    }[kill]
    assert await asyncio.to_thread(private_cluster.start) is None  # new: nothing to recover

    settings = platform_env("pgcrash")  # the suite's Kafka, topics and groups of this test
    timeouts = {
        "CONTACTS_REQUEST_DEADLINE_SECONDS": str(DEADLINE),
        "CONTACTS_MONGODB_CALL_TIMEOUT_SECONDS": str(CALL_TIMEOUT),
    }
    on_private = {**timeouts, "CONTACTS_MONGODB_URL": private_cluster.mongodb_url}
    profile_svc = service_process("profile_svc.app:create_app", settings["profile"])
    contact_svc = service_process(
        "contact_svc.app:create_app", {**settings["contact"], **on_private}
    )
    log_svc = service_process(
        "log_svc.app:create_app",
        # A group of this test's own (the default is the running stack's log-svc's).
        {**settings["log"], **on_private, "CONTACTS_CONTACTS_EVENTS_GROUP": f"trail-{unique}"},
    )
    for service in (profile_svc, contact_svc, log_svc):
        service.start()
    services = {"contact-svc": contact_svc, "log-svc": log_svc}

    auth = {"Authorization": "Bearer pgcrash-key"}
    async with (
        httpx.AsyncClient(headers=auth, timeout=30) as api,
        httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as stores,
        readiness_watch(api, services, poll=READINESS_POLL) as readiness,
    ):
        profile = await profile_known_to_contacts(
            api, profile_svc.url, contact_svc.url, {"name": "PostgreSQL crash"}
        )
        source = await webhook_source(api, contact_svc.url, profile["id"])
        load = webhook_load(stores, source, SENDERS, PER_BATCH, SENDER_PAUSE, "pg-crash.example")
        base = f"{contact_svc.url}/v1/profiles/{profile['id']}/contacts"
        answers = load.answers

        async def readable(email: str, timeout: float) -> None:
            """Until contact-svc reads the contact (404 or 503 meanwhile)."""
            deadline = time.monotonic() + timeout
            while (found := await api.get(f"{base}/{email}")).status_code != 200:
                assert found.status_code in (404, 503), found.text
                assert time.monotonic() < deadline, f"{email} not readable within {timeout:.0f}s"
                await asyncio.sleep(0.05)

        restarts: list[Restart] = []
        began = time.monotonic()
        load.start()
        try:
            since = began
            for _ in range(KILLS):
                await load.wait_accepted(
                    ACCEPTED_BEFORE, since, 60, "no load before the kill", lasting=LOAD_BEFORE
                )
                killed = time.monotonic()
                await asyncio.to_thread(kill_postgres)
                gone = time.monotonic()
                await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself, deliveries going on
                check = await asyncio.to_thread(private_cluster.start)
                since = time.monotonic()
                assert check is not None, "devstack did not notice the unclean stop"
                assert private_cluster.postgres_running(), "PostgreSQL is not running"
                resumed = await load.wait_accepted(
                    1, since, RESUME_WITHIN, "no webhook accepted after the restart"
                )
                first = min(resumed, key=lambda a: a.answered)
                await readable(first.emails[0], RESUME_WITHIN)
                restarts.append(
                    Restart(
                        killed,
                        check,
                        gone - killed,
                        since - killed,
                        first.answered - killed,
                        time.monotonic() - killed,
                        sum(
                            1
                            for a in answers
                            if a.status == 503 and killed <= a.answered <= first.answered
                        ),
                        first.emails[0],
                    )
                )
        finally:
            await load.stop()
        stopped = time.monotonic()
        last_restart = restarts[-1].at + restarts[-1].restarted

        # Every delivery answered, in time, 202 or a 503 problem with Retry-After.
        by_status = Counter(a.status for a in answers)
        slowest = max(a.elapsed for a in answers)
        accepted = {email for a in answers if a.status == 202 for email in a.emails}
        sent = {email for a in answers for email in a.emails}
        figures = [
            f"PostgreSQL killed ({kill}) {KILLS} times under {stopped - began:.0f}s of webhook "
            f"load: {len(answers)} deliveries of {PER_BATCH} records, by status "
            f"{dict(by_status)}, slowest answer {slowest:.2f}s",
            *(
                f"  kill {n}: gone in {r.killing:.2f}s; devstack's start returned after "
                f"{r.restarted:.1f}s ("
                + (
                    f"check of {r.check.relations} relations in {r.check.seconds:.1f}s, "
                    f"{len(r.check.damaged)} damaged"
                    if r.check
                    else "no check"
                )
                + f"); 202 again {r.accepted - r.restarted:.1f}s and a new contact readable "
                f"{r.resumed_after_restart:.1f}s after the restart; {r.refused} answered 503"
                for n, r in enumerate(restarts, 1)
            ),
        ]
        summary = "\n".join(figures)
        print(summary)
        for r in restarts:
            assert r.check is not None and r.check.relations > 0, summary
        wrong = [a for a in answers if a.status not in (202, 503)]
        assert not wrong, f"{summary}\nanswers neither 202 nor 503: {wrong[:3]}"
        late = [a for a in answers if a.elapsed > DEADLINE + ANSWER_MARGIN]
        assert not late, f"{summary}\nanswers past the deadline: {late[:3]}"
        for answer in (a for a in answers if a.status == 503):
            assert answer.content_type.startswith("application/problem+json"), answer
            assert answer.retry_after and answer.retry_after.isdigit(), answer
        assert all(r.refused for r in restarts), f"{summary}\na kill met no delivery: missed"

        # Nothing accepted is lost, nothing stored twice: every record of every delivery
        # answered 202 is listed once (a 503'd delivery's records may or may not be there),
        # and the statistics count exactly what is stored, all active.
        stats_url = f"{contact_svc.url}/v1/profiles/{profile['id']}/stats"
        settled_by = stopped + SETTLE_WITHIN
        complete: float | None = None  # when every accepted contact was listed
        while True:
            stored = await stored_keys(api, base)
            missing = accepted - stored.keys()
            if not missing and complete is None:
                complete = time.monotonic()
            read = await api.get(stats_url)
            assert read.status_code == 200, read.text
            stats = read.json()
            counts = {status: n for status, n in stats["by_status"].items() if n}
            if not missing and stats["total"] == len(stored) and counts == {"active": len(stored)}:
                break
            assert time.monotonic() < settled_by, (
                f"{summary}\n{len(missing)} of {len(accepted)} accepted contacts missing "
                f"(e.g. {sorted(missing)[:3]}); {len(stored)} stored, statistics {stats}"
            )
            await asyncio.sleep(0.5)
        counted = time.monotonic()
        assert complete is not None
        twice = {key: n for key, n in stored.items() if n != 1}
        assert not twice, f"contacts listed more than once: {list(twice.items())[:3]}"
        assert stored.keys() <= sent, f"unexpected contacts: {sorted(stored.keys() - sent)[:3]}"
        assert stats["added_last_7_days"] == stats["added_last_30_days"] == len(stored), stats

        # The audit trail of a contact of every delivery answered 202 (drawn at random), and of
        # each one read to time a restart: its creation, once. log-svc keeps one entry per
        # contact version, so a redelivered or twice-published event writes the same one; a
        # second entry would be a second write of the contact.
        trail_url = f"{log_svc.url}/v1/logs/contacts/{profile['id']}"
        draw = random.Random(unique)
        sample = {draw.choice(a.emails) for a in answers if a.status == 202}
        checked = sorted(sample | {r.probe for r in restarts})
        keys = checked
        expected = {
            "version": 1,
            "change": "created",
            "source": f"webhook:{source.id}",
            "status": "active",
            "fields": ["email"],
        }
        while True:
            trails = await audit_trails(api, trail_url, keys)
            wrong_trails = {
                key: entries
                for key, entries in trails.items()
                if [{name: e.get(name) for name in expected} for e in entries] != [expected]
            }
            if not wrong_trails:
                break
            # Entries arrive as log-svc catches up: too few may fill in, never too many.
            too_many = {key: e for key, e in wrong_trails.items() if len(e) > 1}
            assert not too_many, f"audit trails with more than one entry: {too_many}"
            assert time.monotonic() < settled_by, (
                f"{summary}\n{len(wrong_trails)} of {len(keys)} audit trails not their one "
                f"creation, e.g. {list(wrong_trails.items())[:3]}"
            )
            keys = sorted(wrong_trails)
            await asyncio.sleep(0.5)
        print(
            f"  {len(accepted)} contacts accepted, {len(stored)} stored "
            f"({len(stored) - len(accepted)} of 503'd deliveries), statistics total "
            f"{stats['total']}, {len(checked)} audit trails of one creation; after the last "
            f"restart, all stored {complete - last_restart:.1f}s, counted "
            f"{counted - last_restart:.1f}s, in the trails {time.monotonic() - last_restart:.1f}s "
            f"(the load stopped {stopped - last_restart:.1f}s)"
        )

        # Readiness went 503 while PostgreSQL was away, and comes back by itself.
        while time.monotonic() < last_restart + READY_WITHIN and not all(
            ready_again(readiness, name, last_restart) is not None for name in services
        ):
            await asyncio.sleep(READINESS_POLL)
        kills_at = [r.at for r in restarts]
        for n, (r, until) in enumerate(zip(restarts, [*kills_at[1:], math.inf], strict=True), 1):
            ready = {
                name: ready_again(readiness, name, r.at + r.restarted, until) for name in services
            }
            print(
                f"  kill {n}: ready again "
                + ", ".join(
                    f"{name} {after:.1f}s after the restart"
                    if after is not None
                    else f"{name} not before the next kill"
                    for name, after in ready.items()
                )
            )
            for name in services:
                away = [
                    each
                    for each in readiness
                    if each.service == name and r.at <= each.at <= r.at + r.restarted
                ]
                assert any(each.status == 503 for each in away), (
                    f"{name} stayed ready while PostgreSQL was down: {away[-2:]}"
                )
        for name in services:
            assert ready_again(readiness, name, last_restart) is not None, (
                f"{name} not ready {READY_WITHIN:.0f}s after the last restart: "
                f"{[each for each in readiness if each.service == name][-1]}"
            )

    # The kills met the consumers at work, and they waited the outages out: no record
    # dead-lettered (the commands' group, and both groups of contact events, contact-svc's and
    # log-svc's, share one dead-letter topic each), no handler failure counted against one.
    commands = settings["contact"]["CONTACTS_TOPIC_CONTACTS_COMMANDS"]
    events = settings["contact"]["CONTACTS_TOPIC_CONTACTS_EVENTS"]
    contact_log, trail_log = log_lines(contact_svc.log_path), log_lines(log_svc.log_path)
    relay_retries = sum(
        1
        for line in contact_log
        if line.get("message") == "publishing at once failed, relay retries"
    )
    print(
        f"  waits for the database: contact-svc's command consumer "
        f"{waits(contact_log, commands)}, its event consumer {waits(contact_log, events)}, "
        f"log-svc's {waits(trail_log, events)}; publishes left to the relay {relay_retries}"
    )
    assert waits(contact_log, commands), "the kills never met the command consumer at work"
    dead = await dead_letters(
        infrastructure.kafka_bootstrap_servers, [commands + ".dlq", events + ".dlq"]
    )
    assert not any(dead.values()), f"records dead-lettered: {dead}"
    for service in (contact_svc, log_svc):
        log = service.log_path.read_text(errors="replace").splitlines()
        failures = [line for line in log if "handler failed" in line]
        assert not failures, f"{service.factory}: {failures[:3]}"
