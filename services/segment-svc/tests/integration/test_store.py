"""segment-svc's collections on the real MongoDB-protocol server and Kafka: conditional writes
of projected contacts, member records ordered by the write that made them, and the relay of
entries a crashed worker left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contacts_shared.rules import RuleGroup
from contacts_shared.schema import ContactStatus, FieldSpec, FieldType
from segment_svc.evaluate import ContactView, Segment
from segment_svc.membership import ContactState, contact_writes
from segment_svc.resources import Resources
from segment_svc.settings import SegmentSettings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="City", key="city", type=FieldType.TEXT),
)
SEGMENT = Segment(
    "v1",
    "acct",
    "p1",
    RuleGroup.model_validate({"all": [{"field": "City", "op": "equals", "value": "Lima"}]}),
    1,
    FIELDS,
)


def state(key: str, version: int, city: str | None) -> ContactState:
    view = None
    if city is not None:
        view = ContactView({"email": key, "city": city}, ContactStatus.ACTIVE, NOW, NOW)
    return ContactState(f"p1:{key}", "acct", "p1", key, version, ContactStatus.ACTIVE, view)


@pytest.fixture
def topic(unique: str) -> str:
    return f"segments.events.store.{unique}"


@pytest.fixture
async def resources(infrastructure: Any, unique: str, topic: str) -> AsyncIterator[Resources]:
    settings = SegmentSettings(
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"segment_svc_store_{unique}",
        topic_segments_events=topic,
    )
    opened = Resources.open(settings)
    await opened.create_indexes()
    yield opened
    await opened.close()


async def test_a_write_from_a_stale_read_loses_and_is_reported(resources: Resources) -> None:
    first = contact_writes([state("a@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic="t")
    assert await resources.projection.write(first) == []
    held = await resources.projection.load(["p1:a@x.com"])
    # Two writers read the same document; the second to write lost the race.
    one = contact_writes(
        [state("a@x.com", 2, "Quito")], held, {"p1": [SEGMENT]}, now=NOW, topic="t"
    )
    two = contact_writes([state("a@x.com", 3, "Lima")], held, {"p1": [SEGMENT]}, now=NOW, topic="t")
    assert await resources.projection.write(one) == []
    assert await resources.projection.write(two) == ["p1:a@x.com"]
    # A second insert of a contact that now exists loses too (its upsert collides on `_id`).
    again = contact_writes([state("a@x.com", 4, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic="t")
    assert await resources.projection.write(again) == ["p1:a@x.com"]
    document = (await resources.projection.load(["p1:a@x.com"]))["p1:a@x.com"]
    assert (document["version"], document["rev"], document["segments"]) == (2, 2, {})
    assert [e["kind"] for e in document["outbox"]] == ["entered", "left"]
    assert [e["rev"] for e in document["outbox"]] == [1, 2]


async def test_member_records_follow_the_newest_write_whatever_the_order(
    resources: Resources,
) -> None:
    entered = contact_writes(
        [state("b@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic="t"
    )
    await resources.projection.write(entered)
    held = await resources.projection.load(["p1:b@x.com"])
    left = contact_writes(
        [state("b@x.com", 2, "Quito")], held, {"p1": [SEGMENT]}, now=NOW, topic="t"
    )
    await resources.projection.write(left)
    # Two relays racing: the newer entry applied first, then the older one late.
    await resources.members.apply(left[0][2])
    await resources.members.apply(entered[0][2])
    assert await resources.members.get("v1", "b@x.com") is None
    assert await resources.members.counts("v1") == {s.value: 0 for s in ContactStatus}


async def test_entries_left_behind_are_relayed_once_and_removed(
    resources: Resources, topic: str, read_envelopes: Any
) -> None:
    writes = contact_writes(
        [state(f"c{i}@x.com", 1, "Lima" if i % 2 else "Quito") for i in range(10)],
        {},
        {"p1": [SEGMENT]},
        now=NOW,
        topic=topic,
    )
    # Written, then the worker "died" before relaying.
    assert await resources.projection.write(writes) == []
    # Only the five who entered have entries to relay.
    assert await resources.relay.relay_left_behind(older_than=timedelta(0)) == 5
    assert await resources.relay.relay_left_behind(older_than=timedelta(0)) == 0
    members = [m["key"] async for m in resources.members.stream("v1")]
    assert members == [f"c{i}@x.com" for i in (1, 3, 5, 7, 9)]
    envelopes = await read_envelopes(topic, until=lambda e: len(e) >= 5)
    assert sorted(e.data["key"] for e in envelopes) == members
    assert all(e.type == "contacts.segment.contact_entered" for e in envelopes)
