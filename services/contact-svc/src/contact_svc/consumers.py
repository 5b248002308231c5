"""Kafka entry points of contact-svc: the projection of profile schemas, contact commands
(webhook records) applied by the one consumer that owns each contact's partition, and the
projections of contact events (suppressions, statistics)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from itertools import groupby

from contact_svc.batch_handlers import ImportOutcomes, apply_import_rows, apply_upserts
from contact_svc.bulk_handlers import BulkJobStore, apply_bulk_changes, count_bulk_pages
from contact_svc.contact_repository import ContactRepository
from contact_svc.deletion_handlers import apply_deletes, delete_profile_contacts, purge_for_import
from contact_svc.stats import EventAt, PartitionCounts, to_count
from contact_svc.stats_repository import StatsStore
from contacts_shared.commands import (
    BulkChange,
    DeleteContact,
    ImportContact,
    ImportPurged,
    ImportRowsApplied,
    PurgeForImport,
    UpsertContact,
    commands_in,
)
from contacts_shared.events import (
    ContactDeleted,
    ContactEvent,
    DomainEvent,
    EventEnvelope,
    ProfileDeleted,
    ProfileFieldRemoved,
    event_of,
)
from contacts_shared.journal import JournalRound
from contacts_shared.kafka import EventPublisher, OutgoingMessage, Record
from contacts_shared.mongo import retry_if_stale
from contacts_shared.outbox import OutboxRelay, QueuedDocuments
from contacts_shared.profiles import SchemaStore, project_profile_event

log = logging.getLogger(__name__)


async def apply_profile_event(
    record: Record, *, schemas: SchemaStore, contacts: ContactRepository
) -> None:
    """Keep the profile's schema at its newest version, and follow deletions: a removed field's
    values go, a deleted profile's contacts go (with their events). The contacts are changed
    before the schema is stored, so a crash in between is mended by the redelivery."""
    parsed = event_of(record.value)
    if parsed is None:
        return
    envelope, event = parsed
    if isinstance(event, ProfileDeleted):
        await delete_profile_contacts(
            profile_id=event.profile_id, source="profile-deleted", contacts=contacts
        )
    if isinstance(event, ProfileFieldRemoved):
        await contacts.drop_field(event.profile.id, event.field.key)
    await project_profile_event(envelope, event, schemas)


async def apply_contact_commands(
    records: Sequence[Record],
    *,
    schemas: SchemaStore,
    contacts: ContactRepository,
    relay: OutboxRelay,
    publisher: EventPublisher,
    results_topic: str,
    bulk_jobs: BulkJobStore,
) -> None:
    """Apply a partition's batch from `contacts.commands` (webhook upserts, import rows, bulk
    actions' pages) in bulk, then publish the events at once, the import rows' outcomes and
    the bulk pages' counts, all before the offsets are committed (docs/adr/0008, 0010, 0018).
    A redelivered batch changes nothing and reports the same outcomes; events a crash kept
    from Kafka are still in the outbox, and the relay's scan publishes them."""
    commands = [command for record in records for command in commands_in(record.value or b"")]
    partition = records[0].partition
    written = _Round(contacts)
    outcomes: ImportOutcomes = {}
    purged: list[ImportPurged] = []
    # Runs of one kind in arrival order, so each contact's commands apply in order.
    for _, run in groupby(commands, key=type):
        batch = list(run)
        queueing = written.contacts
        upserts = [c for c in batch if isinstance(c, UpsertContact)]
        imports = [c for c in batch if isinstance(c, ImportContact)]
        if upserts:
            for orphan in await apply_upserts(upserts, schemas=schemas, contacts=queueing):
                log.warning(
                    "command for a profile that is gone, dropped",
                    extra={"profile_id": orphan.profile_id, "command_id": orphan.command_id},
                )
        for import_id, rows in (
            await apply_import_rows(imports, schemas=schemas, contacts=queueing)
        ).items():
            outcomes.setdefault(import_id, []).extend(rows)
        await apply_deletes(
            [c for c in batch if isinstance(c, DeleteContact)], schemas=schemas, contacts=queueing
        )
        for purge in (c for c in batch if isinstance(c, PurgeForImport)):
            deleted = await purge_for_import(purge, schemas=schemas, contacts=queueing)
            purged.append(ImportPurged(import_id=purge.import_id, deleted=deleted))
        # A poll may hold many bulk pages (each up to a page's keys): applied a bounded share
        # at a time, its events published and its pages counted before the next, so neither
        # memory nor what a crash sends again grows with the selection.
        for share in _bulk_shares([c for c in batch if isinstance(c, BulkChange)]):
            pages = await apply_bulk_changes(
                share,
                partition=partition,
                schemas=schemas,
                contacts=written.contacts,
                jobs=bulk_jobs,
            )
            written = await written.published(relay)
            await count_bulk_pages(pages, partition=partition, jobs=bulk_jobs)
    await written.published(relay)
    results: list[ImportRowsApplied | ImportPurged] = [
        ImportRowsApplied(import_id=import_id, partition=partition, rows=rows)
        for import_id, rows in outcomes.items()
    ]
    await publisher.publish(
        OutgoingMessage(results_topic, result.import_id, result.model_dump_json().encode())
        for result in results + purged
    )


