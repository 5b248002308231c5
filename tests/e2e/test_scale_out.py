"""Two replicas each of contact-svc, import-svc and segment-worker split the work of one
consumer group each, and a SIGKILL of one of each mid-load changes nothing in the result:
the survivor takes the dead one's partitions, and every contact is stored once with its
values, every change told once (after de-duplication by event id), every count exact — what
one replica would have produced.

Webhook deliveries go to both contact-svc replicas in turn (to the survivor once the other is
dead, again if a delivery got no answer, as a store retries), a CSV import is uploaded through
one import-svc replica and followed through the other.

`CONTACTS_TEST_SCALE_CONTACTS` sets how many contacts the load creates (4,000 by default, half
by webhook, half by the import)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from contacts_shared.events import ContactCreated, ContactImported, EventEnvelope

pytestmark = pytest.mark.integration
T = TypeVar("T")

CONTACTS = int(os.environ.get("CONTACTS_TEST_SCALE_CONTACTS", "4000"))
BY_WEBHOOK = CONTACTS // 2
BY_IMPORT = CONTACTS - BY_WEBHOOK
PER_DELIVERY = 25
INVALID_EVERY = 101  # import rows whose Score is not a number: refused, counted
PARTITIONS = 6  # every topic's (the settings' `topic_partitions` default)
HIGH = 50  # the virtual profile's members: Score >= HIGH
START_SECONDS = 120  # eight processes starting at once on two cores

# A group's members, each as the partitions of each topic it was assigned.
GroupMembers = list[dict[str, frozenset[int]]]


def score(index: int) -> int:
    return index * 7 % 100


def the_file() -> tuple[bytes, dict[str, int], int]:
    """The CSV (email,Score), each valid row's key and Score, and how many rows it refuses."""
    lines = ["email,Score"]
    expected: dict[str, int] = {}
    refused = 0
    index = 0
    while len(expected) < BY_IMPORT:
        if index % INVALID_EVERY == 7:
            lines.append(f"bad{index}@scale.example,many")
            refused += 1
        else:
            key = f"i{index:06d}@scale.example"
            lines.append(f"{key},{score(index)}")
            expected[key] = score(index)
        index += 1
    return ("\n".join(lines) + "\n").encode(), expected, refused


def deliveries() -> list[list[dict[str, object]]]:
    """The webhook deliveries, each of PER_DELIVERY new contacts with a Score."""
    records: list[dict[str, object]] = [
        {"email": f"w{index:06d}@scale.example", "score": score(index)}
        for index in range(BY_WEBHOOK)
    ]
    return [records[start : start + PER_DELIVERY] for start in range(0, BY_WEBHOOK, PER_DELIVERY)]


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout: float
) -> T:
    """Polls `probe` until `done` holds of its result; the last result either way."""
    deadline = time.monotonic() + timeout
    while not done(result := await probe()) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    return result


async def group_members(admin: AIOKafkaAdminClient, group: str) -> GroupMembers:
    """The members of a consumer group as the broker describes it (a stable group's only), each
    as the partitions of each topic it holds."""
    [response] = await admin.describe_consumer_groups([group])
    [described] = response.to_object()["groups"]
    if described["state"] != "Stable":
        return []
    members: GroupMembers = []
    for member in described["members"]:
        assignment = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
        members.append(
            {topic: frozenset(partitions) for topic, partitions in assignment.assignment}
        )
    return members


def split_between(members: GroupMembers, topics: list[str], replicas: int) -> bool:
    """Each of `replicas` members holds partitions of every topic, and together they hold each
    topic's partitions once."""
    if len(members) != replicas:
        return False
    for topic in topics:
        held = [member.get(topic, frozenset()) for member in members]
        if not all(held) or sorted(p for part in held for p in part) != list(range(PARTITIONS)):
            return False
    return True


async def shown_partitions(api: httpx.AsyncClient, url: str, group: str) -> frozenset[int]:
    """The partitions whose lag a process shows at its /metrics for a group: those it owns."""
    answer = await api.get(f"{url}/metrics")
    assert answer.status_code == 200, answer.text
    return frozenset(
        int(sample.labels["partition"])
        for family in text_string_to_metric_families(answer.text)
        if family.name == "contacts_consumer_lag"
        for sample in family.samples
        if sample.labels.get("group") == group
    )


