"""Events of bulk writes, journaled beside the documents instead of inside them (ADR 12).

An outbox in the document (outbox.py) costs a second write of every document: the settlement
that removes the published entries, which rewrites the whole row as dearly as the write
itself. A bulk writer instead records its writes' events in the journal first (one header and
a few parts, however many documents), writes the documents, each stamped with the journal
token (`JOURNAL`), publishes the events of the writes that applied, and removes the journal:
one write per document, a few per bulk.

A journal outlives its writer only if the writer died or could not publish. A document still
stamped with its token took that write (nothing else stamps it, and a journaled write never
replaces the stamp of a live journal), so the relay publishes those events once the journal's
lease is over, and removes it. Writes through the outbox may land on a document whose journal
is live; the relay then publishes the journal's events of that document before its outbox's,
so each document's events keep their order. Delivery stays at-least-once: consumers
de-duplicate by event id or aggregate version.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic_core import to_json
from pymongo import DeleteMany

from contacts_shared import tracing
from contacts_shared.kafka import EventPublisher, OutgoingMessage, event_message
from contacts_shared.metrics import Backlog
from contacts_shared.mongo import Collection, Document, bson_now, find_by_ids, prefix_range

# On a document: the token of the journal that holds its last journaled write's events.
JOURNAL = "journal"
# A journal is a header (`h:<token>`, small: what live tokens are read from) and parts
# (`p:<token>:<n>`) of at most about PART_BYTES of events, well under MongoDB's 16 MB.
HEADER = "h:"
PART = "p:"
PART_BYTES = 1_000_000
# On a header: how many events the journal holds.
EVENTS = "events"
SWEEP_BATCH = 20


def _part_prefix(token: str) -> str:
    return f"{PART}{token}:"


def entry_message(entry: Document) -> OutgoingMessage:
    """An outbox entry (outbox.py) as the message that publishes it, with the trace context
    it was written in, if any."""
    envelope = entry["envelope"]
    # Commands share outboxes (`command_entry`) and go without the event header. An event is
    # told by its `specversion`, which every CloudEvent has and no command does, so entries
    # an older release queued are told apart as well.
    if "specversion" in envelope:
        message = event_message(entry["topic"], entry["key"], to_json(envelope))
    else:
        message = OutgoingMessage(entry["topic"], entry["key"], to_json(envelope))
    trace = tracing.stored_headers(entry)
    return message.with_headers(message.headers + trace) if trace else message


def _kept(message: OutgoingMessage) -> Document:
    """A message as a journal keeps it, with its headers if it has any (an event's content
    type, the writer's trace context: the sweep publishes it as the writer would have)."""
    kept: Document = {"topic": message.topic, "key": message.key, "value": message.value}
    if headers := tracing.with_current_context(message.headers):
        kept["headers"] = [list(header) for header in headers]
    return kept


def _kept_message(kept: Document) -> OutgoingMessage:
    """A message a journal kept (`_kept`), with the headers it was journaled with."""
    headers = tuple((name, value) for name, value in kept.get("headers", ()))
    return OutgoingMessage(kept["topic"], kept["key"], kept["value"], headers)


# Applies records kept in a journal beside its events (segment-svc's member records), before the
# journal is removed.
RecordsApplier = Callable[[Sequence[Document]], Awaitable[None]]


@dataclass(frozen=True)
class JournaledWrite:
    """A document's write, the messages of the events it tells, and records to apply with
    them (for a journal that has a `RecordsApplier`)."""

    document_id: object
    messages: list[OutgoingMessage]
    records: list[Document] = field(default_factory=list)

    @classmethod
    def of(cls, document_id: object, entries: Iterable[Document]) -> JournaledWrite:
        """From outbox entries (outbox.py), each envelope serialized once."""
        return cls(document_id, [entry_message(entry) for entry in entries])


@dataclass
class JournalRound:
    """What one writer's round journaled: the events of its writes that applied, in write
    order, and its journals, removed once those events are on Kafka."""

    tokens: list[str] = field(default_factory=list)
    writes: list[JournaledWrite] = field(default_factory=list)

    def applied(self, token: str, writes: Iterable[JournaledWrite]) -> None:
        self.tokens.append(token)
        self.writes.extend(writes)


class EventJournal:
    """The journal of one collection's bulk writes (`documents`), kept in `journal`."""

    def __init__(
        self,
        journal: Collection,
        documents: Collection,
        *,
        lease_seconds: float,
        apply_records: RecordsApplier | None = None,
    ) -> None:
        self._journal = journal
        self._documents = documents
        self._lease = timedelta(seconds=lease_seconds)
        self._apply_records = apply_records

    async def record(self, writes: Sequence[JournaledWrite]) -> str:
        """Journal these writes' events before they are written; the token to stamp them with."""
        token = uuid.uuid4().hex
        chunks: list[list[Document]] = [[]]
        size = 0
        for write in writes:
            length = sum(len(m.value) for m in write.messages)
            if chunks[-1] and size + length > PART_BYTES:
                chunks.append([])
                size = 0
            if write.records and self._apply_records is None:
                raise ValueError("records journaled, and nothing to apply them")
            entries = [_kept(m) for m in write.messages]
            kept = {"document": write.document_id, "entries": entries}
            chunks[-1].append({**kept, "records": write.records} if write.records else kept)
            size += length
        parts = [
            {"_id": f"{_part_prefix(token)}{n:05d}", "writes": chunk}
            for n, chunk in enumerate(chunks)
            if chunk
        ]
        # The header counts the events, so the backlog gauge reads headers alone (`backlog`).
        events = sum(len(write.messages) for write in writes)
        header = {"_id": HEADER + token, "token": token, "created_at": bson_now(), EVENTS: events}
        with tracing.writing(self._journal, "insertMany", 1 + len(parts)):
            await self._journal.insert_many([header, *parts], ordered=True)
        return token

    async def backlog(self) -> Backlog:
        """The events live journals hold (their writers' rounds in flight, and what dead
        writers left) and when the oldest was journaled: the headers alone, read from the
        `_id` index."""
        cursor = self._journal.find({"_id": prefix_range(HEADER)}, {"created_at": 1, EVENTS: 1})
        # A header an older release wrote has no count: one event at least.
        return sum(
            [Backlog(header.get(EVENTS, 1), header["created_at"]) async for header in cursor],
            Backlog(),
        )

    async def live_tokens(self) -> list[str]:
        """Tokens of the journals not yet removed: a journaled write must not replace them."""
        cursor = self._journal.find({"_id": prefix_range(HEADER)}, {"token": 1})
        return [header["token"] async for header in cursor]

    async def publish(self, round: JournalRound, publisher: EventPublisher) -> None:
        """Publish a round's events (and apply its records), then remove its journals."""
        await self._emit(round.writes, publisher)
        await self._remove(round.tokens)

    async def earlier_messages(self, documents: Sequence[Document]) -> list[OutgoingMessage]:
        """The events live journals hold of these documents' last journaled writes (read with
        `JOURNAL`), to publish before anything written to them since."""
        return [m for write in await self._earlier(documents) for m in write.messages]

    async def flush(self, documents: Sequence[Document], publisher: EventPublisher) -> None:
        """Publish (and apply) what live journals hold of these documents' last journaled
        writes, for a writer about to write over their stamps: the journal's sweep will not
        publish them then, and they must leave before the new write's events."""
        await self._emit(await self._earlier(documents), publisher)

    async def _earlier(self, documents: Sequence[Document]) -> list[JournaledWrite]:
        by_token: dict[str, set[object]] = {}
        for document in documents:
            if token := document.get(JOURNAL):
                by_token.setdefault(token, set()).add(document["_id"])
        live = await find_by_ids(self._journal, [HEADER + t for t in by_token], {"token": 1})
        writes: list[JournaledWrite] = []
        for header in live:
            writes += await self._writes_of(header["token"], by_token[header["token"]])
        return writes

    async def _emit(self, writes: Sequence[JournaledWrite], publisher: EventPublisher) -> None:
        messages = [m for write in writes for m in write.messages]
        records = [r for write in writes for r in write.records]
        if records and self._apply_records is not None:
            await asyncio.gather(self._apply_records(records), publisher.publish(messages))
        elif messages:
            await publisher.publish(messages)

    async def sweep(self, publisher: EventPublisher) -> int:
        """Publish what journals past their lease hold of the writes that applied, and remove
        them; how many there were."""
        cutoff = bson_now() - self._lease
        cursor = self._journal.find(
            {"_id": prefix_range(HEADER), "created_at": {"$lt": cutoff}}, {"token": 1}
        )
        tokens = [header["token"] async for header in cursor.limit(SWEEP_BATCH)]
        for token in tokens:
            await self._emit(await self._writes_of(token, None), publisher)
            await self._remove([token])
        return len(tokens)

    async def _writes_of(self, token: str, documents: set[object] | None) -> list[JournaledWrite]:
        """The writes journal `token` holds of those of `documents` (None: all of its) still
        stamped with it, that is whose journaled write applied."""
        writes = [
            write
            async for part in self._journal.find({"_id": prefix_range(_part_prefix(token))})
            for write in part["writes"]
            if documents is None or write["document"] in documents
        ]
        stamped = {
            document["_id"]
            for document in await find_by_ids(
                self._documents, [write["document"] for write in writes], {JOURNAL: 1}
            )
            if document.get(JOURNAL) == token
        }
        return [
            JournaledWrite(
                write["document"],
                [_kept_message(e) for e in write["entries"]],
                write.get("records", []),
            )
            for write in writes
            if write["document"] in stamped
        ]

    async def _remove(self, tokens: Sequence[str]) -> None:
        if tokens:
            await self._journal.bulk_write(
                # Parts first: a header outlives them, so a crash in between is swept.
                [
                    *(DeleteMany({"_id": prefix_range(_part_prefix(t))}) for t in tokens),
                    DeleteMany({"_id": {"$in": [HEADER + t for t in tokens]}}),
                ],
                ordered=True,
            )