class _Round:
    """The writes of a command batch whose events are not yet published."""

    def __init__(self, contacts: ContactRepository) -> None:
        self._contacts = contacts
        self._queued, self._journaled = QueuedDocuments(), JournalRound()
        self.contacts = contacts.queueing_to(self._queued, self._journaled)

    async def published(self, relay: OutboxRelay) -> _Round:
        """Publish the round's events (ADR 8); a new round for what follows."""
        await relay.publish_now(self._queued, self._journaled)
        return _Round(self._contacts)


# Keys of bulk pages applied between two publications of their events.
BULK_SHARE_KEYS = 2000


def _bulk_shares(changes: Sequence[BulkChange]) -> Iterator[list[BulkChange]]:
    """Consecutive runs of `changes` holding about BULK_SHARE_KEYS keys each."""
    share: list[BulkChange] = []
    keys = 0
    for change in changes:
        share.append(change)
        keys += len(change.keys)
        if keys >= BULK_SHARE_KEYS:
            yield share
            share, keys = [], 0
    if share:
        yield share


# Brings under the suppression list what a batch of contact events shows escaped it.
Enforcement = Callable[[Sequence[DomainEvent]], Awaitable[int]]


async def project_contact_events(
    records: Sequence[Record], *, stats: StatsStore, enforce: Enforcement
) -> None:
    """What contact-svc keeps from its own events, fed by one consumer so each batch is read
    and parsed once: the contacts that escaped the account-wide suppression list brought
    under it (`suppression_handlers.enforce_suppressions`, ADR 15), then the profiles'
    statistics. Both are idempotent, so a batch handled again after a failure changes
    nothing."""
    events = [
        (record.offset, *parsed)
        for record in records
        if (parsed := event_of(record.value)) is not None
    ]
    await enforce([event for _, _, event in events])
    await count_contact_events(events, partition=records[0].partition, stats=stats)


async def count_contact_events(
    events: Sequence[tuple[int, EventEnvelope, DomainEvent]], *, partition: int, stats: StatsStore
) -> None:
    """Fold a partition's batch of contact events (offset, envelope, event) into its profiles'
    statistics: one read and one write per profile in the batch, and the contacts' marks read
    and written at once. Redelivered records and events the relay published twice count once
    (see `stats`)."""
    counted: list[EventAt] = []
    for offset, envelope, event in events:
        if isinstance(event, ContactEvent):
            contact = event.contact
            identity = (contact.id, contact.version, contact.profile_id)
        elif isinstance(event, ContactDeleted):
            identity = (event.contact_id, event.version, event.profile_id)
        else:
            continue
        counted.append(EventAt(offset, envelope.time, event, *identity))
    if not counted:
        return
    profiles = list({each.profile_id for each in counted})
    shares = await asyncio.gather(*(stats.share(p, partition) for p in profiles))
    marks = await stats.marks(list({each.contact_id for each in counted}))
    marked, by_profile = to_count(
        counted, marks, {share.profile_id: share.offset for share in shares}
    )
    await stats.set_marks(marked, stored=marks.keys())  # before the shares: `last_counted`
    read = {share.profile_id: share for share in shares}
    for profile_id, profile_events in by_profile.items():
        await retry_if_stale(partial(_fold, stats, read, profile_id, partition, profile_events))


async def _fold(
    stats: StatsStore,
    read: dict[str, PartitionCounts],
    profile_id: str,
    partition: int,
    events: list[EventAt],
) -> None:
    # The share as the batch read it, the first time; read again after a lost race.
    counts = read.pop(profile_id, None) or await stats.share(profile_id, partition)
    counted = counts.offset
    folded = [counts.fold(each.event, offset=each.offset, at=each.at) for each in events]
    if any(folded):
        await stats.store(counts, expected_offset=counted)