class Deliveries:
    """Sends the webhook deliveries one after another to the live contact-svc replicas in
    turn; a delivery not answered 202 (its replica killed meanwhile) is sent again to the
    next, as a store retries."""

    def __init__(self, api: httpx.AsyncClient, send: Any, path: str, secret: str) -> None:
        self.api, self.send, self.path, self.secret = api, send, path, secret
        self.live: list[str] = []
        self.accepted = 0
        self.answered_by: Counter[str] = Counter()

    async def run(self, batches: Iterator[list[dict[str, object]]], turn: int) -> None:
        """Sends `batches` (shared by the senders, each taking the next), starting at the live
        replica `turn`."""
        for records in batches:
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, f"a delivery never taken: {records[0]}"
                url = self.live[turn % len(self.live)]
                turn += 1
                try:
                    answer = await self.send(self.api, f"{url}{self.path}", self.secret, records)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                if answer.status_code == 202:
                    break
                assert answer.status_code in {429, 503}, answer.text
                await asyncio.sleep(0.1)
            self.accepted += 1
            self.answered_by[url] += 1


async def test_two_replicas_split_the_work_and_a_killed_one_changes_nothing(
    service_process: Any,
    platform_env: Any,
    profile_known_to_contacts: Any,
    send_webhook: Any,
    stored_keys: Any,
    read_envelopes: Any,
    dead_letters: Any,
    infrastructure: Any,
) -> None:
    envs = platform_env("scale")
    # Work a dead process left (journals, leases, events) is taken over within seconds.
    quick = {"CONTACTS_OUTBOX_SCAN_SECONDS": "1", "CONTACTS_JOURNAL_LEASE_SECONDS": "5"}
    envs["contact"] |= quick
    envs["import"] |= quick | {"CONTACTS_ROWS_PER_CHECKPOINT": "200", "CONTACTS_LEASE_SECONDS": "3"}
    envs["segment"] |= quick | {"CONTACTS_SEGMENT_SESSION_TIMEOUT_SECONDS": "6"}
    profile_svc = service_process("profile_svc.app:create_app", envs["profile"])
    segment_api = service_process("segment_svc.app:create_app", envs["segment"])
    contact = [service_process("contact_svc.app:create_app", envs["contact"]) for _ in "ab"]
    imports = [service_process("import_svc.app:create_app", envs["import"]) for _ in "ab"]
    workers = [service_process("segment_svc.worker", envs["segment"]) for _ in "ab"]
    started = time.monotonic()
    stages: list[str] = []

    def stage(name: str) -> None:
        stages.append(f"{name} {time.monotonic() - started:.1f}s")
        print(stages[-1], flush=True)

    # All at once, each given long enough to start on a busy 2-core machine.
    everyone = [profile_svc, segment_api, *contact, *imports, *workers]
    await asyncio.gather(*(asyncio.to_thread(p.start, START_SECONDS) for p in everyone))
    stage("processes answer")

    topic = {
        name: envs["contact"][f"CONTACTS_TOPIC_{name.upper().replace('.', '_')}"]
        for name in ("profiles.events", "contacts.events", "contacts.commands", "imports.results")
    }
    topic["segments.events"] = envs["segment"]["CONTACTS_TOPIC_SEGMENTS_EVENTS"]
    groups = {
        envs["contact"]["CONTACTS_PROFILE_EVENTS_GROUP"]: [topic["profiles.events"]],
        envs["contact"]["CONTACTS_CONTACT_COMMANDS_GROUP"]: [topic["contacts.commands"]],
        envs["contact"]["CONTACTS_CONTACT_EVENTS_GROUP"]: [topic["contacts.events"]],
        envs["import"]["CONTACTS_PROFILE_EVENTS_GROUP"]: [topic["profiles.events"]],
        envs["import"]["CONTACTS_RESULTS_GROUP"]: [topic["imports.results"]],
        envs["segment"]["CONTACTS_SEGMENT_WORKER_ID"]: [
            topic["contacts.events"],
            topic["segments.events"],
            topic["profiles.events"],
        ],
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=infrastructure.kafka_bootstrap_servers)
    await admin.start()
    try:

        async def every_group() -> dict[str, GroupMembers]:
            return {group: await group_members(admin, group) for group in groups}

        def split(replicas: int) -> Callable[[dict[str, GroupMembers]], bool]:
            return lambda found: all(
                split_between(found[group], topics, replicas) for group, topics in groups.items()
            )

        # Both replicas of each took a share of every topic's partitions.
        before = await eventually(every_group, split(2), timeout=60)
        assert split(2)(before), before
        stage("started, partitions split")
        auth = {"Authorization": "Bearer scale-key"}
        async with httpx.AsyncClient(headers=auth, timeout=30) as api:
            profile = await profile_known_to_contacts(
                api,
                profile_svc.url,
                contact[0].url,
                {"name": "Scale", "fields": [{"name": "Score", "type": "number"}]},
                import_url=imports[0].url,
            )
            high = await api.post(
                f"{profile_svc.url}/v1/profiles",
                json={
                    "name": "High",
                    "type": "virtual",
                    "base_profile_id": profile["id"],
                    "rules": {"all": [{"field": "Score", "op": "gte", "value": HIGH}]},
                },
            )
            assert high.status_code == 201, high.text
            virtual_id = high.json()["id"]
            segment = await eventually(
                lambda: api.get(f"{segment_api.url}/v1/segments/{virtual_id}"),
                lambda r: r.status_code == 200 and not r.json()["rebuild"]["pending"],
                timeout=30,
            )
            assert segment.status_code == 200, segment.text
            made = await api.post(
                f"{contact[0].url}/v1/webhook-sources",
                json={"profile_id": profile["id"], "mapping": {"email": "email", "score": "Score"}},
            )
            assert made.status_code == 201, made.text
            source = made.json()
            sender = Deliveries(api, send_webhook, source["endpoint"], source["secret"])
            sender.live = [c.url for c in contact]

            # The load: the deliveries to both contact-svc replicas, the import through one
            # import-svc replica (whichever holds its lease reads it) and read through the other.
            content, imported, refused = the_file()
            upload = await api.post(
                f"{imports[0].url}/v1/imports",
                data={"profile_id": profile["id"], "action": "append_or_update"},
                files={"file": ("scale.csv", content)},
            )
            assert upload.status_code == 202, upload.text
            batches = deliveries()
            shared = iter(batches)
            sending = [asyncio.create_task(sender.run(shared, turn)) for turn in range(2)]
            import_url = f"{imports[1].url}/v1/imports/{upload.json()['id']}"
            commands_group = envs["contact"]["CONTACTS_CONTACT_COMMANDS_GROUP"]

            async def mid_load() -> bool:
                """A quarter of the import or of the deliveries applied, deliveries taken by
                both replicas, and each contact-svc process applying the commands of partitions
                of its own (its `contacts_consumer_lag` series)."""
                state = (await api.get(import_url)).json()
                assert not state["finished_at"], f"imported before the kill: {state}"
                if len(sender.answered_by) < 2 or (
                    state["progress"]["rows_done"] < BY_IMPORT // 4
                    and sender.accepted < len(batches) // 4
                ):
                    return False
                shown = [{"c": await shown_partitions(api, c.url, commands_group)} for c in contact]
                return split_between(shown, ["c"], 2)

            try:
                while not await mid_load():
                    await asyncio.sleep(0.05)
                # One replica of each is killed, without a goodbye.
                sender.live = [contact[0].url]
                for process in (contact[1], imports[1], workers[1]):
                    process.kill(signal.SIGKILL)
                killed_at = (sender.accepted, time.monotonic() - started)
                import_url = f"{imports[0].url}/v1/imports/{upload.json()['id']}"
                state = (await api.get(import_url)).json()
                assert not state["finished_at"], f"imported before the kill: proved nothing {state}"
                assert sender.accepted < len(batches), "all delivered before the kill"
                await asyncio.gather(*sending)
                stage("delivered")
            finally:
                for task in sending:
                    task.cancel()
            assert sender.answered_by[contact[1].url] > 0, "the killed replica took no delivery"

            # The survivors hold every partition of their groups.
            after = await eventually(every_group, split(1), timeout=60)
            assert split(1)(after), after
            # The survivor applies the commands of every partition.
            survivor = await eventually(
                lambda: shown_partitions(api, contact[0].url, commands_group),
                lambda shown: shown == frozenset(range(PARTITIONS)),
                timeout=30,
            )
            assert survivor == frozenset(range(PARTITIONS)), survivor
            stage("partitions taken over")

            # Every contact once, with its values, as one replica would have left them.
            expected = imported | {
                str(r["email"]): int(str(r["score"])) for batch in batches for r in batch
            }
            members = {key for key, value in expected.items() if value >= HIGH}
            base = f"{contact[0].url}/v1/profiles/{profile['id']}/contacts"
            once = dict.fromkeys(expected, 1)
            listed = await eventually(
                lambda: stored_keys(api, base), lambda found: found == once, timeout=90
            )
            assert listed == once, "a contact listed twice, or missing"
            # Stored once each, with its values, created and never changed again.
            mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infrastructure.mongodb_url)
            try:
                stored = mongo[envs["contact"]["CONTACTS_MONGODB_DATABASE"]]["contacts"]
                found = [
                    (d["key"], d["fields"].get("score"), d["status"], d["version"])
                    async for d in stored.find({"profile_id": profile["id"]})
                ]
            finally:
                await mongo.close()
            assert sorted(found) == sorted((k, v, "active", 1) for k, v in expected.items())
            stage("contacts settled")

            state = await eventually(
                lambda: api.get(import_url), lambda r: bool(r.json()["finished_at"]), timeout=60
            )
            done = state.json()
            counts = done["counts"]
            assert done["status"] == "completed_with_errors", done
            assert (counts["read"], counts["refused"]) == (BY_IMPORT + refused, refused), done
            assert counts["applied"] == counts["created"] == BY_IMPORT, done
            stage("import finished")

            stats_url = f"{contact[0].url}/v1/profiles/{profile['id']}/stats"
            stats = await eventually(
                lambda: api.get(stats_url),
                lambda r: r.json()["total"] >= CONTACTS,
                timeout=60,
            )
            assert stats.json()["total"] == CONTACTS, f"counted twice? {stats.json()}"
            assert stats.json()["by_status"]["active"] == CONTACTS, stats.json()

            count_url = f"{segment_api.url}/v1/profiles/{virtual_id}/members:count"
            count = await eventually(
                lambda: api.get(count_url),
                lambda r: r.json() == {"count": len(members)},
                timeout=60,
            )
            assert count.json() == {"count": len(members)}, "members counted twice or lost"
            stage("counts settled")
    finally:
        await admin.close()

    # Every change told once: one event per contact, after dropping copies (same id) that a
    # killed replica's successor published again.
    def contact_keys(envelopes: list[EventEnvelope]) -> set[str]:
        return {e.data["contact"]["key"] for e in envelopes if "contact" in e.data}

    envelopes = await read_envelopes(
        topic["contacts.events"], until=lambda e: contact_keys(e) >= expected.keys(), timeout=60
    )
    told = {e.id: e for e in envelopes}
    changes = Counter(e.data["contact"]["key"] for e in told.values())
    assert changes == Counter(expected.keys()), "a change told twice, or not told"
    kinds = Counter(e.type for e in told.values())
    assert kinds == {ContactCreated.event_type: BY_WEBHOOK, ContactImported.event_type: BY_IMPORT}
    stage("contact events read")

    # Every member entered once, none left.
    def entered(envelopes: list[EventEnvelope]) -> Counter[str]:
        unique = {e.id: e for e in envelopes if e.data.get("segment_id") == virtual_id}
        return Counter(
            e.data["key"]
            for e in unique.values()
            if e.type != "contacts.segment.rebuilt"  # the empty segment's first rebuild
        )

    segment_events = await read_envelopes(
        topic["segments.events"], until=lambda e: entered(e).keys() >= members, timeout=60
    )
    assert entered(segment_events) == Counter(members)
    assert {e.type for e in segment_events if e.data.get("segment_id") == virtual_id} <= {
        "contacts.segment.contact_entered",
        "contacts.segment.rebuilt",
    }

    stage("segment events read")
    # Nothing parked: every record was handled, by one replica or the other.
    parked = await asyncio.gather(
        *(
            dead_letters(infrastructure.kafka_bootstrap_servers, [f"{name}.dlq"])
            for name in topic.values()
        )
    )
    assert parked == [{f"{name}.dlq": []} for name in topic.values()]
    stage("checked")
    print(
        f"\n{CONTACTS} contacts; replicas killed after {killed_at[0]} of {len(batches)} "
        f"deliveries, {killed_at[1]:.1f}s in; {len(envelopes)} contact event records "
        f"({len(envelopes) - len(told)} copies); {', '.join(stages)}"
    )
