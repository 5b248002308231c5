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
    """A contact's standing as last counted, by the event of `sequence` read at `offset`; and
    the standing and sequence counted before the batch that counted it, which hold again while
    that batch's share is unwritten."""

    standing: Standing
    sequence: int
    offset: int
    before: Standing
    before_sequence: int


def last_counted(mark: Mark | None, share_offset: int) -> tuple[Standing, int]:
    """A contact's standing and sequence in its segment's share, which counted to
    `share_offset`. Marks are written before the shares, so a crash between the two loses
    nothing: a mark past the share's offset was written by a batch whose share was not, and
    which is being delivered again; its changes count again, from the standing before it."""
    if mark is None:
        return OUTSIDE, 0
    if mark.offset > share_offset:
        return mark.before, mark.before_sequence
    return mark.standing, mark.sequence


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
    change at or below the offset its segment's share counted to (`counted_to`) was counted
    already; one no newer (by sequence) than the contact's last counted change is a copy,
    published again after a crash at a later offset: not counted either."""
    before: dict[tuple[str, str], tuple[Standing, int]] = {}
    deltas: dict[str, Counter[str]] = {}
    written: dict[tuple[str, str], Mark] = {}
    for change in changes:
        share_offset = counted_to.get(change.segment_id, -1)
        if change.offset <= share_offset:
            continue
        key = (change.segment_id, change.contact_id)
        if key not in before:
            before[key] = last_counted(marks.get(key), share_offset)
        last = written.get(key)
        standing, sequence = (last.standing, last.sequence) if last else before[key]
        if change.sequence <= sequence:
            continue
        delta = deltas.setdefault(change.segment_id, Counter())
        for counted, sign in ((standing, -1), (change.standing, 1)):
            if counted.member:
                delta[TOTAL] += sign
                delta[counted.status] += sign
        written[key] = Mark(change.standing, change.sequence, change.offset, *before[key])
    return Fold(
        partition,
        last_offset,
        written,
        {segment: {k: v for k, v in d.items() if v} for segment, d in deltas.items()},
    )
