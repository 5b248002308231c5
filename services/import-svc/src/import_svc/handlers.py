"""import-svc use cases: accept an upload, work an import through (read, check, send), fold
contact-svc's outcomes, and finish the import when every row has one (ADR 10)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from contacts_shared.commands import ImportAction, ImportContact, ImportRowsApplied
from contacts_shared.kafka import EventPublisher, OutgoingMessage, partition_of
from contacts_shared.profiles import ProfileNotWritable, ProfileSchema, SchemaStore
from contacts_shared.schema import ProfileType
from contacts_shared.values import FieldProblem, ValuesInvalid, typed_values
from import_svc.csv_rows import CsvRows, CsvUnreadable, Row
from import_svc.domain import Progress
from import_svc.header import ColumnPlan, HeaderRefused, plan_columns
from import_svc.repository import (
    Checkpoint,
    ImportJob,
    ImportStatus,
    ImportStore,
    ReadOptions,
    RefusedRow,
)

log = logging.getLogger(__name__)
# Rows read between renewals of the worker's lease when nothing is sent (a resumed import
# reads again, without sending, the rows before its checkpoint).
LEASE_RENEWAL_ROWS = 20_000


class ImportRefused(Exception):
    """An import that cannot be accepted; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


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
    """Check the target, store the upload, and queue the import."""
    schema = await schemas.get(profile_id)
    if schema is None or schema.account_id != account_id:
        raise ImportRefused(404, f"profile {profile_id} is not known to import-svc")
    if schema.type is ProfileType.VIRTUAL:
        raise ImportRefused(409, "a virtual profile holds no contacts of its own to import")
    if action is ImportAction.OVERWRITE:
        raise ImportRefused(422, "overwrite is not available yet; use append_or_update")
    upload_id, size = await store.store_upload(file_name or "pasted text", upload)
    if size == 0:
        raise ImportRefused(422, "the upload is empty")
    job = ImportJob(
        id=uuid.uuid4().hex,
        account_id=account_id,
        profile_id=profile_id,
        action=action,
        reference=reference,
        file_name=file_name,
        size=size,
        upload_id=upload_id,
        options=options,
        status=ImportStatus.QUEUED,
        created_at=now(),
        checkpoint=Checkpoint(),
        sending_done=False,
        progress=Progress(),
    )
    await store.add(job)
    return job


async def owned_import(store: ImportStore, account_id: str, import_id: str) -> ImportJob:
    job = await store.get(import_id)
    if job is None or job.account_id != account_id:
        raise ImportNotFound(import_id)
    return job


async def cancel_import(store: ImportStore, account_id: str, import_id: str) -> ImportJob:
    """Stop an unfinished import where it is; rows already sent stay applied."""
    await owned_import(store, account_id, import_id)
    await store.finish(import_id, ImportStatus.CANCELLED, now())
    return await owned_import(store, account_id, import_id)


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
    commands: list[ImportContact] = field(default_factory=list)
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
            command = self._command(self.plan, row)
        except ValuesInvalid as exc:
            self.refused += 1
            if not resent:
                self.refused_rows.append(RefusedRow(row.line, row.values, self._problems(exc, row)))
            return
        partition = partition_of(command.partition_key, self.partitions)
        sequence = self.sequences.get(partition, 0)
        self.sequences[partition] = sequence + 1
        if not resent:
            self.commands.append(command.model_copy(update={"sequence": sequence}))

    def _command(self, plan: ColumnPlan, row: Row) -> ImportContact:
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
        given = {name: value for name, value in raw_values.items() if value.strip()}
        values = typed_values(
            self.schema.fields,
            given,
            default_region=self.region,
            partial=True,
            date_order=self.job.options.date_order,
        )
        return ImportContact(
            import_id=self.job.id,
            account_id=self.job.account_id,
            profile_id=self.job.profile_id,
            key=key,
            values=values,
            action=self.job.action,
            line=row.line,
            sequence=0,
        )

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
                    "value": row.values[index] if found and index is not None else "",
                    "reason": problem.message,
                }
            )
        return problems

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.line, self.rows_read, self.refused, dict(self.sequences))


