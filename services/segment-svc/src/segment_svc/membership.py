"""Membership changes of one contact, from its newest state and the segments of its profile
(pure). What changes becomes entries: the membership events to publish and the member records
to write, journaled and applied together by the relay (ADR 12)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from contacts_shared.events import (
    ContactDeleted,
    ContactEnteredSegment,
    ContactEvent,
    ContactLeftSegment,
    DomainEvent,
    MembershipEvent,
    SegmentMemberStatusChanged,
    to_envelope,
)
from contacts_shared.mongo import Document
from contacts_shared.sampling import sample_bucket
from contacts_shared.schema import ContactStatus
from segment_svc.evaluate import ContactView, Segment

# Membership event ids are derived from what they say, so an event published again after a
# crash carries the id it had the first time and consumers can drop the copy.
EVENT_ID_NAMESPACE = uuid.UUID("5b0a4ad3-8c4e-4c4c-9d0f-3a1f2f6c2b11")
# The `source` of segment-svc's events.
SOURCE = "/segment-svc"
LeftReason = Literal["rules", "contact_deleted", "segment_deleted"]


@dataclass(frozen=True)
class ContactState:
    """A contact's newest state as its events tell it; `view` is None once deleted."""

    contact_id: str
    account_id: str
    profile_id: str
    key: str
    version: int
    status: ContactStatus
    view: ContactView | None


def contact_state(event: DomainEvent, account_id: str) -> ContactState | None:
    """The state a contact event leaves its contact in; None for other events."""
    if isinstance(event, ContactEvent):
        c = event.contact
        view = ContactView(c.fields, c.status, c.created_at, c.updated_at)
        return ContactState(c.id, c.account_id, c.profile_id, c.key, c.version, c.status, view)
    if isinstance(event, ContactDeleted):
        return ContactState(
            event.contact_id,
            account_id,
            event.profile_id,
            event.key,
            event.version,
            event.status,
            None,
        )
    return None


def newest_states(states: Iterable[ContactState]) -> dict[str, ContactState]:
    """Each contact's newest state among `states` (a batch may hold several of one contact,
    and redelivered or out-of-order ones)."""
    newest: dict[str, ContactState] = {}
    for state in states:
        held = newest.get(state.contact_id)
        if held is None or state.version > held.version:
            newest[state.contact_id] = state
    return newest


@dataclass(frozen=True)
class Member:
    """A contact's membership of one segment: since when, and its status then."""

    since: datetime
    status: ContactStatus


@dataclass(frozen=True)
class MembershipChange:
    """A contact's memberships after a change, and the entries that tell it."""

    members: dict[str, Member]
    entries: list[Document]


def evaluate_memberships(
    state: ContactState,
    held: Mapping[str, Member],
    segments: Sequence[Segment],
    *,
    rev: int,
    now: datetime,
    topic: str,
    gone: Sequence[Segment] = (),
) -> MembershipChange:
    """Evaluate every segment of the contact's profile against its new state; members of the
    `gone` (deleted) segments leave them. Memberships of segments not given stay as held.
    `rev` is the one the contact's document will have once written: each entry carries it, so
    member records and counts follow the newest whatever order copies arrive in."""
    members = dict(held)
    entries: list[Document] = []
    today = now.date()
    for segment in gone:
        if segment.id in members:
            del members[segment.id]
            entries.append(left_entry(segment, state, "segment_deleted", rev, topic))
    for segment in segments:
        was = held.get(segment.id)
        now_in = state.view is not None and segment.admits(state.view, today)
        if now_in and was is None:
            members[segment.id] = Member(now, state.status)
            entries.append(entered_entry(segment, state, now, rev, topic))
        elif not now_in and was is not None:
            del members[segment.id]
            reason: LeftReason = "rules" if state.view is not None else "contact_deleted"
            entries.append(left_entry(segment, state, reason, rev, topic))
        elif now_in and was is not None and was.status is not state.status:
            members[segment.id] = Member(was.since, state.status)
            entries.append(status_entry(segment, state, was, rev, topic))
    return MembershipChange(members, entries)


def _fields(segment: Segment, state: ContactState, rev: int) -> dict[str, Any]:
    return {
        "segment_id": segment.id,
        "base_profile_id": segment.base_profile_id,
        "contact_id": state.contact_id,
        "key": state.key,
        "contact_version": state.version,
        "status": state.status,
        "sequence": rev,
    }


def entered_entry(
    segment: Segment, state: ContactState, since: datetime, rev: int, topic: str
) -> Document:
    event = ContactEnteredSegment(**_fields(segment, state, rev), since=since)
    return {
        **_event_entry(event, segment, topic),
        "kind": "entered",
        "member": member_document(since, state.status),
    }


def left_entry(
    segment: Segment, state: ContactState, reason: LeftReason, rev: int, topic: str
) -> Document:
    event = ContactLeftSegment(**_fields(segment, state, rev), reason=reason)
    return {**_event_entry(event, segment, topic), "kind": "left", "member": None}


