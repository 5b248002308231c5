"""An import: its options, status, checkpoint and counts, and the events of its changes.
Pure: no I/O.

Counts are folded exactly from contact-svc's per-row outcomes. Rows go to contact-svc
numbered per partition (0, 1, 2, ...) by the order they appear in the file, so a row sent
twice carries the same number. Outcomes come back in that order per partition, possibly
repeated after a redelivery; an import keeps, per partition, the highest number counted (the
watermark) and counts only what lies beyond it (ADR 10)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from contacts_shared.commands import ImportAction, PurgeForImport, RowOutcome
from contacts_shared.events import (
    DomainEvent,
    ImportCancelled,
    ImportCompleted,
    ImportFailed,
    ImportProgressed,
    ImportQueued,
    ImportSnapshot,
    ImportStarted,
)
from contacts_shared.values import DateOrder

# ImportProgressed is told at most this often per import.
PROGRESS_EVERY = timedelta(seconds=1)
OUTCOME_COUNTS = tuple(outcome.value for outcome in RowOutcome)


@dataclass
class Progress:
    """What an import has done so far: rows sent per partition (known once sending ends),
    the watermark per partition, and the outcome counts up to the watermarks."""

    sent: dict[int, int] = field(default_factory=dict)  # partition -> rows sent to it
    counted: dict[int, int] = field(default_factory=dict)  # partition -> rows counted
    outcomes: Counter[str] = field(default_factory=Counter)

    def fold(self, partition: int, rows: Iterable[tuple[int, int, RowOutcome]]) -> bool:
        """Count the rows beyond the partition's watermark, in order; False if all were
        copies. A row past a gap is counted too (rows are never skipped on the way here, so a
        gap would mean a lost result, and counting on is better than waiting forever)."""
        watermark = self.counted.get(partition, 0)
        moved = False
        for sequence, _line, outcome in rows:
            if sequence < watermark:
                continue  # a copy of a row counted already
            self.outcomes[outcome.value] += 1
            watermark, moved = sequence + 1, True
        self.counted[partition] = watermark
        return moved

    @property
    def rows_counted(self) -> int:
        return sum(self.counted.values())

    def all_counted(self) -> bool:
        """Every row sent has its outcome (once sending has ended and said how many)."""
        return all(self.counted.get(p, 0) >= n for p, n in self.sent.items())


class ImportStatus(StrEnum):
    QUEUED = "queued"
    VALIDATING = "validating"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (ImportStatus.QUEUED, ImportStatus.VALIDATING, ImportStatus.RUNNING)


FINISHING_EVENTS: dict[ImportStatus, type[DomainEvent]] = {
    ImportStatus.COMPLETED: ImportCompleted,
    ImportStatus.COMPLETED_WITH_ERRORS: ImportCompleted,
    ImportStatus.FAILED: ImportFailed,
    ImportStatus.CANCELLED: ImportCancelled,
}


@dataclass(frozen=True)
class ReadOptions:
    """How to read the upload and match its columns."""

    delimiter: str | None = None
    encoding: str | None = None
    date_order: DateOrder = DateOrder.DAY_FIRST
    mapping: dict[str, str | None] = field(default_factory=dict)  # None: skip the column
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checkpoint:
    """Rows whose commands Kafka has acknowledged: up to `line`, with what was read and
    refused up to there, and the rows sent per partition."""

    line: int = 0
    rows_read: int = 0
    refused: int = 0
    sent: dict[int, int] = field(default_factory=dict)
    bytes_read: int = 0  # of the upload, fed to the reader up to here


@dataclass(frozen=True)
class Completion:
    """How far an import is: the upload's bytes, read so far and in all; its rows, done
    (applied or refused) and in all (known once read); and a percentage."""

    bytes_total: int
    bytes_read: int
    rows_total: int | None
    rows_done: int
    percent: float


def completion(job: ImportJob) -> Completion:
    """Until the file is read, rows done of the rows the bytes read so far promise (rows read
    scaled by bytes total over bytes read); then rows done of rows total. 100 only once
    completed: a failed or cancelled import stays where it stopped."""
    checkpoint = job.checkpoint
    done = job.progress.rows_counted + checkpoint.refused
    rows_total = checkpoint.rows_read if job.sending_done else None
    bytes_read = job.size if job.sending_done else min(checkpoint.bytes_read, job.size)
    if job.status in (ImportStatus.COMPLETED, ImportStatus.COMPLETED_WITH_ERRORS):
        percent = 100.0
    elif checkpoint.rows_read == 0 or job.size == 0:
        percent = 0.0
    else:
        # rows done / (rows read * bytes total / bytes read), the bytes giving the estimate
        fraction = done * bytes_read / (checkpoint.rows_read * job.size)
        # Not 100 before the end: an overwrite's purge, or the last outcomes, may remain.
        percent = min(round(100 * fraction, 1), 99.9)
    return Completion(job.size, bytes_read, rows_total, done, percent)


@dataclass
class ImportJob:
    """One import. Its writers (the worker holding the lease, the consumer of its outcomes)
    each read it, change it, and write it back if nobody wrote in between (`version`)."""

    id: str
    account_id: str
    profile_id: str
    action: ImportAction
    reference: str | None
    file_name: str | None
    size: int
    upload_id: str
    options: ReadOptions
    created_at: datetime
    status: ImportStatus = ImportStatus.QUEUED
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    sending_done: bool = False
    progress: Progress = field(default_factory=Progress)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    problems: tuple[dict[str, str], ...] = ()
    header: tuple[str, ...] = ()
    loose_matches: tuple[tuple[str, str], ...] = ()
    lease_owner: str | None = None
    lease_until: datetime | None = None
    progress_told_at: datetime | None = None
    purge_requested: bool = False  # an overwrite's purge was queued
    deleted: int | None = None  # what the purge deleted, once it reported
    version: int = 1
    events: list[DomainEvent] = field(default_factory=list, compare=False)
    commands: list[PurgeForImport] = field(default_factory=list, compare=False)

    @classmethod
    def queue(cls, **details: Any) -> ImportJob:
        job = cls(**details)
        job.events.append(ImportQueued(job=job.snapshot()))
        return job

    def holds_lease(self, owner: str) -> bool:
        return self.lease_owner == owner and not self.status.finished

    def renew(self, until: datetime) -> None:
        self.lease_until = until

    def start(self, now: datetime) -> None:
        """A worker begins (or, after a crash, resumes) reading the file."""
        if self.started_at is None:
            self.started_at = now
            self.status = ImportStatus.VALIDATING
            self._tell(ImportStarted)

    def run(self, header: Sequence[str], loose_matches: Sequence[tuple[str, str]]) -> None:
        """The header matched the profile: rows go out."""
        self.header, self.loose_matches = tuple(header), tuple(loose_matches)
        self.status = ImportStatus.RUNNING

    def reach(self, checkpoint: Checkpoint, *, done: bool, now: datetime) -> None:
        """Kafka acknowledged every row up to the checkpoint (all of them when `done`)."""
        self.checkpoint, self.sending_done = checkpoint, done
        self.progress.sent = dict(checkpoint.sent)
        self.finish_if_counted(now)

    def fold(
        self, partition: int, rows: Sequence[tuple[int, int, RowOutcome]], now: datetime
    ) -> bool:
        """Count outcomes (see `Progress.fold`); False if all were copies."""
        if not self.progress.fold(partition, rows):
            return False
        if self.progress_told_at is None or now - self.progress_told_at >= PROGRESS_EVERY:
            self.progress_told_at = now
            self._tell(ImportProgressed)
        self.finish_if_counted(now)
        return True

    def finish_if_counted(self, now: datetime) -> None:
        """Complete once sending has ended and every row sent has its outcome; an overwrite
        first has the profile's other contacts deleted, and completes when that is done."""
        if not (self.sending_done and self.progress.all_counted()) or self.status.finished:
            return
        if self.action is ImportAction.OVERWRITE and self.deleted is None:
            if not self.purge_requested:
                self.purge_requested = True
                self.commands.append(
                    PurgeForImport(
                        import_id=self.id, account_id=self.account_id, profile_id=self.profile_id
                    )
                )
            return
        refused = self.checkpoint.refused
        status = ImportStatus.COMPLETED_WITH_ERRORS if refused else ImportStatus.COMPLETED
        self.finish(status, now)

    def purged(self, deleted: int, now: datetime) -> bool:
        """The overwrite's purge is done; False if that was known already."""
        if self.deleted is not None:
            return False
        self.deleted = deleted
        self.finish_if_counted(now)
        return True

    def finish(
        self,
        status: ImportStatus,
        now: datetime,
        *,
        error: str | None = None,
        problems: Sequence[dict[str, str]] = (),
    ) -> bool:
        """End the import with `status`; False if it had ended already."""
        if self.status.finished:
            return False
        self.status, self.finished_at = status, now
        self.error, self.problems = error, tuple(problems)
        self.lease_owner = self.lease_until = None
        self._tell(FINISHING_EVENTS[status])
        return True

    @property
    def counts(self) -> dict[str, int]:
        outcomes = self.progress.outcomes
        return {
            "read": self.checkpoint.rows_read,
            "refused": self.checkpoint.refused,
            "applied": self.progress.rows_counted,
            **{outcome: outcomes.get(outcome, 0) for outcome in OUTCOME_COUNTS},
            "deleted": self.deleted or 0,
        }

    def snapshot(self) -> ImportSnapshot:
        return ImportSnapshot(
            id=self.id,
            account_id=self.account_id,
            profile_id=self.profile_id,
            action=self.action,
            reference=self.reference,
            file_name=self.file_name,
            size=self.size,
            status=self.status.value,
            counts=self.counts,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            problems=list(self.problems),
            header=list(self.header),
            version=self.version,
        )

    def _tell(self, event_type: type[DomainEvent]) -> None:
        self.version += 1
        self.events.append(event_type.model_validate({"import": self.snapshot()}))

    def take_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events

    def take_commands(self) -> list[PurgeForImport]:
        commands, self.commands = self.commands, []
        return commands
