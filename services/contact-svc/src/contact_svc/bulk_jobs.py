"""A bulk action on a profile's contacts, as a job: a status change (with a reason) or a
deletion of the contacts named by key or matching a filter, sent page by page through
`contacts.commands` and counted as their writer applies them (ADR 18). Pure: no I/O."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from contact_svc.listing_handlers import ContactFilter
from contacts_shared.commands import BulkAction, BulkChange, BulkOutcome
from contacts_shared.schema import ContactStatus

# Keys sent per page: a page is checkpointed as a whole, so a crash sends at most one again.
BULK_PAGE = 1000
# Keys one request may name; more are selected by a filter.
MAX_BULK_KEYS = 10_000


class BulkState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # selection read and sent page by page
    APPLYING = "applying"  # all sent; waiting for the last pages to be applied
    COMPLETED = "completed"
    FAILED = "failed"


FINISHED = (BulkState.COMPLETED, BulkState.FAILED)


@dataclass(frozen=True)
class PendingPage:
    """A page about to be sent: written before it leaves, so a resumed sender sends the same
    keys under the same number, whatever the filter selects by then."""

    number: int
    keys: tuple[str, ...]


@dataclass
class BulkJob:
    """The job's state. Two writers share its document, each on fields of its own: the sender
    holding the lease (selection, pages sent) and the command consumer (pages counted per
    partition and the outcomes), so neither's write can undo the other's."""

    id: str
    account_id: str
    profile_id: str
    action: BulkAction
    created_at: datetime
    total: int = 0  # what the selection held when the job was accepted
    status: ContactStatus | None = None
    reason: str | None = None
    keys: tuple[str, ...] | None = None  # the selection by key, sorted, each once
    filter: ContactFilter | None = None  # else the selection by filter (all: no filter)
    state: BulkState = BulkState.QUEUED
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    after_key: str | None = None  # the last key sent
    pending: PendingPage | None = None
    pages: int = 0  # pages sent
    sent_to: dict[int, int] = field(default_factory=dict)  # partition -> last page sent there
    selected: int = 0  # keys sent
    counted: dict[int, int] = field(default_factory=dict)  # partition -> last page counted
    counts: dict[BulkOutcome, int] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_until: datetime | None = None

    def keys_after(self, limit: int) -> tuple[str, ...]:
        """The next page of a selection by key."""
        assert self.keys is not None
        start = 0 if self.after_key is None else bisect.bisect_right(self.keys, self.after_key)
        return self.keys[start : start + limit]

    def pend(self, keys: Sequence[str], now: datetime) -> PendingPage:
        if self.state is BulkState.QUEUED:
            self.state, self.started_at = BulkState.SENDING, now
        self.pending = PendingPage(self.pages + 1, tuple(keys))
        return self.pending

    def sent(self, partitions: Sequence[int]) -> None:
        """The pending page is on Kafka, in these partitions."""
        assert self.pending is not None
        page = self.pending
        self.pages, self.selected = page.number, self.selected + len(page.keys)
        self.sent_to.update(dict.fromkeys(partitions, page.number))
        self.after_key, self.pending = page.keys[-1], None

    def all_sent(self, now: datetime) -> None:
        if self.state is BulkState.QUEUED:
            self.started_at = now
        self.state = BulkState.APPLYING

    def fail(self, error: str, now: datetime) -> None:
        self.state, self.error, self.finished_at = BulkState.FAILED, error, now

    @property
    def applied(self) -> bool:
        """Every page sent has been counted: the job is done."""
        return self.state is BulkState.APPLYING and all(
            self.counted.get(partition, 0) >= page for partition, page in self.sent_to.items()
        )

    @property
    def done(self) -> int:
        """Selected contacts whose outcome is counted."""
        return sum(self.counts.values())

    @property
    def percent(self) -> float:
        """How far along, by outcomes counted over what the selection holds (its count when
        the job was accepted, until every page is sent)."""
        if self.state is BulkState.COMPLETED:
            return 100.0
        whole = self.selected if self.state is BulkState.APPLYING else max(self.total, 1)
        return round(min(99.9, 100 * self.done / max(whole, 1)), 1)

    def change(self, page: PendingPage, keys: Sequence[str]) -> BulkChange:
        """The command carrying `keys` of `page` (those of one partition)."""
        return BulkChange(
            job_id=self.id,
            account_id=self.account_id,
            profile_id=self.profile_id,
            page=page.number,
            keys=tuple(keys),
            action=self.action,
            status=self.status,
            reason=self.reason,
        )


def by_partition(keys: Sequence[str], partition: Callable[[str], int]) -> dict[int, list[str]]:
    """Keys grouped by the partition each maps to, in order."""
    grouped: dict[int, list[str]] = {}
    for key in keys:
        grouped.setdefault(partition(key), []).append(key)
    return grouped
