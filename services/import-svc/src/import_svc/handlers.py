"""import-svc use cases: plan an upload's header, accept an upload, work an import through
(read, check, send), fold contact-svc's outcomes, and finish the import when every row has one
(ADR 10)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

from contacts_shared.commands import (
    ImportAction,
    ImportContact,
    ImportPurged,
    ImportRowsApplied,
    contact_partition_key,
)
from contacts_shared.events import ImportRowsRefused, RefusedRow, to_envelope
from contacts_shared.kafka import EventPublisher, OutgoingMessage, event_message, partition_of
from contacts_shared.mongo import retry_if_stale
from contacts_shared.profiles import ProfileNotWritable, ProfileSchema, SchemaStore
from contacts_shared.schema import ProfileType
from contacts_shared.values import MAX_TEXT_LENGTH, FieldProblem, ValuesInvalid, values_of
from import_svc.csv_rows import CsvRows, CsvUnreadable, Row
from import_svc.domain import (
    Checkpoint,
    Completion,
    ImportJob,
    ImportStatus,
    ReadOptions,
    completion,
)
from import_svc.header import ColumnPlan, HeaderRefused, check_mapping, plan_columns
from import_svc.plan import ImportPlan, plan_upload
from import_svc.repository import ImportStore

log = logging.getLogger(__name__)
# Rows read between renewals of the worker's lease when nothing is sent (a resumed import
# reads again, without sending, the rows before its checkpoint).
LEASE_RENEWAL_ROWS = 20_000
# A refused row's cells are told cut to this length: no field takes a value this long (the
# reason says so), and a row must fit in a Kafka record.
REFUSED_CELL_CHARS = 4 * MAX_TEXT_LENGTH
# Refused rows told in one event, at most: well under Kafka's 1 MB record.
REFUSED_EVENT_CHARS = 128 * 1024
# The upload is fed to the reader this much at a time (its pieces are 1 MB): the bytes read
# that a checkpoint tells, for an import's percentage, are then at most this far ahead.
FEED_BYTES = 64 * 1024

# Rows of uploads checked, counted once sent on (accepted: as commands to contact-svc; refused:
# told in events with their reasons): `rate()` of it is the import's rows per second.
ROWS = Counter("contacts_import_rows", "Import rows checked and sent on, by outcome", ["outcome"])
ACCEPTED, REFUSED = "accepted", "refused"
for _outcome in (ACCEPTED, REFUSED):
    ROWS.labels(_outcome)  # shown at 0 from the start, so that rate() has a series


class ImportRefused(Exception):
    """An import (or its plan) that cannot be accepted; `status` is the HTTP status to
    answer, `problems` name the offending parameters."""

    def __init__(self, status: int, message: str, problems: Sequence[FieldProblem] = ()) -> None:
        self.status = status
        self.problems = list(problems)
        super().__init__(message)

    @classmethod
    def naming(cls, problems: Sequence[FieldProblem]) -> ImportRefused:
        """A 422 naming each problem's parameter."""
        return cls(422, "; ".join(f"{p.field}: {p.message}" for p in problems), problems)


class ImportNotFound(Exception):
    def __init__(self, import_id: str) -> None:
        super().__init__(f"import {import_id} does not exist")


def now() -> datetime:
    return datetime.now(UTC)


async def accept_import(
    *,
    account_id: str,
    profile_id: str,
    action: ImportAction,
    reference: str | None,
    file_name: str | None,
    upload: AsyncIterator[bytes],
    options: ReadOptions,
    schemas: SchemaStore,
    store: ImportStore,
) -> ImportJob:
    """Check the target and the mapping, store the upload, and queue the import."""
    await importable_schema(schemas, account_id, profile_id, options)
    upload_id, size = await store.store_upload(upload)
    if size == 0:
        raise ImportRefused(422, "the upload is empty")
    job = ImportJob.queue(
        id=uuid.uuid4().hex,
        account_id=account_id,
        profile_id=profile_id,
        action=action,
        reference=reference,
        file_name=file_name,
        size=size,
        upload_id=upload_id,
        options=options,
        created_at=now(),
    )
    await store.add(job)
    return job


