"""Profile statistics counted from contact events, against the real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from pymongo import AsyncMongoClient

from contact_svc.consumers import project_contact_events
from contact_svc.domain import Contact
from contact_svc.stats import CountedMark, PartitionCounts, summarize
from contact_svc.stats_repository import MongoStatsStore
from contacts_shared.events import DomainEvent, to_envelope
from contacts_shared.mongo import Database, connect
from contacts_shared.profiles import ProfileSchema
from contacts_shared.schema import ContactStatus

pytestmark = pytest.mark.integration

Services = tuple[httpx.AsyncClient, httpx.AsyncClient]
ZEROS = {status.value: 0 for status in ContactStatus}
EMPTY = {"total": 0, "added_last_7_days": 0, "added_last_30_days": 0, "last_change_at": None}


async def test_stats_follow_creations_status_changes_updates_and_deletions(
    services: Services, known_profile: Any, eventually: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Counted", fields=[{"name": "Nombre"}])
    base = f"/v1/profiles/{profile['id']}/contacts"
    for index in range(4):
        created = await contacts.post(
            base, json={"fields": {"email": f"s{index}@example.com", "Nombre": f"S{index}"}}
        )
        assert created.status_code == 201, created.text
    await contacts.patch(f"{base}/s1@example.com", json={"status": "unsubscribed"})
    await contacts.patch(f"{base}/s2@example.com", json={"fields": {"Nombre": "Renamed"}})
    await contacts.delete(f"{base}/s3@example.com")
    expected = {"active": 2, "unsubscribed": 1, "bounced": 0, "complained": 0, "blocked": 0}
    stats: dict[str, Any] = {}

    async def counted() -> bool:
        nonlocal stats
        stats = (await contacts.get(f"/v1/profiles/{profile['id']}/stats")).json()
        return bool(stats["by_status"] == expected)

    assert await eventually(counted), stats
    assert stats["total"] == 3
    assert stats["added_last_7_days"] == stats["added_last_30_days"] == 3
    today = datetime.now(UTC).date().isoformat()
    assert stats["added_by_day"][-1] == {"day": today, "count": 3}
    assert len(stats["added_by_day"]) == 30
    assert datetime.fromisoformat(stats["last_change_at"]) <= datetime.now(UTC)
    assert (await contacts.get(f"{base}:count")).json() == {
        "count": 3,
        "exact": True,
        "status": None,
    }
    unsubscribed = await contacts.get(f"{base}:count", params={"status": "unsubscribed"})
    assert unsubscribed.json() == {"count": 1, "exact": True, "status": "unsubscribed"}
    assert (await contacts.get(f"{base}:count", params={"status": "gone"})).status_code == 422

    other = await contacts.get(
        f"/v1/profiles/{profile['id']}/stats", headers={"Authorization": "Bearer key-b"}
    )
    assert other.status_code == 404
    assert (await contacts.get("/v1/profiles/nope/stats")).status_code == 404


@pytest.fixture
async def stats_database(infrastructure: Any, unique: str) -> AsyncIterator[Database]:
    client = connect(infrastructure.mongodb_url, app_name="test")
    yield client[f"stats_{unique}"]
    await client.close()


@pytest.fixture
def stats_store(stats_database: Database) -> MongoStatsStore:
    return MongoStatsStore(stats_database["profile_stats"], stats_database["stats_marks"])


class Enforcement:
    """The suppression list's part of the consumer (tested in test_suppression): the batches
    of events it was given."""

    def __init__(self) -> None:
        self.batches: list[list[DomainEvent]] = []

    async def __call__(self, events: Sequence[DomainEvent]) -> int:
        self.batches.append(list(events))
        return 0


@pytest.fixture
def enforce() -> Enforcement:
    return Enforcement()


def record(event: DomainEvent, *, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    envelope = to_envelope(event, account_id="a1", source="test")
    return ConsumerRecord(
        topic="contacts.events",
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=event.subject().encode(),
        value=envelope.model_dump_json().encode(),
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=(),
    )


async def test_redelivered_events_are_counted_once_per_partition(
    stats_store: MongoStatsStore,
    enforce: Enforcement,
    regular_schema: ProfileSchema,
) -> None:
    now = datetime.now(UTC)
    a, b = (
        Contact.create(schema=regular_schema, key=key, values={}, source="api", now=now)
        for key in ("a@x.io", "b@x.io")
    )
    a.change_status(ContactStatus.BOUNCED, reason=None, source="api", now=now)
    a_created, a_bounced = a.take_events()
    [b_created] = b.take_events()
    records = [
        record(a_created, partition=0, offset=0),
        record(b_created, partition=2, offset=0),
        record(a_bounced, partition=0, offset=1),
        # Published again by the relay after a crash: the same events at later offsets.
        record(a_created, partition=0, offset=2),
        record(a_bounced, partition=0, offset=3),
    ]
    for _ in range(2):  # everything delivered twice, as after a crash before the commit
        for partition in (0, 2):
            batch = [each for each in records if each.partition == partition]
            await project_contact_events(batch, stats=stats_store, enforce=enforce)
        await project_contact_events(
            records[2:], stats=stats_store, enforce=enforce
        )  # and the last ones alone

    shares = await stats_store.of_profile("p1")
    assert sorted((s.partition, s.offset) for s in shares) == [(0, 1), (2, 0)]
    stats = summarize(shares, today=datetime.now(UTC).date())
    assert stats.total == 2
    assert stats.by_status["active"] == stats.by_status["bounced"] == 1
    assert await stats_store.of_profile("unknown") == []
    # The same consumer hands each batch's events, parsed once, to the suppression list's part.
    assert enforce.batches[0] == [a_created, a_bounced, a_created, a_bounced]


class DyingBeforeTheShares(MongoStatsStore):
    """The real store, whose process dies once after writing the marks, before the shares."""

    died = False

    async def store(self, counts: PartitionCounts, *, expected_offset: int) -> None:
        if not self.died:
            self.died = True
            raise ConnectionError("killed")
        await super().store(counts, expected_offset=expected_offset)


async def test_a_crash_between_the_marks_and_the_shares_loses_nothing(
    stats_database: Database, enforce: Enforcement, regular_schema: ProfileSchema
) -> None:
    stats_store = DyingBeforeTheShares(
        stats_database["profile_stats"], stats_database["stats_marks"]
    )
    contact = Contact.create(
        schema=regular_schema, key="c@x.io", values={}, source="api", now=datetime.now(UTC)
    )
    contact.change_status(ContactStatus.BOUNCED, reason=None, source="api", now=datetime.now(UTC))
    created, bounced = contact.take_events()
    # Both events of the contact in one batch: its mark moves to the second.
    batch = [record(created, partition=1, offset=7), record(bounced, partition=1, offset=8)]
    with pytest.raises(ConnectionError):
        await project_contact_events(batch, stats=stats_store, enforce=enforce)
    await project_contact_events(
        batch, stats=stats_store, enforce=enforce
    )  # delivered again after the restart
    await project_contact_events(batch, stats=stats_store, enforce=enforce)  # and once more
    [share] = await stats_store.of_profile("p1")
    assert (share.offset, share.by_status) == (8, {"active": 0, "bounced": 1})
    assert summarize([share], today=datetime.now(UTC).date()).added_last_7_days == 1


async def test_marks_are_inserted_when_new_and_written_over_when_stored_meanwhile(
    stats_store: MongoStatsStore,
) -> None:
    await stats_store.set_marks({"p1:a@x.io": CountedMark(version=1, offset=1, before=0)})
    # "a" was stored by another consumer since this one read the marks: not in `stored`.
    await stats_store.set_marks(
        {
            "p1:a@x.io": CountedMark(version=2, offset=5, before=1),
            "p1:b@x.io": CountedMark(version=1, offset=6, before=0),
        }
    )
    await stats_store.set_marks(
        {"p1:b@x.io": CountedMark(version=2, offset=9, before=1)}, stored={"p1:b@x.io"}
    )
    assert await stats_store.marks(["p1:a@x.io", "p1:b@x.io"]) == {
        "p1:a@x.io": CountedMark(version=2, offset=5, before=1),
        "p1:b@x.io": CountedMark(version=2, offset=9, before=1),
    }


async def test_a_page_of_profiles_gets_the_statistics_each_profile_gets_alone(
    services: Services, known_profile: Any, eventually: Any
) -> None:
    profiles, contacts = services
    first = await known_profile(name="Page one", fields=[{"name": "Nombre"}])
    second = await known_profile(name="Page two", fields=[{"name": "Nombre"}])
    segment = await known_profile(
        name="Page segment",
        type="virtual",
        base_profile_id=first["id"],
        rules={"all": [{"field": "Nombre", "op": "equals", "value": "A"}]},
    )
    other = {"Authorization": "Bearer key-b"}
    foreign = (await profiles.post("/v1/profiles", json={"name": "Theirs"}, headers=other)).json()
    base = f"/v1/profiles/{first['id']}/contacts"
    for index in range(3):
        created = await contacts.post(base, json={"fields": {"email": f"p{index}@example.com"}})
        assert created.status_code == 201, created.text
    batch = [{"email": f"b{index}@example.com", "Nombre": "B"} for index in range(4)]
    batched = await contacts.post(f"{base}:batch", json={"contacts": batch})
    assert batched.json()["created"] == 4, batched.text
    unsubscribed = await contacts.patch(f"{base}/b1@example.com", json={"status": "unsubscribed"})
    assert unsubscribed.status_code == 200, unsubscribed.text
    assert (await contacts.delete(f"{base}/p2@example.com")).status_code == 204
    created = await contacts.post(
        f"/v1/profiles/{second['id']}/contacts", json={"fields": {"email": "s@example.com"}}
    )
    assert created.status_code == 201, created.text
    asked = [second["id"], foreign["id"], first["id"], segment["id"], "nope", second["id"]]
    expected = {"active": 5, "unsubscribed": 1, "bounced": 0, "complained": 0, "blocked": 0}
    page: dict[str, Any] = {}
    alone: dict[str, Any] = {}

    async def counted() -> bool:
        nonlocal page, alone
        answer = await contacts.get("/v1/stats", params={"profile_id": asked})
        assert answer.status_code == 200, answer.text
        page = answer.json()["stats"]
        alone = {
            p["id"]: (await contacts.get(f"/v1/profiles/{p['id']}/stats")).json()
            for p in (second, first)
        }
        done = alone[first["id"]]["by_status"] == expected and alone[second["id"]]["total"] == 1
        return bool(done and page == alone)

    assert await eventually(counted), (page, alone)
    # In the order asked, each once; another account's profile, a virtual one, an unknown id:
    # absent.
    assert list(page) == [second["id"], first["id"]]
    assert page[first["id"]]["total"] == page[first["id"]]["added_last_7_days"] == 6

    async def theirs_only() -> bool:
        theirs = await contacts.get(
            "/v1/stats", params={"profile_id": [first["id"], foreign["id"]]}, headers=other
        )
        found = theirs.json()["stats"]
        days = found.get(foreign["id"], {}).pop("added_by_day", [])
        empty = {**EMPTY, "by_status": ZEROS}
        return bool(found == {foreign["id"]: empty} and {d["count"] for d in days} == {0})

    assert await eventually(theirs_only)
    hundred = [first["id"]] + [f"id{n}" for n in range(99)]
    assert (await contacts.get("/v1/stats", params={"profile_id": hundred})).status_code == 200
    too_many = await contacts.get("/v1/stats", params={"profile_id": [*hundred, "one more"]})
    assert too_many.status_code == 422, too_many.text
    assert (await contacts.get("/v1/stats")).status_code == 422


async def test_the_statistics_of_many_profiles_take_one_query(
    infrastructure: Any, unique: str, mongo_queries: Any
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True, event_listeners=[mongo_queries]
    )
    database = client[f"stats_{unique}"]
    stats_store = MongoStatsStore(database["profile_stats"], database["stats_marks"], partitions=3)
    now = datetime.now(UTC)
    written = {
        ("p1", 0): {"active": 2},
        ("p1", 2): {"active": 1, "bounced": 1},
        ("p2", 1): {"unsubscribed": 1},
        ("p3", 7): {"active": 4},  # a partition past those expected: read in a second query
    }
    for (profile_id, partition), by_status in written.items():
        counts = PartitionCounts(profile_id, partition, 10, by_status, {}, now)
        await stats_store.store(counts, expected_offset=-1)
    mongo_queries.sent.clear()

    many = await stats_store.of_profiles(["p1", "p2", "p0"])
    assert mongo_queries.collections() == ["profile_stats"]
    assert many == {p: await stats_store.of_profile(p) for p in ("p1", "p2", "p0")}
    assert [(s.partition, s.by_status) for s in many["p1"]] == [
        (0, {"active": 2}),
        (2, {"active": 1, "bounced": 1}),
    ]
    assert many["p0"] == []
    mongo_queries.sent.clear()
    [share] = (await stats_store.of_profiles(["p3"]))["p3"]
    assert (share.partition, share.by_status) == (7, {"active": 4})
    assert mongo_queries.collections() == ["profile_stats"] * 2
    await client.close()
