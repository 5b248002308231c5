"""Bulk actions (ADR 18): accepted at once as a job; a sender holding the job's lease reads
the selection page by page and sends each page, split by partition, on `contacts.commands`;
the command consumer applies each page in bulk and counts it once into the job."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

from contact_svc.bulk_jobs import BULK_PAGE, BulkJob, PendingPage, by_partition
from contact_svc.contact_handlers import writable_schema
from contact_svc.contact_repository import ContactRepository, Saving
from contact_svc.domain import apply_bulk_change
from contact_svc.listing_handlers import ContactFilter, count_listed, selected_keys
from contact_svc.listing_repository import ContactPages
from contact_svc.stats_repository import StatsStore
from contacts_shared.commands import BulkAction, BulkChange, BulkOutcome, contact_partition_key
from contacts_shared.kafka import EventPublisher, OutgoingMessage, partition_of
from contacts_shared.mongo import bson_now, retry_if_stale
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.schema import ContactStatus
from contacts_shared.values import FieldProblem, ValuesInvalid

log = logging.getLogger(__name__)


class BulkJobStore(Protocol):
    async def add(self, job: BulkJob) -> None: ...

    async def get(self, job_id: str) -> BulkJob | None: ...

    async def of_profile(self, profile_id: str, limit: int) -> list[BulkJob]: ...

    async def claim(self, owner: str, now: datetime, lease: timedelta) -> BulkJob | None: ...

    async def hold(self, job: BulkJob, owner: str, until: datetime) -> bool: ...

    async def counted_pages(self, job_ids: Sequence[str], partition: int) -> dict[str, int]: ...

    async def count_page(
        self, job_id: str, partition: int, page: int, outcomes: dict[BulkOutcome, int]
    ) -> BulkJob | None: ...

    async def complete(self, job_id: str, now: datetime) -> None: ...


class BulkJobNotFound(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no bulk action {job_id}")


async def accept_bulk_action(
    *,
    account_id: str,
    profile_id: str,
    action: BulkAction,
    status: ContactStatus | None,
    reason: str | None,
    keys: Sequence[str] | None,
    selected: ContactFilter | None,
    region: str,
    schemas: SchemaStore,
    contacts: ContactPages,
    stats: StatsStore,
    jobs: BulkJobStore,
) -> BulkJob:
    """Check the action and its selection (the keys given, or every contact a filter
    selects) and queue it; the work is done in the background."""
    schema = await writable_schema(schemas, account_id, profile_id)
    if (action is BulkAction.CHANGE_STATUS) != (status is not None):
        raise ValuesInvalid([FieldProblem("status", f"{action.value}: status is required")])
    if (keys is None) == (selected is None):
        raise ValuesInvalid([FieldProblem("keys", "give keys or filter, not both")])
    problems: list[FieldProblem] = []
    normalized: set[str] = set()
    for index, raw in enumerate(keys or ()):
        try:
            normalized.add(schema.identity_key(raw, region))
        except ValuesInvalid as exc:
            problems.extend(FieldProblem(f"keys[{index}]", p.message) for p in exc.problems)
    if problems:
        raise ValuesInvalid(problems)
    if selected is not None:  # an estimate past a few thousand: the request stays quick
        total = (
            await count_listed(
                account_id=account_id,
                profile_id=profile_id,
                selected=selected,
                exact=False,
                region=region,
                schemas=schemas,
                contacts=contacts,
                stats=stats,
            )
        ).count
    job = BulkJob(
        id=uuid.uuid4().hex,
        account_id=account_id,
        profile_id=profile_id,
        action=action,
        created_at=bson_now(),
        total=total if selected is not None else len(normalized),
        status=status,
        reason=reason if action is BulkAction.CHANGE_STATUS else None,
        keys=tuple(sorted(normalized)) if keys is not None else None,
        filter=selected,
    )
    await jobs.add(job)
    return job


async def owned_job(jobs: BulkJobStore, account_id: str, job_id: str) -> BulkJob:
    job = await jobs.get(job_id)
    if job is None or job.account_id != account_id:
        raise BulkJobNotFound(job_id)
    return job


async def profile_jobs(
    *, account_id: str, profile_id: str, limit: int, schemas: SchemaStore, jobs: BulkJobStore
) -> list[BulkJob]:
    await writable_schema(schemas, account_id, profile_id)
    return await jobs.of_profile(profile_id, limit)


# -- sending ---------------------------------------------------------------------------------


@dataclass
class BulkSender:
    """Works on one job at a time, forever: claims one whose lease is free or expired, sends
    its selection page by page, claims the next. A job left by a crashed sender is claimed
    again once its lease runs out and goes on from its last page: a page written as pending
    and perhaps sent is sent again, as it was (the consumer counts it once)."""

    jobs: BulkJobStore
    schemas: SchemaStore
    contacts: ContactPages
    publisher: EventPublisher
    topic: str
    region: str
    lease: timedelta
    poll_seconds: float
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                job = await self.jobs.claim(self.owner, bson_now(), self.lease)
                if job is not None:
                    await self.work_on(job, stopping)
                    continue
            except Exception as exc:  # noqa: BLE001 - a server away: the lease lets it resume
                log.warning("bulk action failed, will resume", extra={"error": repr(exc)})
            self.wake.clear()
            waits = [asyncio.create_task(e.wait()) for e in (stopping, self.wake)]
            await asyncio.wait(waits, timeout=self.poll_seconds, return_when="FIRST_COMPLETED")
            for wait in waits:
                wait.cancel()

    async def work_on(self, job: BulkJob, stopping: asyncio.Event) -> None:
        """Send the job's pages until all are sent, the lease is lost, or the process stops
        (between pages: the lease runs out and the job resumes, here or elsewhere)."""
        schema = await self.schemas.get(job.profile_id)
        if schema is None or schema.account_id != job.account_id:
            job.fail("the profile is gone", bson_now())
            await self._hold(job)
            return
        partitions = await self.publisher.partitions_of(self.topic)

        def partition(key: str) -> int:
            return partition_of(contact_partition_key(job.profile_id, key), partitions)

        while not stopping.is_set():
            page = job.pending
            if page is None:
                try:
                    keys = await self._next_keys(job, schema)
                except ValuesInvalid as exc:  # the filter's field was deleted since
                    job.fail(str(exc), bson_now())
                    await self._hold(job)
                    return
                if not keys:
                    job.all_sent(bson_now())
                    if await self._hold(job):
                        await complete_if_applied(self.jobs, job)
                    return
                page = job.pend(keys, bson_now())
                if not await self._hold(job):
                    return
            groups = by_partition(page.keys, partition)
            await self.publisher.publish(self._messages(job, page, groups))
            job.sent(list(groups))
            if not await self._hold(job):
                return

    async def _next_keys(self, job: BulkJob, schema: ProfileSchema) -> Sequence[str]:
        if job.filter is None:
            return job.keys_after(BULK_PAGE)
        return await selected_keys(
            schema=schema,
            selected=job.filter,
            after_key=job.after_key,
            limit=BULK_PAGE,
            region=self.region,
            contacts=self.contacts,
        )

    def _messages(
        self, job: BulkJob, page: PendingPage, groups: dict[int, list[str]]
    ) -> list[OutgoingMessage]:
        return [
            OutgoingMessage(
                self.topic, job.id, job.change(page, keys).model_dump_json().encode(), partition=p
            )
            for p, keys in groups.items()
        ]

    async def _hold(self, job: BulkJob) -> bool:
        """Write the job's progress, if this sender still holds its lease (False: stop)."""
        return await self.jobs.hold(job, self.owner, bson_now() + self.lease)