async def importable_schema(
    schemas: SchemaStore, account_id: str, profile_id: str, options: ReadOptions
) -> ProfileSchema:
    """The profile to import into, if the account's and regular; its mapping checked."""
    schema = await schemas.get(profile_id)
    if schema is None or schema.account_id != account_id:
        raise ImportRefused(404, f"profile {profile_id} is not known to import-svc")
    if schema.type is ProfileType.VIRTUAL:
        raise ImportRefused(409, "a virtual profile holds no contacts of its own to import")
    if problems := check_mapping(options.mapping, schema.fields):
        raise ImportRefused.naming(problems)
    return schema


async def plan_import(
    *,
    account_id: str,
    profile_id: str,
    data: bytes,
    given_as: str,
    options: ReadOptions,
    region: str,
    schemas: SchemaStore,
) -> ImportPlan:
    """What an import of the file starting with `data` (given as the `given_as` parameter)
    would find in it; nothing stored."""
    schema = await importable_schema(schemas, account_id, profile_id, options)
    try:
        return plan_upload(
            data,
            schema.fields,
            region=region,
            encoding=options.encoding,
            delimiter=options.delimiter,
            mapping=options.mapping,
        )
    except CsvUnreadable as exc:
        raise ImportRefused.naming([FieldProblem(given_as, str(exc))]) from exc


async def owned_import(store: ImportStore, account_id: str, import_id: str) -> ImportJob:
    job = await store.get(import_id)
    if job is None or job.account_id != account_id:
        raise ImportNotFound(import_id)
    return job


async def watch_import(
    store: ImportStore, job: ImportJob, *, every: float, for_at_most: float
) -> AsyncIterator[tuple[ImportJob, Completion]]:
    """The import and how far it is, now and then as stored every `every` seconds (whichever
    replica works on it), until it has finished (that state the last) or `for_at_most`
    seconds have passed. The percentage told never goes back (its estimate from the bytes
    read may dip as a checkpoint sends more rows)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + for_at_most
    told = 0.0
    while True:
        done = completion(job)
        told = max(told, done.percent)
        yield job, replace(done, percent=told)
        if job.status.finished or loop.time() + every > deadline:
            return
        await asyncio.sleep(every)
        job = await owned_import(store, job.account_id, job.id)


async def change_import(
    store: ImportStore, import_id: str, change: Callable[[ImportJob], bool]
) -> ImportJob | None:
    """Read the import, apply `change`, write it back if `change` says so, again while
    another writer got there first; the import as it ends up (None if unknown)."""

    async def attempt() -> ImportJob | None:
        job = await store.get(import_id)
        if job is None:
            return None
        read_version = job.version
        if change(job):
            await store.save(job, expected_version=read_version)
        return job

    return await retry_if_stale(attempt)


async def cancel_import(store: ImportStore, account_id: str, import_id: str) -> ImportJob:
    """Stop an unfinished import where it is; rows already sent stay applied."""
    await owned_import(store, account_id, import_id)
    job = await change_import(
        store, import_id, lambda job: job.finish(ImportStatus.CANCELLED, now())
    )
    assert job is not None
    return job


# -- the worker ----------------------------------------------------------------------------------


@dataclass
class _Sending:
    """Where the pass over the file is: sequences per partition from the file's start (so a
    resumed pass numbers rows as the first did), and what waits for the next checkpoint."""

    job: ImportJob
    schema: ProfileSchema
    partitions: int
    region: str
    plan: ColumnPlan | None = None
    header: list[str] = field(default_factory=list)
    sequences: dict[int, int] = field(default_factory=dict)
    rows_read: int = 0
    refused: int = 0
    line: int = 0
    bytes_read: int = 0  # of the upload, fed to the reader
    commands: list[tuple[int, ImportContact]] = field(default_factory=list)  # with partitions
    refused_rows: list[RefusedRow] = field(default_factory=list)

    def take(self, row: Row) -> None:
        if self.plan is None:
            self.header = row.values
            self.plan = plan_columns(
                row.values,
                self.schema.fields,
                mapping=self.job.options.mapping,
                ignore=self.job.options.ignore,
            )
            return
        self.rows_read += 1
        self.line = row.line
        resent = row.line <= self.job.checkpoint.line  # before the checkpoint: sent already
        try:
            key, values = self._checked(self.plan, row)
        except ValuesInvalid as exc:
            self.refused += 1
            if not resent:
                self.refused_rows.append(
                    RefusedRow(
                        line=row.line,
                        values=[cell[:REFUSED_CELL_CHARS] for cell in row.values],
                        problems=self._problems(exc, row),
                    )
                )
            return
        partition = partition_of(contact_partition_key(self.job.profile_id, key), self.partitions)
        sequence = self.sequences.get(partition, 0)
        self.sequences[partition] = sequence + 1
        if not resent:
            self.commands.append(
                (
                    partition,
                    ImportContact(
                        import_id=self.job.id,
                        account_id=self.job.account_id,
                        profile_id=self.job.profile_id,
                        key=key,
                        values=values,
                        action=self.job.action,
                        line=row.line,
                        sequence=sequence,
                    ),
                )
            )

    def _checked(self, plan: ColumnPlan, row: Row) -> tuple[str, dict[str, Any]]:
        """The row's contact key and typed values; ValuesInvalid names what is wrong."""
        if len(row.values) > len(plan.fields):
            raise ValuesInvalid(
                [
                    FieldProblem(
                        "row", f"has {len(row.values)} values, the header {len(plan.fields)}"
                    )
                ]
            )
        raw_key, raw_values = plan.values(row.values + [""] * (len(plan.fields) - len(row.values)))
        identity = self.schema.identity
        if not raw_key.strip():
            raise ValuesInvalid([FieldProblem(identity.name, "is required")])
        key = self.schema.identity_key(raw_key, self.region)
        # An empty cell leaves the contact's value as it is: imports add and change, not clear.
        values = values_of(
            ((spec, value) for spec, value in raw_values if value.strip()),
            default_region=self.region,
            date_order=self.job.options.date_order,
        )
        return key, values

    def _problems(self, exc: ValuesInvalid, row: Row) -> list[dict[str, str]]:
        """Each problem with the column it came from and the value found there."""
        assert self.plan is not None
        columns = {
            spec.name: index for index, spec in enumerate(self.plan.fields) if spec is not None
        }
        problems = []
        for problem in exc.problems:
            index = columns.get(problem.field)
            found = index is not None and index < len(row.values)
            problems.append(
                {
                    "column": self.header[index] if index is not None else problem.field,
                    "value": row.values[index][:REFUSED_CELL_CHARS]
                    if found and index is not None
                    else "",
                    "reason": problem.message,
                }
            )
        return problems

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            self.line, self.rows_read, self.refused, dict(self.sequences), self.bytes_read
        )


