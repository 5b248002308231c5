"""Transactional outbox on single documents: a change and its events are one atomic write.

A writer adds `{"$push": {"outbox": {"$each": entries}}}` to the same update that changes the
aggregate. The relay publishes a document's events in order, waits for Kafka's acknowledgement,
then removes exactly those entries (`$pullAll`, by `_id` alone). A crash between the publish and
the removal publishes them again with the same event ids: delivery is at-least-once and
consumers de-duplicate by event id (or by aggregate version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel
from pymongo import ASCENDING, IndexModel

from contacts_shared import tracing
from contacts_shared.events import DomainEvent, to_envelope
from contacts_shared.faults import (
    FIRST_OUTAGE_PAUSE_SECONDS,
    OUTAGES,
    is_outage,
    next_outage_pause,
)
from contacts_shared.journal import JOURNAL, EventJournal, JournalRound, entry_message
from contacts_shared.kafka import EventPublisher
from contacts_shared.metrics import BACKLOG_SECONDS, Backlog, measure_backlog
from contacts_shared.mongo import Collection, Document, find_by_ids, update_each
from contacts_shared.settings import ServiceSettings
from contacts_shared.topics.gate import TopicsNotReady

log = logging.getLogger(__name__)

OUTBOX = "outbox"
# Matches the documents with events still to publish; index-backed on MongoDB.
PENDING_FILTER = {f"{OUTBOX}.id": {"$gt": ""}}
# Set on a document that is deleted: the relay removes it once its last events are out.
TOMBSTONE = "tombstone"


def outbox_entries(
    events: Sequence[DomainEvent], *, account_id: str, settings: ServiceSettings
) -> list[Document]:
    """Outbox entries for `events`, each with its envelope, topic and key, and the trace
    context it was written in (`tracing.current_context`: the relay's publish span is its
    child)."""
    entries = []
    trace = tracing.current_context()
    for event in events:
        envelope = to_envelope(event, account_id=account_id, source=settings.event_source)
        entries.append(
            {
                "id": envelope.id,
                "topic": getattr(settings, event.topic),
                "key": envelope.subject,
                "envelope": envelope.model_dump(mode="json"),
                **trace,
            }
        )
    return entries


def command_entry(command: BaseModel, *, topic: str, key: str) -> Document:
    """An outbox entry that sends a command, not an event: a change that must be followed by
    a command (an overwrite's purge) queues it in the same write, so it cannot be lost."""
    return {
        "id": uuid.uuid4().hex,
        "topic": topic,
        "key": key,
        "envelope": command.model_dump(mode="json"),
        **tracing.current_context(),
    }


class EventsQueued(Protocol):
    """What a writer calls after a write that queued events (the relay's `notify`)."""

    def __call__(self, document_id: object, inserted: list[Document] | None = None) -> None: ...


class QueuedDocuments(dict[object, list[Document] | None]):
    """Documents with events to publish, in the order writers named them, each with the entries
    of its insert when a writer just inserted it: they are all it holds, so the relay need not
    read it back. After any other write (or a second one) the relay reads the document: entries
    a failed pass left there go out first, keeping each aggregate's events in order."""

    def __call__(self, document_id: object, inserted: list[Document] | None = None) -> None:
        self[document_id] = None if document_id in self else inserted


def outbox_update(entries: list[Document]) -> dict[str, Any]:
    """The update operators that append `entries` to a document's outbox."""
    return {"$push": {OUTBOX: {"$each": entries}}}


RELAY_FIELDS = {OUTBOX: 1, TOMBSTONE: 1, JOURNAL: 1}
# The most documents with entries pending that one count of the backlog reads: beyond, the
# gauge shows a lower bound (a relay that far behind has been alerting for a while).
BACKLOG_DOCUMENTS = 10_000


async def outbox_backlog(collection: Collection, *, limit: int = BACKLOG_DOCUMENTS) -> Backlog:
    """The entries the outboxes of `collection` hold, and the time of the oldest event among
    them: the documents with entries pending alone, found by `OUTBOX_INDEX`, each read for its
    entries' times (a command has none)."""
    backlog = Backlog()
    cursor = collection.find(PENDING_FILTER, {f"{OUTBOX}.envelope.time": 1}, limit=limit)
    async for document in cursor:
        entries = document.get(OUTBOX) or []
        times = [
            datetime.fromisoformat(time)
            for entry in entries
            if isinstance(time := entry.get("envelope", {}).get("time"), str)
        ]
        backlog += Backlog(len(entries), min(times) if times else None)
    return backlog


# Serves the relay's scan for documents with entries left to publish; every collection with an
# outbox declares it among its indexes. Sparse: documents with nothing pending (most, and all
# those a journal wrote, ADR 12) take no entry in it.
OUTBOX_INDEX = IndexModel([(f"{OUTBOX}.id", ASCENDING)], name="outbox_pending", sparse=True)


class OutboxRelay:
    """Moves one collection's outbox entries to Kafka, forever, until stopped.

    Writers name the document they queued events on (`notify`), and the relay reads just those
    documents by id. A scan for documents with a non-empty outbox, at start and every
    `scan_seconds`, picks up what a crashed process left behind, and so does a sweep of the
    `journal`'s leftovers, if the collection has one (journal.py). A batch is read with one
    `$in` and settled with one bulk write.
    """

    def __init__(
        self,
        collection: Collection,
        publisher: EventPublisher,
        *,
        batch_size: int,
        scan_seconds: float,
        journal: EventJournal | None = None,
        backlog_seconds: float = BACKLOG_SECONDS,
    ) -> None:
        self._collection = collection
        self._backlog_seconds = backlog_seconds
        self._publisher = publisher
        self._journal = journal
        self._batch_size = batch_size
        self._scan_seconds = scan_seconds
        self._queued = QueuedDocuments()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def notify(self, document_id: object, inserted: list[Document] | None = None) -> None:
        """Called after a write that queued events, so they leave at once (see QueuedDocuments)."""
        self._queued(document_id, inserted)
        self._wake.set()

    async def publish_now(
        self, queued: QueuedDocuments, journaled: JournalRound | None = None
    ) -> None:
        """Publish a writer's events before returning: those it journaled, then its documents'
        outboxes, in batches, for a writer that must know its events are out (a consumer,
        before it commits its offsets). If Kafka or MongoDB fails meanwhile, the events stay
        where they are until the relay's own loop has them out (the documents at once, the
        journals once their lease is over), so the writer may go on."""
        if journaled is not None and self._journal is None:
            raise ValueError("a journaled round, and no journal to publish it from")
        batch = list(queued.items())
        try:
            if journaled is not None and self._journal is not None:
                await self._journal.publish(journaled, self._publisher)
            for start in range(0, len(batch), self._batch_size):
                await self._relay_batch(batch[start : start + self._batch_size])
        except Exception as exc:  # noqa: BLE001 - the loop retries: nothing is lost
            log.warning("publishing at once failed, relay retries", extra={"error": repr(exc)})
            for id_, _ in batch:
                self.notify(id_)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def backlog(self) -> Backlog:
        """What waits to be published: the collection's outboxes, and its journal's."""
        backlog = await outbox_backlog(self._collection)
        if self._journal is not None:
            backlog += await self._journal.backlog()
        return backlog

    async def run(self) -> None:
        """Relay until stopped, and show the backlog (`contacts_outbox_backlog`) meanwhile: a
        task of its own, as the relay's pass waits out an outage just when the backlog grows."""
        service, source = self._publisher.client_id, self._collection.full_name
        measuring = asyncio.create_task(
            measure_backlog(
                service, source, self.backlog, self._stopping, every=self._backlog_seconds
            ),
            name="outbox-backlog",
        )
        try:
            await self._relay_until_stopped()
        finally:
            measuring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await measuring

    async def _relay_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        next_scan = loop.time()
        backoff, outage_pause = self._scan_seconds, FIRST_OUTAGE_PAUSE_SECONDS
        part = f"relay of {self._collection.full_name}"
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass, so a notify during it is not lost
            try:
                if loop.time() >= next_scan:
                    while await self.relay_pending() >= self._batch_size:
                        pass
                    while self._journal is not None and await self._journal.sweep(self._publisher):
                        pass
                    next_scan = loop.time() + self._scan_seconds
                while self._queued:
                    await self.relay_queued()
                backoff, outage_pause = self._scan_seconds, FIRST_OUTAGE_PAUSE_SECONDS
                OUTAGES.over(part)
            except Exception as exc:  # noqa: BLE001 - Kafka or MongoDB away: retry later
                if not isinstance(exc, TopicsNotReady):  # the gate said why, once
                    log.warning("outbox relay failed, will retry", extra={"error": repr(exc)})
                if is_outage(exc):
                    # A full pass (leftovers too) as soon as the server is back, not a scan
                    # interval later: until then the process reports not ready.
                    OUTAGES.waiting(part)
                    next_scan = loop.time() + outage_pause
                    outage_pause = next_outage_pause(outage_pause)
                else:
                    backoff = min(max(backoff, 0.5) * 2, 30.0)
                    next_scan = loop.time() + backoff
            timeout = max(0.0, next_scan - loop.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    async def relay_queued(self) -> None:
        """Relay a batch of the documents writers notified."""
        batch = list(self._queued.items())[: self._batch_size]
        for id_, _ in batch:  # a notification arriving during the pass queues its id anew
            del self._queued[id_]
        try:
            await self._relay_batch(batch)
        except BaseException:
            for id_, _ in batch:  # tried again, reading what the documents hold by then
                self._queued[id_] = None
            raise

    async def _relay_batch(self, batch: list[tuple[object, list[Document] | None]]) -> None:
        known = [{"_id": id_, OUTBOX: entries} for id_, entries in batch if entries]
        unknown = [id_ for id_, entries in batch if not entries]
        found = await find_by_ids(self._collection, unknown, RELAY_FIELDS)
        await self._relay(known + [document for document in found if document.get(OUTBOX)])

    async def relay_pending(self) -> int:
        """Relay a batch of pending documents found by scanning; how many there were."""
        cursor = self._collection.find(PENDING_FILTER, RELAY_FIELDS, limit=self._batch_size)
        documents = [document async for document in cursor]
        await self._relay(documents)
        return len(documents)

    async def _relay(self, documents: list[Document]) -> None:
        """Publish the documents' events in order (after what live journals hold of them),
        wait once for every acknowledgement, then remove exactly the published entries."""
        journal = self._journal
        earlier = await journal.earlier_messages(documents) if journal is not None else []
        await self._publisher.publish(
            earlier
            + [entry_message(e) for document in documents for e in document.get(OUTBOX) or []]
        )
        # Remove exactly the published entries: entries queued since the read stay for the
        # next pass.
        await update_each(
            self._collection,
            [(document["_id"], {"$pullAll": {OUTBOX: document[OUTBOX]}}) for document in documents],
        )
        for document in documents:
            if document.get(TOMBSTONE):
                await self._collection.delete_one({"_id": document["_id"], OUTBOX: {"$size": 0}})