async def complete_if_applied(jobs: BulkJobStore, job: BulkJob) -> None:
    if job.applied:
        await jobs.complete(job.id, bson_now())


# -- applying --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageApplied:
    """What one page's command did, to count into its job."""

    job_id: str
    page: int
    outcomes: dict[BulkOutcome, int]


async def apply_bulk_changes(
    changes: Sequence[BulkChange],
    *,
    partition: int,
    schemas: SchemaStore,
    contacts: ContactRepository,
    jobs: BulkJobStore,
) -> list[PageApplied]:
    """Apply a partition's batch of bulk pages in bulk: consecutive pages of one profile with
    no key in common read at once and their changes written in one bulk write (those written
    meanwhile one by one); a page sharing a key with one before it (a copy sent again, or
    another job's) starts a new run, so each contact's changes apply in order. A page its
    job has counted already (sent again by a resumed sender) is skipped; one applied but not
    yet counted repeats its outcomes from the contacts' stamps. The pages come back in their
    order, to be counted in it."""
    if not changes:
        return []
    counted = await jobs.counted_pages(list({c.job_id for c in changes}), partition)
    applied: list[PageApplied] = []
    run: list[BulkChange] = []
    run_keys: set[str] = set()
    for change in changes:
        if change.page <= counted.get(change.job_id, 0):
            continue
        schema = await schemas.get(change.profile_id)
        if schema is None or schema.account_id != change.account_id:
            applied.extend(await _apply_run(run, contacts))
            run, run_keys = [], set()
            outcomes = Counter({BulkOutcome.NOT_FOUND: len(change.keys)})
            applied.append(PageApplied(change.job_id, change.page, dict(outcomes)))
            continue
        if run and (run[0].profile_id != change.profile_id or not run_keys.isdisjoint(change.keys)):
            applied.extend(await _apply_run(run, contacts))
            run, run_keys = [], set()
        run.append(change)
        run_keys.update(change.keys)
    applied.extend(await _apply_run(run, contacts))
    return applied


