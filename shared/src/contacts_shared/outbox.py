"""Transactional outbox on single documents: a change and its events are one atomic write.

A writer adds `{"$push": {"outbox": ...}, "$set": {"outbox_pending": True}}` to the same update
that changes the aggregate. The relay publishes each pending document's events in order, waits
for Kafka's acknowledgement, then removes exactly those entries. A crash between the publish and
the removal publishes them again with the same event ids: delivery is at-least-once and
consumers de-duplicate by event id (or by aggregate version).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING

from contacts_shared.events import DomainEvent, EventEnvelope, to_envelope
from contacts_shared.kafka import EventPublisher, OutgoingMessage
from contacts_shared.mongo import Collection, Document, DocumentLocks
from contacts_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

OUTBOX = "outbox"
PENDING = "outbox_pending"
# Set on a document that is deleted: the relay removes it once its last events are out.
TOMBSTONE = "tombstone"


def outbox_entries(
    events: Sequence[DomainEvent], *, account_id: str, settings: ServiceSettings
) -> list[Document]:
    """Outbox entries for `events`, each with its envelope, topic and key."""
    entries = []
    for event in events:
        envelope = to_envelope(event, account_id=account_id, source=f"/{settings.service_name}")
        entries.append(
            {
                "id": envelope.id,
                "topic": getattr(settings, event.topic),
                "key": envelope.subject,
                "envelope": envelope.model_dump(mode="json"),
            }
        )
    return entries


def outbox_update(entries: list[Document]) -> dict[str, Any]:
    """The update operators that append `entries` to a document's outbox."""
    return {"$push": {OUTBOX: {"$each": entries}}, "$set": {PENDING: True}}


async def create_outbox_index(collection: Collection) -> None:
    await collection.create_index([(PENDING, ASCENDING)], name="outbox_pending")


class OutboxRelay:
    """Moves outbox entries of the given collections to Kafka, forever, until stopped."""

    def __init__(
        self,
        collections: Sequence[Collection],
        publisher: EventPublisher,
        *,
        locks: DocumentLocks,
        batch_size: int,
        poll_seconds: float,
    ) -> None:
        self._collections = tuple(collections)
        self._locks = locks
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def notify(self) -> None:
        """Called after a write that queued events, so they leave without waiting for a poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        backoff = self._poll_seconds
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass, so a notify during it is not lost
            try:
                published = await self.relay_once()
                backoff = self._poll_seconds
            except Exception as exc:  # noqa: BLE001 - Kafka or MongoDB away: retry later
                log.warning("outbox relay failed, will retry", extra={"error": repr(exc)})
                published, backoff = 0, min(backoff * 2, 30.0)
            if published >= self._batch_size:
                continue  # more may be waiting
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass

    async def relay_once(self) -> int:
        """Publish one batch of pending documents' events; the number of events published."""
        total = 0
        for collection in self._collections:
            cursor = collection.find(
                {PENDING: True}, {OUTBOX: 1, TOMBSTONE: 1}, limit=self._batch_size
            )
            async for document in cursor:
                total += await self._relay_document(collection, document)
        return total

    async def _relay_document(self, collection: Collection, document: Document) -> int:
        entries: list[Document] = document.get(OUTBOX) or []
        if entries:
            await self._publisher.publish(
                OutgoingMessage(
                    entry["topic"],
                    entry["key"],
                    EventEnvelope.model_validate(entry["envelope"]).model_dump_json().encode(),
                )
                for entry in entries
            )
        async with self._locks.hold(document["_id"]):
            if entries:
                # $pullAll removes exactly the entries as read (FerretDB v1's $pull does not
                # take query conditions on embedded documents).
                await collection.update_one(
                    {"_id": document["_id"]}, {"$pullAll": {OUTBOX: entries}}
                )
            # Only a document whose outbox is still empty is settled: a writer may have pushed.
            settled = {"_id": document["_id"], OUTBOX: {"$size": 0}}
            if document.get(TOMBSTONE):
                await collection.delete_one(settled)
            else:
                await collection.update_one(settled, {"$unset": {PENDING: ""}})
        return len(entries)
