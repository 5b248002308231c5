"""Member counts folded from `segments.events`, as contact-svc folds its statistics (ADR 6):
each partition of the topic keeps a *share* of each segment's count with the offset it has
counted to, so redelivery counts nothing twice; a *mark* per segment and contact (in or not,
at which offset) tells a copy of an event (published again after a crash, at a later offset)
from a change. Reading a count is a sum over at most one share per partition."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contacts_shared.events import ContactEnteredSegment, ContactLeftSegment, event_of
from contacts_shared.kafka import Record


@dataclass(frozen=True)
class Mark:
    """A contact's membership of a segment as last counted: by the event of `sequence`, read
    at `offset`."""

    member: bool
    sequence: int
    offset: int


@dataclass(frozen=True)
class Change:
    segment_id: str
    contact_id: str
    member: bool
    sequence: int
    offset: int


@dataclass(frozen=True)
class Fold:
    """What a partition's batch changes: marks to write first, then count deltas per segment
    to add to that partition's shares, once, up to `offset`."""

    partition: int
    offset: int
    marks: dict[tuple[str, str], Mark]
    deltas: dict[str, int]


def membership_changes(records: Sequence[Record]) -> list[Change]:
    """The membership events among `records`."""
    changes = []
    for record in records:
        parsed = event_of(record.value)
        if parsed is None:
            continue
        event = parsed[1]
        if isinstance(event, ContactEnteredSegment | ContactLeftSegment):
            member = isinstance(event, ContactEnteredSegment)
            changes.append(
                Change(event.segment_id, event.contact_id, member, event.sequence, record.offset)
            )
    return changes


def fold(
    partition: int,
    changes: Sequence[Change],
    marks: Mapping[tuple[str, str], Mark],
    counted_to: Mapping[str, int],
    last_offset: int,
) -> Fold:
    """Count one partition's batch of membership changes against the marks held. A change no
    newer than the mark (by sequence), read at another offset, is a copy published again after
    a crash: not counted. A change at or below the offset its segment's share has counted to
    (`counted_to`) is a redelivery: not counted either."""
    held = dict(marks)
    deltas: dict[str, int] = defaultdict(int)
    written: dict[tuple[str, str], Mark] = {}
    for change in changes:
        if change.offset <= counted_to.get(change.segment_id, -1):
            continue
        key = (change.segment_id, change.contact_id)
        mark = held.get(key)
        if mark is not None and (
            change.sequence < mark.sequence
            or (change.sequence == mark.sequence and change.offset != mark.offset)
        ):
            continue
        # Membership events are changes: one that is not a copy moves the count.
        deltas[change.segment_id] += 1 if change.member else -1
        held[key] = written[key] = Mark(change.member, change.sequence, change.offset)
    return Fold(partition, last_offset, written, dict(deltas))
