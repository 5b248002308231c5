"""Incremental membership equals a from-scratch evaluation of the final state, whatever the
order, duplication and batching of contact events and rules changes (property-based, pure:
the projection is replayed in memory exactly as the worker writes it)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contacts_shared.rules import RuleGroup
from contacts_shared.schema import ContactStatus, FieldSpec, FieldType
from segment_svc.evaluate import ContactView, Segment
from segment_svc.membership import (
    ContactState,
    Write,
    contact_writes,
    newest_states,
    segment_writes,
)

PROFILE = "p1"
FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="City", key="city", type=FieldType.TEXT),
    FieldSpec(name="Age", key="age", type=FieldType.NUMBER),
    FieldSpec(name="Joined", key="joined", type=FieldType.DATE),
)
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
KEYS = ("a@x.com", "b@x.com", "c@x.com", "d@x.com")
SEGMENTS = ("v1", "v2")

conditions = st.one_of(
    st.builds(
        lambda op, city: {"field": "City", "op": op, "value": city},
        st.sampled_from(["equals", "not_equals", "contains"]),
        st.sampled_from(["Lima", "Santiago", "San"]),
    ),
    st.builds(
        lambda op, age: {"field": "Age", "op": op, "value": age},
        st.sampled_from(["gt", "lte", "not_equals"]),
        st.integers(18, 60),
    ),
    st.builds(
        lambda days: {"field": "Joined", "op": "within_last_days", "value": days},
        st.integers(1, 30),
    ),
    st.builds(
        lambda status: {"field": "status", "op": "is", "value": status},
        st.sampled_from(["active", "unsubscribed"]),
    ),
)
rules = st.builds(
    lambda combinator, children: {combinator: children},
    st.sampled_from(["all", "any"]),
    st.lists(conditions, min_size=1, max_size=3),
)
# The content of each version of each contact; a version None is a deletion.
contact_content = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "city": st.sampled_from(["Lima", "Santiago", "", "San Bernardo"]),
            "age": st.one_of(st.none(), st.integers(15, 70)),
            "joined": st.one_of(
                st.none(), st.integers(0, 60).map(lambda d: date(2026, 11, 29) - timedelta(d))
            ),
            "status": st.sampled_from([ContactStatus.ACTIVE, ContactStatus.UNSUBSCRIBED]),
        }
    ),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("contact"), st.sampled_from(KEYS), st.integers(1, 5)),
        st.tuples(st.just("rules"), st.sampled_from(SEGMENTS), rules),
        st.tuples(st.just("rebuild"), st.sampled_from(SEGMENTS), st.none()),
    ),
    max_size=40,
)


def state(key: str, version: int, content: dict[str, Any] | None) -> ContactState:
    if content is None:
        return ContactState(
            f"{PROFILE}:{key}", "acct", PROFILE, key, version, ContactStatus.ACTIVE, None
        )
    fields = {"email": key, "city": content["city"], "age": content["age"]}
    if content["joined"] is not None:
        fields["joined"] = content["joined"].isoformat()
    view = ContactView(fields, content["status"], NOW - timedelta(days=90), NOW)
    return ContactState(f"{PROFILE}:{key}", "acct", PROFILE, key, version, content["status"], view)


class Replay:
    """The projection and the membership events a subscriber has seen, in memory."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.segments: dict[str, Segment] = {}
        self.seen: dict[str, set[str]] = {vid: set() for vid in SEGMENTS}
        self.event_ids: set[str] = set()

    def apply(self, writes: list[Write]) -> None:
        for held, fields, entries in writes:
            assert (self.documents.get(fields["_id"]) is None) == (held is None)
            self.documents[fields["_id"]] = {**fields, "rev": (held or {"rev": 0})["rev"] + 1}
            for entry in entries:
                if entry["kind"] == "status":
                    continue
                assert entry["envelope"]["id"] not in self.event_ids, (
                    "a membership event told twice"
                )
                self.event_ids.add(entry["envelope"]["id"])
                members = self.seen[entry["segment_id"]]
                if entry["kind"] == "entered":
                    assert entry["contact_id"] not in members
                    members.add(entry["contact_id"])
                else:
                    members.remove(entry["contact_id"])

    def contacts(self, states: list[ContactState]) -> None:
        by_profile = {PROFILE: list(self.segments.values())}
        batch = list(newest_states(states).values())
        self.apply(contact_writes(batch, self.documents, by_profile, now=NOW, topic="t"))

    def rules(self, vid: str, tree: dict[str, Any], version: int) -> None:
        self.segments[vid] = Segment(
            vid, "acct", PROFILE, RuleGroup.model_validate(tree), version, FIELDS
        )

    def rebuild(self, vid: str) -> None:
        if vid in self.segments:
            writes = segment_writes(
                self.segments[vid], list(self.documents.values()), deleted=False, now=NOW, topic="t"
            )
            self.apply(writes)


@settings(max_examples=300, deadline=None)
@given(
    contents=st.dictionaries(
        st.tuples(st.sampled_from(KEYS), st.integers(1, 5)), contact_content, min_size=len(KEYS) * 5
    ),
    ops=operations,
    batch_sizes=st.lists(st.integers(1, 6), min_size=1, max_size=10),
)
def test_incremental_membership_equals_evaluation_from_scratch(
    contents: dict[tuple[str, int], dict[str, Any] | None],
    ops: list[tuple[str, str, Any]],
    batch_sizes: list[int],
) -> None:
    replay = Replay()
    newest: dict[str, ContactState] = {}
    pending: list[ContactState] = []
    rules_version = 0
    sizes = iter(batch_sizes * 50)
    limit = next(sizes)
    for kind, target, detail in ops:
        if kind == "contact":
            event = state(target, detail, contents[(target, detail)])
            pending.append(event)
            if event.contact_id not in newest or event.version > newest[event.contact_id].version:
                newest[event.contact_id] = event
            if len(pending) >= limit:
                replay.contacts(pending)
                pending, limit = [], next(sizes)
        elif kind == "rules":
            rules_version += 1
            replay.rules(target, detail, rules_version)
        else:
            # Rebuilds run when they run: contact events keep arriving in between.
            replay.rebuild(target)
    replay.contacts(pending)
    for vid in replay.segments:
        replay.rebuild(vid)

    for vid, segment in replay.segments.items():
        expected = {
            contact_id
            for contact_id, final in newest.items()
            if final.view is not None and segment.admits(final.view, NOW.date())
        }
        held = {i for i, d in replay.documents.items() if vid in d["segments"]}
        assert held == expected
        assert replay.seen[vid] == expected