@dataclass(frozen=True)
class Worker:
    """Works on one import at a time, forever: claims one whose lease is free or expired,
    works it through, claims the next. An import left by a crashed worker is claimed again
    once its lease runs out, and resumes from its checkpoint."""

    store: ImportStore
    schemas: SchemaStore
    publisher: EventPublisher
    commands_topic: str
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
        store, owner, lease = self.store, self.owner, self.lease
        schema = await self.schemas.get(job.profile_id)
        if schema is None:
            await store.finish(job.id, ImportStatus.FAILED, now(), error="the profile is gone")
            return
        started = job.started_at or now()
        status = ImportStatus.VALIDATING if job.checkpoint.line == 0 else job.status
        if not await store.hold(
            job.id, owner, now() + lease, {"status": status.value, "started_at": started}
        ):
            return
        partitions = await self.publisher.partitions_of(self.commands_topic)
        sending = _Sending(job, schema, partitions, self.region)
        reader = CsvRows(encoding=job.options.encoding, delimiter=job.options.delimiter)
        try:
            async for chunk in store.read_upload(job.upload_id):
                for row in reader.feed(chunk):
                    if not await self._take(sending, row):
                        return
                    if len(sending.commands) >= self.rows_per_checkpoint:
                        if not await self._send(sending):
                            return
            for row in reader.close():
                if not await self._take(sending, row):
                    return
        except CsvUnreadable as exc:
            await store.finish(job.id, ImportStatus.FAILED, now(), error=str(exc))
            return
        if sending.plan is None:
            await store.finish(job.id, ImportStatus.FAILED, now(), error="the file has no header")
            return
        if not await self._send(sending, done=True):
            return
        finished = await store.get(job.id)
        if finished is not None:
            await finish_if_counted(store, finished)

    async def _take(self, sending: _Sending, row: Row) -> bool:
        """Take one record; the header's problems fail the import. False: stop."""
        header = sending.plan is None
        try:
            sending.take(row)
        except HeaderRefused as exc:
            problems = [{"column": p.field, "reason": p.message} for p in exc.problems]
            await self.store.finish(
                sending.job.id, ImportStatus.FAILED, now(), error=str(exc), problems=problems
            )
            return False
        except ProfileNotWritable as exc:
            await self.store.finish(sending.job.id, ImportStatus.FAILED, now(), error=str(exc))
            return False
        if sending.rows_read and sending.rows_read % LEASE_RENEWAL_ROWS == 0:  # a long re-read
            return await self.store.hold(sending.job.id, self.owner, now() + self.lease, {})
        if header and sending.plan is not None:
            loose = [list(pair) for pair in sending.plan.loose_matches]
            return await self.store.hold(
                sending.job.id,
                self.owner,
                now() + self.lease,
                {
                    "status": ImportStatus.RUNNING.value,
                    "loose_matches": loose,
                    "header": sending.header,
                },
            )
        return True

    async def _send(self, sending: _Sending, *, done: bool = False) -> bool:
        """Send what waits, record the refused rows, then checkpoint. False: stop."""
        await self.publisher.publish(
            OutgoingMessage(self.commands_topic, c.partition_key, c.model_dump_json().encode())
            for c in sending.commands
        )
        await self.store.refuse(sending.job.id, sending.refused_rows)
        sending.commands, sending.refused_rows = [], []
        return await self.store.checkpoint(
            sending.job.id, self.owner, now() + self.lease, sending.checkpoint, done=done
        )


async def finish_if_counted(store: ImportStore, job: ImportJob) -> None:
    """Complete the import once sending has ended and every row sent has its outcome."""
    if job.sending_done and job.progress.all_counted():
        status = (
            ImportStatus.COMPLETED_WITH_ERRORS if job.checkpoint.refused else ImportStatus.COMPLETED
        )
        await store.finish(job.id, status, now())


async def fold_results(applied: Sequence[ImportRowsApplied], store: ImportStore) -> None:
    """Count contact-svc's outcomes, then complete the imports they finish."""
    for result in applied:
        job = await store.fold(result.import_id, result.partition, result.rows)
        if job is not None:
            await finish_if_counted(store, job)
