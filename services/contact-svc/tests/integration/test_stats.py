"""Profile statistics counted from contact events, against the real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord

from contact_svc.consumers import project_contact_events
from contact_svc.domain import Contact
from contact_svc.repository import MongoStatsStore
from contact_svc.stats import CountedMark, PartitionCounts, summarize
from contacts_shared.events import DomainEvent, to_envelope
from contacts_shared.mongo import Database, connect
from contacts_shared.profiles import ProfileSchema
from contacts_shared.schema import ContactStatus

pytestmark = pytest.mark.integration

Services = tuple[httpx.AsyncClient, httpx.AsyncClient]


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
    assert datetime.fromisoformat(stats["last_change_at"]) <= datetime.now(UTC)
    assert (await contacts.get(f"{base}:count")).json() == {"count": 3, "status": None}
    unsubscribed = await contacts.get(f"{base}:count", params={"status": "unsubscribed"})
    assert unsubscribed.json() == {"count": 1, "status": "unsubscribed"}
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
