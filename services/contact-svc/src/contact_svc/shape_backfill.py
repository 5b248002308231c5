"""Contacts stored in an older document shape brought up to the current one in the background
(ADR 9, addendum 3): their derived fields (terms, sort keys, creation order) computed again by
the one function every write uses, `contact_documents.derived_fields`, and written only if the
contact is unchanged since it was read. One process at a time holds the work's lease; the
checkpoint (the last `_id` done) lets a restart resume where the last one stopped."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.errors import DuplicateKeyError

from contact_svc.contact_documents import (
    CREATED_ORDER,
    CURRENT_SHAPE,
    SEARCH_TERMS,
    SHAPE,
    SORT_KEYS,
    contact_of,
    derived_fields,
    older_shape,
    shape_of,
)
from contacts_shared.journal import JOURNAL
from contacts_shared.mongo import Collection, Document, bson_now
from contacts_shared.outbox import OUTBOX

log = logging.getLogger(__name__)

# Which contacts have an older shape, read from this index: one cheap query at start-up once
# none has (DocumentDB serves `$in` with null, missing included, from it).
SHAPE_INDEX = IndexModel([(SHAPE, ASCENDING)], name="shape_1")
# The one checkpoint document, in its own small collection.
CHECKPOINT = "contacts"
# What a contact is read with to compute its derived fields: not the derived fields themselves.
READ: Document = {OUTBOX: 0, JOURNAL: 0, SEARCH_TERMS: 0, SORT_KEYS: 0, CREATED_ORDER: 0}
COUNTS = ("read", "reshaped", "raced", "unreadable")


def reshaping(document: Document) -> tuple[Document, Document] | None:
    """The conditions and update that bring a contact's document to the current shape: only
    its derived fields, only if its version and older shape are as read (a concurrent write of
    the contact wins: it wrote the current shape itself). None: the document has the current
    shape, or a newer one a later version wrote."""
    if shape_of(document) >= CURRENT_SHAPE:
        return None
    conditions = {"version": document["version"], **older_shape()}
    return conditions, {"$set": derived_fields(contact_of(document))}


@dataclass
class BackfillPass:
    """What one pass over the contacts did so far: documents read, brought to the current
    shape, changed since read (left to their writer) and unreadable as contacts (left as they
    are, logged)."""

    read: int = 0
    reshaped: int = 0
    raced: int = 0
    unreadable: int = 0
    done: bool = False

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}

    def add(self, round_: BackfillPass) -> None:
        for name, count in round_.counts().items():
            setattr(self, name, getattr(self, name) + count)
        self.done = round_.done


@dataclass
class ShapeBackfill:
    """Walks the contacts in `_id` order, `batch_size` documents a round, from the checkpoint
    on, rewriting those of an older shape with one unordered bulk of conditional updates; a
    round renews the lease and moves the checkpoint. Started with the service; returns once no
    contact of an older shape is left (one indexed query) or its pass is done; a process that
    finds the lease held waits for it (its holder may stop before it is done)."""

    contacts: Collection
    checkpoints: Collection
    batch_size: int
    lease: timedelta
    pause_seconds: float  # between rounds: the server's time is the requests' first
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                if not await self.needed():
                    return
                if await self.claim():
                    try:
                        if (await self.walk(stopping)).done:
                            return
                    finally:
                        await self.release()
            except Exception as exc:  # noqa: BLE001 - a server away: the checkpoint resumes it
                log.warning("shape backfill failed, will resume", extra={"error": repr(exc)})
            await _wait(stopping, self.lease.total_seconds() / 3)

    async def needed(self) -> bool:
        """Whether any contact has an older shape than the current one."""
        found = await self.contacts.find_one(
            older_shape(), {"_id": 1}, hint=SHAPE_INDEX.document["name"]
        )
        return found is not None

    async def walk(self, stopping: asyncio.Event) -> BackfillPass:
        """Go on with the pass from the checkpoint (or begin one) until it is done, the process
        stops or the lease is lost; needs the lease (`claim`)."""
        checkpoint = await self.checkpoints.find_one({"_id": CHECKPOINT}) or {}
        if checkpoint.get(SHAPE) != CURRENT_SHAPE or checkpoint.get("done"):
            checkpoint = await self._begin(checkpoint)
        progress = BackfillPass()
        started = time.monotonic()
        after, first = checkpoint.get("after"), checkpoint.get("first") or ""
        while not stopping.is_set():
            ids = {"$gt": after} if after is not None else {"$gte": first}
            rows = await (
                self.contacts.find({"_id": ids}, READ)
                .sort("_id", ASCENDING)
                .hint("_id_")
                .limit(self.batch_size)
                .to_list()
            )
            round_ = await self.reshape(rows)
            after = rows[-1]["_id"] if rows else after
            round_.done = len(rows) < self.batch_size
            if not await self._advance(after, round_):
                break
            progress.add(round_)
            if round_.done:
                # This process's share of the pass (the checkpoint holds the whole pass's).
                seconds = round(time.monotonic() - started, 3)
                extra = {"shape": CURRENT_SHAPE, "seconds": seconds, **progress.counts()}
                log.info("shape backfill done", extra=extra)
                break
            await _wait(stopping, self.pause_seconds)
        return progress

    async def reshape(self, rows: list[Document]) -> BackfillPass:
        """Bring these documents, read earlier, to the current shape where they are unchanged."""
        updates: list[UpdateOne] = []
        unreadable = 0
        for row in rows:
            try:
                change = reshaping(row)
            except (KeyError, TypeError, ValueError) as exc:
                # Not a contact this version can read: left as it is, said once per pass.
                unreadable += 1
                log.warning(
                    "contact left in its older shape",
                    extra={"contact_id": row["_id"], "error": repr(exc)},
                )
                continue
            if change is not None:
                updates.append(UpdateOne({"_id": row["_id"], **change[0]}, change[1]))
        matched = 0
        if updates:
            matched = (await self.contacts.bulk_write(updates, ordered=False)).matched_count
        return BackfillPass(len(rows), matched, len(updates) - matched, unreadable)

    async def claim(self) -> bool:
        """Hold the lease if it is free, expired or this process's own."""
        now = bson_now()
        lease = {"owner": self.owner, "until": now + self.lease}
        held = await self.checkpoints.find_one_and_update(
            {
                "_id": CHECKPOINT,
                "$or": [
                    {"lease": None},
                    {"lease.until": {"$lt": now}},
                    {"lease.owner": self.owner},
                ],
            },
            {"$set": {"lease": lease}},
            {"_id": 1},
        )
        if held is not None:
            return True
        # No checkpoint yet, or another process holds it. Not an upsert: FerretDB answers an
        # upsert that meets an existing `_id` with an internal error, an insert with 11000.
        try:
            await self.checkpoints.insert_one({"_id": CHECKPOINT, "lease": lease})
        except DuplicateKeyError:
            return False
        return True

    async def _begin(self, checkpoint: Document) -> Document:
        """A new pass: from the first contact if none was made for the current shape, else (a
        later write of an older shape, by a process of an earlier version) from the first
        contact still of an older shape."""
        first = ""
        if checkpoint.get(SHAPE) == CURRENT_SHAPE:
            least = await (
                self.contacts.find(older_shape(), {"_id": 1}).sort("_id", ASCENDING).limit(1)
            ).to_list()
            first = least[0]["_id"] if least else ""
        fields = {
            SHAPE: CURRENT_SHAPE,
            "first": first,
            "after": None,
            "done": False,
            "started_at": bson_now(),
            "finished_at": None,
            **dict.fromkeys(COUNTS, 0),
        }
        await self.checkpoints.update_one(
            {"_id": CHECKPOINT, "lease.owner": self.owner}, {"$set": fields}
        )
        log.info("shape backfill started", extra={"shape": CURRENT_SHAPE, "first": first})
        return fields

    async def _advance(self, after: str | None, round_: BackfillPass) -> bool:
        """Move the checkpoint past a round and renew the lease, if still held (False: stop)."""
        now = bson_now()
        done = {"finished_at": now} if round_.done else {}
        result = await self.checkpoints.update_one(
            {"_id": CHECKPOINT, "lease.owner": self.owner},
            {
                "$set": {
                    "after": after,
                    "done": round_.done,
                    "lease.until": now + self.lease,
                    **done,
                },
                "$inc": round_.counts(),
            },
        )
        return result.matched_count == 1

    async def release(self) -> None:
        """Free the lease, so that a restart resumes at once rather than after it runs out."""
        await self.checkpoints.update_one(
            {"_id": CHECKPOINT, "lease.owner": self.owner}, {"$set": {"lease": None}}
        )


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, less if the process stops."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass
