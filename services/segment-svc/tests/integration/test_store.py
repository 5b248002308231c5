"""segment-svc's collections on the real MongoDB-protocol server and Kafka: conditional writes
of projected contacts, member records ordered by the write that made them, the journal of
what a crashed worker left unpublished, and a contact erased at the person's request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contacts_shared.events import ContactCreated, ContactDeleted, DomainEvent, EventEnvelope
from contacts_shared.kafka import EventPublisher, OutgoingMessage
from contacts_shared.profiles import ProfileSchema
from contacts_shared.rules import RuleGroup
from contacts_shared.schema import (
    ContactSnapshot,
    ContactStatus,
    FieldSpec,
    FieldType,
    ProfileSnapshot,
    ProfileType,
)
from segment_svc.counts import OUTSIDE, Change, Standing, fold
from segment_svc.evaluate import ContactView, Segment
from segment_svc.handlers import Rebuilder, Segmenter
from segment_svc.membership import ContactState, contact_state, contact_writes
from segment_svc.resources import Resources
from segment_svc.settings import SegmentSettings
from segment_svc.store import MembershipRelay

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
ENTERED = "contacts.segment.contact_entered"
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
def settings(infrastructure: Any, unique: str, topic: str) -> SegmentSettings:
    return SegmentSettings(
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"segment_svc_store_{unique}",
        topic_segments_events=topic,
    )


@pytest.fixture
async def resources(settings: SegmentSettings) -> AsyncIterator[Resources]:
    opened = Resources.open(settings)
    await opened.create_indexes()
    yield opened
    await opened.close()


class DeadPublisher(EventPublisher):
    """The process dies once its documents are written, before their events are out."""

    async def publish(self, messages: Iterable[OutgoingMessage]) -> None:
        raise ConnectionError("killed")


@pytest.fixture
async def dying(settings: SegmentSettings) -> AsyncIterator[Resources]:
    """Resources over the same collections whose writer dies before publishing."""
    opened = Resources.open(settings)
    opened.publisher = DeadPublisher(
        settings.kafka_bootstrap_servers, client_id="dying", topics=[], partitions=1
    )
    opened.relay = MembershipRelay(
        opened.projection, opened.members, opened.publisher, opened.journal
    )
    yield opened
    await opened.close()


async def test_a_write_from_a_stale_read_loses_and_is_reported(resources: Resources) -> None:
    first = contact_writes([state("a@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic="t")
    assert await resources.projection.write(first, "w1") == []
    held = await resources.projection.load(["p1:a@x.com"])
    # Two writers read the same document; the second to write lost the race.
    one = contact_writes(
        [state("a@x.com", 2, "Quito")], held, {"p1": [SEGMENT]}, now=NOW, topic="t"
    )
    two = contact_writes([state("a@x.com", 3, "Lima")], held, {"p1": [SEGMENT]}, now=NOW, topic="t")
    assert await resources.projection.write(one, "w2") == []
    assert await resources.projection.write(two, "w3") == ["p1:a@x.com"]
    # A second insert of a contact that now exists loses too (its insert collides on `_id`).
    again = contact_writes([state("a@x.com", 4, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic="t")
    assert await resources.projection.write(again, "w4") == ["p1:a@x.com"]
    document = (await resources.projection.load(["p1:a@x.com"]))["p1:a@x.com"]
    assert (document["version"], document["rev"], document["segments"]) == (2, 2, {})
    assert (document["journal"], "outbox" in document) == ("w2", False)


async def test_member_records_follow_the_newest_write_whatever_the_order(
    resources: Resources,
) -> None:
    entered = contact_writes(
        [state("b@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic="t"
    )
    await resources.projection.write(entered, "w1")
    held = await resources.projection.load(["p1:b@x.com"])
    left = contact_writes(
        [state("b@x.com", 2, "Quito")], held, {"p1": [SEGMENT]}, now=NOW, topic="t"
    )
    await resources.projection.write(left, "w2")
    # Two relays racing: the newer entry applied first, then the older one late.
    await resources.members.apply(left[0][2])
    await resources.members.apply(entered[0][2])
    assert await resources.members.get("v1", "b@x.com") is None
    assert await resources.members.counts("v1") == {s.value: 0 for s in ContactStatus}


async def test_members_enter_leave_and_enter_again_in_order(resources: Resources) -> None:
    held: dict[str, Any] = {}
    for version, city in enumerate(["Lima", "Quito", "Lima"], start=1):
        writes = contact_writes(
            [state("d@x.com", version, city)], held, {"p1": [SEGMENT]}, now=NOW, topic="t"
        )
        await resources.projection.write(writes, f"w{version}")
        await resources.members.apply(writes[0][2])  # the last enters over its tombstone
        held = await resources.projection.load(["p1:d@x.com"])
        member = await resources.members.get("v1", "d@x.com")
        assert (member is not None) == (city == "Lima")
        assert member is None or (member["rev"], member["status"]) == (version, "active")
    # An older entry applied late, over the newer record, changes nothing.
    first = contact_writes([state("d@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic="t")
    await resources.members.apply(first[0][2])
    assert (await resources.members.get("v1", "d@x.com") or {})["rev"] == 3


async def test_what_a_dead_writer_journaled_is_published_once_after_its_lease(
    resources: Resources,
    dying: Resources,
    settings: SegmentSettings,
    topic: str,
    read_envelopes: Any,
) -> None:
    writes = contact_writes(
        [state(f"c{i}@x.com", 1, "Lima" if i % 2 else "Quito") for i in range(10)],
        {},
        {"p1": [SEGMENT]},
        now=NOW,
        topic=topic,
    )
    with pytest.raises(ConnectionError):
        await dying.relay.write(writes)
    assert len(await resources.projection.load([f"p1:c{i}@x.com" for i in range(10)])) == 10
    assert await resources.relay.sweep() == 0  # within its lease: its writer's, maybe alive
    expired = Resources.open(settings.model_copy(update={"journal_lease_seconds": 0.001}))
    try:
        assert await expired.relay.sweep() == 1
        assert await expired.relay.sweep() == 0
    finally:
        await expired.close()
    members = [m["key"] async for page in resources.members.pages("v1") for m in page]
    assert members == [f"c{i}@x.com" for i in (1, 3, 5, 7, 9)]
    envelopes = await read_envelopes(topic, until=lambda e: len(e) >= 5)
    assert sorted(e.data["key"] for e in envelopes) == members
    assert all(e.type == ENTERED for e in envelopes)


async def test_a_later_write_publishes_a_live_journals_events_of_its_contact_first(
    resources: Resources, dying: Resources, topic: str, read_envelopes: Any
) -> None:
    entered = contact_writes(
        [state("e@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic=topic
    )
    with pytest.raises(ConnectionError):
        await dying.relay.write(entered)
    # The restarted worker gets a newer event of the contact before the journal's lease ends.
    held = await resources.projection.load(["p1:e@x.com"])
    left = contact_writes(
        [state("e@x.com", 2, "Quito")], held, {"p1": [SEGMENT]}, now=NOW, topic=topic
    )
    assert await resources.relay.write(left) == set()
    envelopes = await read_envelopes(topic, until=lambda e: len(e) >= 2)
    assert [(e.type, e.data["sequence"]) for e in envelopes] == [
        (ENTERED, 1),
        ("contacts.segment.contact_left", 2),
    ]
    assert await resources.members.get("v1", "e@x.com") is None


async def test_membership_events_are_cloud_events_in_structured_mode(
    resources: Resources,
    dying: Resources,
    settings: SegmentSettings,
    topic: str,
    read_cloud_events: Any,
) -> None:
    # Published by the writer that wrote them, and from the journal of one that died.
    written = contact_writes(
        [state("f@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic=topic
    )
    assert await resources.relay.write(written) == set()
    swept = contact_writes(
        [state("g@x.com", 1, "Lima")], {}, {"p1": [SEGMENT]}, now=NOW, topic=topic
    )
    with pytest.raises(ConnectionError):
        await dying.relay.write(swept)
    expired = Resources.open(settings.model_copy(update={"journal_lease_seconds": 0.001}))
    try:
        assert await expired.relay.sweep() == 1
    finally:
        await expired.close()
    published = [
        EventEnvelope.model_validate(entry["envelope"])
        for _, _, entries in written + swept
        for entry in entries
    ]
    assert [(e.type, e.source, e.subject) for e in published] == [
        (ENTERED, "/segment-svc", "p1:f@x.com"),
        (ENTERED, "/segment-svc", "p1:g@x.com"),
    ]

    read = await read_cloud_events(topic, count=2)
    assert {r.content_type for r in read} == {"application/cloudevents+json"}
    # Every attribute and the data as published; the SDK adds the record key, the contact.
    assert sorted((r.event for r in read), key=lambda event: event["subject"]) == [
        {**e.model_dump(), "partitionkey": e.subject} for e in published
    ]


def virtual(rules: dict[str, Any], version: int) -> ProfileSnapshot:
    return ProfileSnapshot(
        id="v9",
        account_id="acct",
        name="Recent",
        description="",
        type=ProfileType.VIRTUAL,
        fields=(),
        base_profile_id="p1",
        rules=rules,
        version=version,
        created_at=NOW,
        updated_at=NOW,
    )


async def test_rebuilds_are_asked_for_by_rules_fields_and_new_days(resources: Resources) -> None:
    segments = resources.segments
    recent = {"all": [{"field": "Joined", "op": "within_last_days", "value": 7}]}
    await segments.apply_virtual(virtual(recent, 1))
    claimed = await segments.claim_rebuild("w1", timedelta(seconds=30))
    assert claimed is not None and claimed["rebuild"]["reason"] == "created"
    assert await segments.claim_rebuild("w2", timedelta(seconds=30)) is None  # leased
    await segments.finish_rebuild("v9", "w1", 1, {"members": 0}, evaluated_on="2026-11-28")
    assert (await segments.get("v9") or {})["rebuild"]["pending"] is False

    # A repeated or older event changes nothing; a rename keeps the rules: no rebuild.
    await segments.apply_virtual(virtual(recent, 1))
    await segments.apply_virtual(virtual(recent, 2))
    assert (await segments.get("v9") or {})["rebuild"]["pending"] is False

    # A new UTC day: relative-date rules are evaluated again, once.
    assert await segments.request_new_day_rebuilds("2026-11-29") == 1
    assert await segments.request_new_day_rebuilds("2026-11-29") == 0
    claimed = await segments.claim_rebuild("w1", timedelta(seconds=30))
    assert claimed is not None and claimed["rebuild"]["reason"] == "new_day"
    # A rules change while that rebuild runs keeps the segment pending after it.
    await segments.apply_virtual(virtual({"all": [{"field": "Age", "op": "gt", "value": 3}]}, 3))
    await segments.finish_rebuild("v9", "w1", 2, {"members": 0}, evaluated_on="2026-11-29")
    document = await segments.get("v9") or {}
    assert document["rebuild"]["pending"] is True and document["relative_dates"] is False

    # A field the rules read removed from the base profile: rebuilt; other fields: not.
    await segments.finish_rebuild("v9", "w1", 3, {"members": 0}, evaluated_on="2026-11-29")
    await segments.request_rebuild("p1", "City", "field_removed")
    assert (await segments.get("v9") or {})["rebuild"]["pending"] is False
    await segments.request_rebuild("p1", "age", "field_removed")
    assert (await segments.get("v9") or {})["rebuild"]["reason"] == "field_removed"


async def test_member_counts_count_each_change_once(resources: Resources) -> None:
    counts = resources.counts
    active, unsubscribed = Standing(True, "active"), Standing(True, "unsubscribed")

    async def record(partition: int, changes: list[Change]) -> None:
        marks = await counts.marks_of([(c.segment_id, c.contact_id) for c in changes])
        counted_to = await counts.counted_to({(c.segment_id, partition) for c in changes})
        shares = {s: offset for (s, _), offset in counted_to.items()}
        await counts.record([fold(partition, changes, marks, shares, changes[-1].offset)])

    batch = [Change("v5", f"c{i}", active, 1, i) for i in range(5)]
    await record(2, batch[:3])
    await record(2, batch)  # redelivered after a crash, with more: the share's offset holds
    assert (await counts.counts("v5"))["members"] == 5
    # Two are published again after a crash, one contact leaves, then its entry comes again;
    # one unsubscribes.
    await record(
        2,
        [
            Change("v5", "c0", active, 1, 7),
            Change("v5", "c1", active, 1, 8),
            Change("v5", "c2", OUTSIDE, 2, 9),
            Change("v5", "c2", active, 1, 10),
            Change("v5", "c3", unsubscribed, 2, 11),
        ],
    )
    # Another partition's share adds up with this one.
    await record(4, [Change("v5", "c9", active, 1, 3)])
    found = await counts.counts("v5")
    assert (found["members"], found["active"], found["unsubscribed"], found["bounced"]) == (
        5,
        4,
        1,
        0,
    )
    assert (await counts.counts("v6"))["members"] == 0


async def test_a_rebuild_walks_every_page_with_pages_in_flight(
    resources: Resources, topic: str, read_envelopes: Any, read_cloud_events: Any
) -> None:
    await resources.schemas.apply(
        ProfileSchema("p1", "acct", ProfileType.REGULAR, FIELDS, 1), deleted=False
    )
    cities = ("Lima", "Quito", "Lima", "Cusco")
    states = [state(f"r{i:03d}@x.com", 1, cities[i % 4]) for i in range(61)]
    # Projected before the segment existed: no memberships yet.
    assert (
        await resources.projection.write(
            contact_writes(states, {}, {}, now=NOW, topic=topic), "seeded"
        )
        == []
    )
    await resources.segments.apply_virtual(
        virtual({"all": [{"field": "City", "op": "equals", "value": "lima"}]}, 1)
    )
    rebuilder = Rebuilder(
        resources.segments,
        resources.projection,
        resources.relay,
        resources.publisher,
        topic=topic,
        owner="w1",
        page_size=7,
        pages_in_flight=3,
    )
    assert await rebuilder.run_one() is True
    assert await rebuilder.run_one() is False
    expected = [s.key for s in states if s.view is not None and s.view.fields["city"] == "Lima"]
    assert [m["key"] async for page in resources.members.pages("v9") for m in page] == expected
    document = await resources.segments.get("v9") or {}
    assert document["rebuild"]["pending"] is False
    last = document["rebuild"]["last"]
    assert (last["checked"], last["members"], last["entered"], last["left"]) == (61, 31, 31, 0)

    def rebuilt(envelopes: list[Any]) -> bool:
        return any(e.type == "contacts.segment.rebuilt" for e in envelopes)

    envelopes = await read_envelopes(topic, until=rebuilt)
    entered = sorted(e.data["key"] for e in envelopes if e.type == ENTERED)
    assert entered == expected
    # The rebuild's own event, like its members', in CloudEvents structured mode.
    read = await read_cloud_events(topic, count=len(envelopes))
    assert {r.content_type for r in read} == {"application/cloudevents+json"}
    assert {r.event["type"] for r in read} == {ENTERED, "contacts.segment.rebuilt"}


async def test_an_erased_contact_keeps_no_fields_and_leaves_its_segments(
    resources: Resources, topic: str, read_envelopes: Any
) -> None:
    await resources.schemas.apply(
        ProfileSchema("p1", "acct", ProfileType.REGULAR, FIELDS, 1), deleted=False
    )
    await resources.segments.apply_virtual(
        virtual({"all": [{"field": "City", "op": "equals", "value": "Lima"}]}, 1)
    )
    segmenter = Segmenter(resources.segments, resources.projection, resources.relay, topic=topic)
    contact = ContactSnapshot(
        id="p1:f@x.com",
        account_id="acct",
        profile_id="p1",
        key="f@x.com",
        fields={"email": "f@x.com", "city": "Lima"},
        status=ContactStatus.ACTIVE,
        status_source="api",
        status_changed_at=NOW,
        source="api",
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )
    erasure = ContactDeleted(
        contact_id=contact.id,
        account_id="acct",
        profile_id="p1",
        key=contact.key,
        version=2,
        status=ContactStatus.ACTIVE,
        created_at=NOW,
        source="webhook:s1",
        erased=True,
    )
    events: list[DomainEvent] = [ContactCreated(contact=contact), erasure]
    for event in events:
        state = contact_state(event, "acct")
        assert state is not None
        await segmenter.apply_states([state])

    document = (await resources.projection.load([contact.id]))[contact.id]
    assert (document["deleted"], document["fields"], document["segments"]) == (True, {}, {})
    assert (document["created_at"], document["updated_at"]) == (None, None)
    assert "Lima" not in repr(document)  # no value of its fields anywhere
    assert await resources.members.get("v9", contact.key) is None
    envelopes = await read_envelopes(topic, until=lambda e: len(e) >= 2)
    assert [(e.type, e.data.get("reason")) for e in envelopes] == [
        (ENTERED, None),
        ("contacts.segment.contact_left", "contact_deleted"),
    ]