def status_entry(
    segment: Segment, state: ContactState, was: Member, rev: int, topic: str
) -> Document:
    """A member's status changed and it stays a member: its member record and the counts
    per status follow."""
    event = SegmentMemberStatusChanged(**_fields(segment, state, rev), previous_status=was.status)
    return {
        **_event_entry(event, segment, topic),
        "kind": "status",
        "member": member_document(was.since, state.status),
    }


def member_document(since: datetime, status: ContactStatus) -> Document:
    return {"since": since, "status": status.value}


def _event_entry(event: MembershipEvent, segment: Segment, topic: str) -> Document:
    event_id = str(
        uuid.uuid5(
            EVENT_ID_NAMESPACE,
            f"{event.event_type}|{event.segment_id}|{segment.rules_version}|"
            f"{event.contact_id}|{event.contact_version}",
        )
    )
    envelope = to_envelope(event, account_id=segment.account_id, source=SOURCE, event_id=event_id)
    return {
        "segment_id": event.segment_id,
        "contact_id": event.contact_id,
        "key": event.key,
        "rev": event.sequence,
        "topic": topic,
        "envelope": envelope.model_dump(mode="json"),
    }


def members_of(document: Mapping[str, Any] | None) -> dict[str, Member]:
    """The memberships a projected contact document holds."""
    stored = (document or {}).get("segments") or {}
    return {vid: Member(m["since"], ContactStatus(m["status"])) for vid, m in stored.items()}


# A contact document's write: (the document as read or None, its new fields, its entries).
Write = tuple[Document | None, Document, list[Document]]
# A projected contact's sample bucket within its profile, `sample_term`, indexed: a preview of
# rules over a large profile reads whole buckets, an unbiased sample (ADR 11, addendum 2026-12).
# Documents written before it was kept lack it until written again (a change of the contact,
# or a rebuild of a segment over its profile: `segment_writes`).
SAMPLE = "sample"


def sample_term(profile_id: str, bucket: int) -> str:
    """The `SAMPLE` value of a profile's contacts in `bucket` (`sample_bucket` of their keys)."""
    return f"{profile_id}:{bucket:03d}"


def projected(state: ContactState, members: Mapping[str, Member]) -> Document:
    """The projection document's fields for a contact's state and memberships."""
    view = state.view
    return {
        "_id": state.contact_id,
        "account_id": state.account_id,
        "profile_id": state.profile_id,
        "key": state.key,
        "version": state.version,
        "status": state.status.value,
        "deleted": view is None,
        "fields": dict(view.fields) if view is not None else {},
        "created_at": view.created_at if view is not None else None,
        "updated_at": view.updated_at if view is not None else None,
        "segments": {vid: member_document(m.since, m.status) for vid, m in members.items()},
        SAMPLE: sample_term(state.profile_id, sample_bucket(state.key)),
    }


def view_of(document: Mapping[str, Any]) -> ContactView | None:
    """What rules read of a projected contact (None once deleted): of a document read with
    some of its values only, those."""
    if document["deleted"]:
        return None
    return ContactView(
        document.get("fields", {}),
        ContactStatus(document["status"]),
        document["created_at"],
        document["updated_at"],
    )


def state_of(document: Mapping[str, Any]) -> ContactState:
    """A projected contact's state, as its last event left it."""
    return ContactState(
        document["_id"],
        document["account_id"],
        document["profile_id"],
        document["key"],
        document["version"],
        ContactStatus(document["status"]),
        view_of(document),
    )


def contact_writes(
    states: Iterable[ContactState],
    held: Mapping[str, Document],
    segments: Mapping[str, Sequence[Segment]],
    *,
    now: datetime,
    topic: str,
) -> list[Write]:
    """The writes that take each contact to its new state, its memberships evaluated against
    its profile's `segments`; a state no newer than the one held changes nothing."""
    writes: list[Write] = []
    for state in states:
        document = held.get(state.contact_id)
        if document is not None and document["version"] >= state.version:
            continue
        change = evaluate_memberships(
            state,
            members_of(document),
            segments.get(state.profile_id, ()),
            rev=1 if document is None else document["rev"] + 1,
            now=now,
            topic=topic,
        )
        writes.append((document, projected(state, change.members), change.entries))
    return writes


def segment_writes(
    segment: Segment, documents: Iterable[Document], *, deleted: bool, now: datetime, topic: str
) -> list[Write]:
    """The writes that bring projected contacts' membership of one segment in line with its
    rules (everyone leaves a deleted segment); contacts whose membership holds are not written,
    unless their document lacks its sample bucket (written before buckets were kept)."""
    writes: list[Write] = []
    for document in documents:
        state = state_of(document)
        change = evaluate_memberships(
            state,
            members_of(document),
            [] if deleted else [segment],
            rev=document["rev"] + 1,
            now=now,
            topic=topic,
            gone=[segment] if deleted else [],
        )
        if change.entries or SAMPLE not in document:
            writes.append((document, projected(state, change.members), change.entries))
    return writes
