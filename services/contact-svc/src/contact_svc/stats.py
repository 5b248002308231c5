"""Profile statistics folded from contact events, so that reading them never counts contacts.

The counts are split by partition of `contacts.events`: each partition's share is written only
by the consumer that owns the partition, so it needs no atomic counters across writers, and the
offset of the last event folded in makes a redelivered record change nothing. An event the
outbox relay published twice sits at two offsets; each contact's mark tells (`to_count`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactImported,
    ContactStatusChanged,
    DomainEvent,
)
from contacts_shared.schema import ContactStatus

# Days of "added" counts kept: enough for the 30-day figure; older days are dropped.
ADDED_WINDOW_DAYS = 30


@dataclass(frozen=True)
class CountedMark:
    """The last event of a contact that was counted: its version and the offset it was at; and
    the version counted before the batch that counted it (0: none), which holds again while
    that batch's share is unwritten."""

    version: int
    offset: int
    before: int


def last_counted(mark: CountedMark | None, share_offset: int) -> int:
    """The contact's last version in its profile's share, which counted to `share_offset`.

    Marks are written before the shares, so a crash between the two loses nothing: a mark
    past the share's offset was written by a batch whose share was not, and which is being
    delivered again; its events count again, from the version counted before it."""
    if mark is None:
        return 0
    return mark.before if mark.offset > share_offset else mark.version


@dataclass(frozen=True)
class EventAt:
    """A contact event of a partition, at its offset, published at `at`."""

    offset: int
    at: datetime
    event: DomainEvent
    contact_id: str
    version: int
    profile_id: str


def to_count(
    events: Sequence[EventAt],
    marks: Mapping[str, CountedMark],
    counted_to: Mapping[str, int],
) -> tuple[dict[str, CountedMark], dict[str, list[EventAt]]]:
    """Of a partition's batch, in offset order, the marks to write first and then the events
    to count, by profile. An event at or below its profile share's offset (`counted_to`) is
    counted already. A contact's events arrive in version order, but the outbox relay may
    publish one again later (after a crash between publishing and clearing it), at another
    offset: an event no newer than the contact's last counted version is such a copy."""
    before: dict[str, int] = {}
    marked: dict[str, CountedMark] = {}
    by_profile: dict[str, list[EventAt]] = {}
    for each in events:
        share_offset = counted_to.get(each.profile_id, -1)
        if each.offset <= share_offset:
            continue
        if each.contact_id not in before:
            before[each.contact_id] = last_counted(marks.get(each.contact_id), share_offset)
        last = marked.get(each.contact_id)
        if each.version <= (last.version if last else before[each.contact_id]):
            continue
        marked[each.contact_id] = CountedMark(each.version, each.offset, before[each.contact_id])
        by_profile.setdefault(each.profile_id, []).append(each)
    return marked, by_profile


@dataclass
class PartitionCounts:
    """One partition's share of a profile's statistics, as of event `offset`."""

    profile_id: str
    partition: int
    offset: int = -1  # -1: nothing folded in yet
    by_status: dict[str, int] = field(default_factory=dict)
    # Contacts created on each UTC day (ISO date) and not deleted since.
    added_by_day: dict[str, int] = field(default_factory=dict)
    last_change_at: datetime | None = None

    def fold(self, event: DomainEvent, *, offset: int, at: datetime) -> bool:
        """Count the event found at `offset`, published at `at`; False if already counted."""
        if offset <= self.offset:
            return False
        self.offset = offset
        if isinstance(event, ContactCreated):
            self._count(event.contact.status, 1)
            self._added(event.contact.created_at, 1)
        elif isinstance(event, ContactStatusChanged):
            self._count(event.previous_status, -1)
            self._count(event.contact.status, 1)
        elif isinstance(event, ContactImported):
            if event.created:
                self._count(event.contact.status, 1)
                self._added(event.contact.created_at, 1)
            elif event.previous_status is not None:
                self._count(event.previous_status, -1)
                self._count(event.contact.status, 1)
        elif isinstance(event, ContactDeleted):
            self._count(event.status, -1)
            self._added(event.created_at, -1)
        if self.last_change_at is None or at > self.last_change_at:
            self.last_change_at = at
        oldest = _day(at - timedelta(days=ADDED_WINDOW_DAYS - 1))
        self.added_by_day = {d: n for d, n in self.added_by_day.items() if d >= oldest and n}
        return True

    def _count(self, status: ContactStatus, delta: int) -> None:
        self.by_status[status.value] = self.by_status.get(status.value, 0) + delta

    def _added(self, created_at: datetime, delta: int) -> None:
        day = _day(created_at)
        self.added_by_day[day] = self.added_by_day.get(day, 0) + delta


def _day(moment: datetime | date) -> str:
    return moment.date().isoformat() if isinstance(moment, datetime) else moment.isoformat()


@dataclass(frozen=True)
class ProfileStats:
    total: int
    by_status: dict[str, int]
    added_last_7_days: int
    added_last_30_days: int
    # Contacts added each day of the last 30 (UTC), oldest first, days with none included.
    added_by_day: list[DayCount]
    last_change_at: datetime | None


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int


def summarize(parts: list[PartitionCounts], *, today: date) -> ProfileStats:
    """The profile's statistics from its partitions' shares. "Added in the last N days" counts
    contacts created from N-1 days before `today` (UTC) on and still in the profile."""

    days = [today - timedelta(days=back) for back in range(ADDED_WINDOW_DAYS - 1, -1, -1)]
    added = {_day(day): 0 for day in days}
    for part in parts:
        for day, n in part.added_by_day.items():
            if day in added:
                added[day] += n

    def added_since(days: int) -> int:
        return sum(list(added.values())[-days:])

    by_status = {
        status.value: sum(p.by_status.get(status.value, 0) for p in parts)
        for status in ContactStatus
    }
    changes = [p.last_change_at for p in parts if p.last_change_at is not None]
    return ProfileStats(
        total=sum(by_status.values()),
        by_status=by_status,
        added_last_7_days=added_since(7),
        added_last_30_days=added_since(ADDED_WINDOW_DAYS),
        added_by_day=[DayCount(day, added[_day(day)]) for day in days],
        last_change_at=max(changes, default=None),
    )
