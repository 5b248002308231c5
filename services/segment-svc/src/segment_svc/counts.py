"""Member counts, in all and per status, folded from `segments.events`, as contact-svc folds its
statistics (ADR 6): each partition of the topic keeps a *share* of each segment's counts with the
offset it has counted to, so a redelivered event counts nothing twice; a *mark* per segment and
contact (member or not, with which status, by which event) tells a copy of an event, published
again after a crash at a later offset, from a change. Reading counts sums at most one share per
partition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contacts_shared.events import (
    ContactEnteredSegment,
    MembershipEvent,
    SegmentMemberStatusChanged,
    event_of,
)
from contacts_shared.kafka import Record

TOTAL = "members"


@dataclass(frozen=True)
class Standing:
    """A contact's membership of a segment: member or not, and its status as counted."""

    member: bool
    status: str


OUTSIDE = Standing(False, "")


@dataclass(frozen=True)
class Mark:
    """A contact's standing as last counted, by the event of `sequence` read at `offset`, and
    its standing before that event (for that event delivered again)."""

    standing: Standing
    before: Standing
    sequence: int
    offset: int


@dataclass(frozen=True)
class Change:
    """A membership event: the standing it leaves the contact in."""

    segment_id: str
    contact_id: str
    standing: Standing
    sequence: int
    offset: int


@dataclass(frozen=True)
class Fold:
    """What a partition's batch changes: marks to write first, then count deltas per segment
    (`members` and per status) to add to that partition's shares, once, up to `offset`."""

    partition: int
    offset: int
    marks: dict[tuple[str, str], Mark]
    deltas: dict[str, dict[str, int]]


def membership_changes(records: Sequence[Record]) -> list[Change]:
    """The membership events among `records`."""
    changes = []
    for record in records:
        parsed = event_of(record.value)
        if parsed is None or not isinstance(parsed[1], MembershipEvent):
            continue
        event = parsed[1]
        member = isinstance(event, ContactEnteredSegment | SegmentMemberStatusChanged)
        standing = Standing(member, event.status.value if member else "")
        changes.append(
            Change(event.segment_id, event.contact_id, standing, event.sequence, record.offset)
        )
    return changes


def fold(
    partition: int,
    changes: Sequence[Change],
    marks: Mapping[tuple[str, str], Mark],
    counted_to: Mapping[str, int],
    last_offset: int,
) -> Fold:
    """Count one partition's batch of membership changes against the marks held: each change
    takes out what the contact counted for before it and adds what it counts for after. A
    change no newer than the mark (by sequence) read at another offset is a copy: not counted.
    A change at or below the offset its segment's share counted to (`counted_to`) was
    counted already; one above it at the mark's own offset is a redelivery whose share was not
    written: it counts from the standing the mark kept from before it."""
    held = dict(marks)
    deltas: dict[str, Counter[str]] = {}
    written: dict[tuple[str, str], Mark] = {}
    for change in changes:
        if change.offset <= counted_to.get(change.segment_id, -1):
            continue
        key = (change.segment_id, change.contact_id)
        mark = held.get(key)
        if mark is None:
            before = OUTSIDE
        elif mark.offset == change.offset:
            before = mark.before
        elif change.sequence <= mark.sequence:
            continue
        else:
            before = mark.standing
        delta = deltas.setdefault(change.segment_id, Counter())
        for standing, sign in ((before, -1), (change.standing, 1)):
            if standing.member:
                delta[TOTAL] += sign
                delta[standing.status] += sign
        held[key] = written[key] = Mark(change.standing, before, change.sequence, change.offset)
    return Fold(
        partition,
        last_offset,
        written,
        {segment: {k: v for k, v in d.items() if v} for segment, d in deltas.items()},
    )