async def _apply_run(run: Sequence[BulkChange], contacts: ContactRepository) -> list[PageApplied]:
    """Pages of one profile with distinct keys: their contacts read in one query, their
    changes written in one bulk write, each page's outcomes counted apart."""
    if not run:
        return []
    stored = await contacts.find_stored(run[0].profile_id, [k for c in run for k in c.keys])
    now = bson_now()
    outcomes: list[Counter[BulkOutcome]] = [Counter() for _ in run]
    savings: list[Saving] = []
    page_of: dict[str, int] = {}
    for index, change in enumerate(run):
        for key in change.keys:
            contact = stored.get(key)
            version = contact.version if contact else 0
            outcome, write = apply_bulk_change(contact, change, now=now)
            outcomes[index][outcome] += 1
            if write and contact is not None:
                savings.append(Saving(contact, version))
                page_of[contact.id] = index
    for stale in await contacts.save_many(savings):
        index = page_of[stale.id]
        counts = outcomes[index]
        counts[stale.bulk.outcome if stale.bulk else BulkOutcome.NOT_FOUND] -= 1
        change = run[index]
        counts[await retry_if_stale(partial(_apply_one, change, stale.key, contacts))] += 1
    return [
        PageApplied(change.job_id, change.page, dict(counts))
        for change, counts in zip(run, outcomes, strict=True)
    ]


async def _apply_one(change: BulkChange, key: str, contacts: ContactRepository) -> BulkOutcome:
    contact = await contacts.find_even_deleted(change.profile_id, key)
    version = contact.version if contact else 0
    outcome, write = apply_bulk_change(contact, change, now=bson_now())
    if write and contact is not None:  # a live contact: a deleted one is not written
        await contacts.save(contact, expected_version=version)
    return outcome


async def count_bulk_pages(
    applied: Sequence[PageApplied], *, partition: int, jobs: BulkJobStore
) -> None:
    """Count each page's outcomes into its job once, in page order; a job whose every page
    is counted is completed."""
    for page in applied:
        job = await jobs.count_page(page.job_id, partition, page.page, page.outcomes)
        if job is not None:
            await complete_if_applied(jobs, job)