def refusals(
    import_id: str, profile_id: str, rows: Sequence[RefusedRow]
) -> list[ImportRowsRefused]:
    """The refused rows, in order, as events of at most about `REFUSED_EVENT_CHARS` each
    (a row never split)."""
    events: list[ImportRowsRefused] = []
    told: list[RefusedRow] = []
    size = 0
    for row in rows:
        told.append(row)
        size += sum(map(len, row.values)) + sum(len(str(p)) for p in row.problems)
        if size >= REFUSED_EVENT_CHARS:
            events.append(ImportRowsRefused(import_id=import_id, profile_id=profile_id, rows=told))
            told, size = [], 0
    if told:
        events.append(ImportRowsRefused(import_id=import_id, profile_id=profile_id, rows=told))
    return events


@dataclass(frozen=True)
class Worker:
    """Works on one import at a time, forever: claims one whose lease is free or expired,
    works it through, claims the next. An import left by a crashed worker is claimed again
    once its lease runs out, and resumes from its checkpoint. When idle, drops the uploads of
    finished imports."""

    store: ImportStore
    schemas: SchemaStore
    publisher: EventPublisher
    commands_topic: str
    events_topic: str
    events_source: str
    region: str
    rows_per_checkpoint: int
    lease: timedelta
    poll_seconds: float
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                job = await self.store.claim(self.owner, now(), self.lease)
                if job is not None:
                    await self.work_on(job)
                    continue
                await self.store.drop_finished_uploads()  # when idle
            except Exception as exc:  # noqa: BLE001 - a server away: the lease lets it resume
                log.warning("import work failed, will resume", extra={"error": repr(exc)})
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                pass

    async def work_on(self, job: ImportJob) -> None:
        """Read the import's upload from the start, check the header, refuse invalid rows
        with their reasons, and send the valid ones after the checkpoint as commands,
        checkpointing every `rows_per_checkpoint` rows. Stops when the import is cancelled or
        taken over."""
        schema = await self.schemas.get(job.profile_id)
        if schema is None:
            await self._fail(job.id, "the profile is gone")
            return
        if not await self._hold(job.id, lambda job: job.start(now())):
            return
        partitions = await self.publisher.partitions_of(self.commands_topic)
        sending = _Sending(job, schema, partitions, self.region)
        reader = CsvRows(encoding=job.options.encoding, delimiter=job.options.delimiter)
        try:
            async for chunk in self.store.read_upload(job.upload_id):
                # Fed in slices, so a checkpoint's bytes read is within a slice of its rows.
                for start in range(0, len(chunk), FEED_BYTES):
                    piece = chunk[start : start + FEED_BYTES]
                    sending.bytes_read += len(piece)
                    for row in reader.feed(piece):
                        if not await self._take(sending, row):
                            return
                        if len(sending.commands) >= self.rows_per_checkpoint:
                            if not await self._send(sending):
                                return
            for row in reader.close():
                if not await self._take(sending, row):
                    return
        except CsvUnreadable as exc:
            await self._fail(job.id, str(exc))
            return
        if sending.plan is None:
            await self._fail(job.id, "the file has no header")
            return
        await self._send(sending, done=True)

    async def _hold(self, import_id: str, change: Callable[[ImportJob], object]) -> bool:
        """Apply `change` and renew the lease, if this worker still holds it (the import may
        have been cancelled, or taken over after a stall). False: stop."""
        held = False

        def renewed(job: ImportJob) -> bool:
            nonlocal held
            held = job.holds_lease(self.owner)
            if held:
                change(job)
                job.renew(now() + self.lease)
            return held

        await change_import(self.store, import_id, renewed)
        return held

    async def _fail(
        self, import_id: str, error: str, problems: Sequence[dict[str, str]] = ()
    ) -> None:
        await change_import(
            self.store,
            import_id,
            lambda job: job.finish(ImportStatus.FAILED, now(), error=error, problems=problems),
        )

    async def _take(self, sending: _Sending, row: Row) -> bool:
        """Take one record; the header's problems fail the import. False: stop."""
        header = sending.plan is None
        try:
            sending.take(row)
        except HeaderRefused as exc:
            problems = [{"column": p.field, "reason": p.message} for p in exc.problems]
            await self._fail(sending.job.id, str(exc), problems)
            return False
        except ProfileNotWritable as exc:
            await self._fail(sending.job.id, str(exc))
            return False
        if header and sending.plan is not None:
            plan = sending.plan
            return await self._hold(
                sending.job.id, lambda job: job.run(sending.header, plan.loose_matches)
            )
        if sending.rows_read and sending.rows_read % LEASE_RENEWAL_ROWS == 0:  # a long re-read
            return await self._hold(sending.job.id, lambda job: None)
        return True

    def _told(self, job: ImportJob, event: ImportRowsRefused) -> OutgoingMessage:
        """The event keyed by the import like its other events, with an id derived from its
        first row, so a resumed import telling it again tells the same event."""
        first = event.rows[0].line
        envelope = to_envelope(
            event,
            account_id=job.account_id,
            source=self.events_source,
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job.id}:{first}")),
        )
        return event_message(self.events_topic, job.id, envelope.model_dump_json().encode())

    async def _send(self, sending: _Sending, *, done: bool = False) -> bool:
        """Send what waits and tell the refused rows, then checkpoint. False: stop."""
        job = sending.job
        await self.publisher.publish(
            [
                *(
                    OutgoingMessage(
                        self.commands_topic,
                        c.partition_key,
                        c.model_dump_json().encode(),
                        partition=partition,
                    )
                    for partition, c in sending.commands
                ),
                *(
                    self._told(job, event)
                    for event in refusals(job.id, job.profile_id, sending.refused_rows)
                ),
            ]
        )
        # Rows a resumed import reads again before its checkpoint are neither sent nor counted.
        ROWS.labels(ACCEPTED).inc(len(sending.commands))
        ROWS.labels(REFUSED).inc(len(sending.refused_rows))
        sending.commands, sending.refused_rows = [], []
        checkpoint = sending.checkpoint
        return await self._hold(
            sending.job.id, lambda job: job.reach(checkpoint, done=done, now=now())
        )


async def fold_results(
    results: Sequence[ImportRowsApplied | ImportPurged], store: ImportStore
) -> None:
    """Count contact-svc's outcomes and purges; an import with all of them completes."""
    for result in results:

        def fold(job: ImportJob, result: ImportRowsApplied | ImportPurged = result) -> bool:
            if isinstance(result, ImportPurged):
                return job.purged(result.deleted, now())
            return job.fold(result.partition, result.rows, now())

        await change_import(store, result.import_id, fold)
