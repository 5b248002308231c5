"""Documents stored before a change of their shape brought up to it in the background, in
bounded rounds: one process at a time holds the work's lease, a checkpoint (the last `_id`
done) lets a restart resume where the last one stopped, and a finished pass is recorded.
contact-svc reshapes its contacts with it (ADR 9, addendum 3), segment-svc gives its projected
contacts their sample bucket (ADR 11, addendum); each says what a round rewrites."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Generic, Self, TypeVar

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from contacts_shared.mongo import Collection, Document, bson_now

log = logging.getLogger(__name__)


class Tally:
    """What a round (or a pass so far) did: its int fields, counted into the checkpoint, and
    `done`, whether the pass ended with it. Mixed into a dataclass of the counts."""

    done: bool

    def counts(self) -> dict[str, int]:
        named = dataclasses.fields(self)  # type: ignore[arg-type]
        return {f.name: getattr(self, f.name) for f in named if f.name != "done"}

    def add(self, round_: Self) -> None:
        for name, count in round_.counts().items():
            setattr(self, name, getattr(self, name) + count)
        self.done = round_.done


T = TypeVar("T", bound=Tally)


@dataclass
class LeasedBackfill(ABC, Generic[T]):
    """Walks `documents` in `_id` order, `batch_size` a round, from the checkpoint on, each
    round rewritten by `rewrite` (one bulk of conditional updates: a concurrent writer wins);
    a round renews the lease and moves the checkpoint. `run` returns once nothing is `needed`
    or its pass is done; a process that finds the lease held waits for it (its holder may
    stop before it is done). A new pass begins when `version` changes."""

    documents: Collection
    checkpoints: Collection
    batch_size: int
    lease: timedelta
    pause_seconds: float  # between rounds: the collection's own writers come first
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    # The checkpoint's `_id` and the work's name in logs; the pass's version; what is read;
    # the counts of its tally.
    checkpoint_id: ClassVar[str]
    name: ClassVar[str]
    version: ClassVar[int] = 1
    read_fields: ClassVar[Document]
    counted: ClassVar[tuple[str, ...]]

    @abstractmethod
    async def needed(self) -> bool:
        """Whether any document may still need rewriting (cheap: run at every start)."""

    @abstractmethod
    async def rewrite(self, rows: list[Document]) -> T:
        """Rewrite these documents, read earlier, where they still need it."""

    async def first_id(self, checkpoint: Document) -> str:
        """Where a new pass begins; a pass after a finished one of the same version may skip
        what that one did."""
        return ""

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                if not await self.needed():
                    return
                if await self.claim():
                    try:
                        walked = await self.walk(stopping)
                        if walked is not None and walked.done:
                            return
                    finally:
                        await self.release()
            except Exception as exc:  # noqa: BLE001 - a server away: the checkpoint resumes it
                log.warning(f"{self.name} failed, will resume", extra={"error": repr(exc)})
            await _wait(stopping, self.lease.total_seconds() / 3)

    async def walk(self, stopping: asyncio.Event) -> T | None:
        """Go on with the pass from the checkpoint (or begin one) until it is done, the process
        stops or the lease is lost; needs the lease (`claim`). What this process did of it
        (None: stopped before a round)."""
        checkpoint = await self.checkpoints.find_one({"_id": self.checkpoint_id}) or {}
        if checkpoint.get("version") != self.version or checkpoint.get("done"):
            checkpoint = await self._begin(checkpoint)
        progress: T | None = None
        started = time.monotonic()
        after, first = checkpoint.get("after"), checkpoint.get("first") or ""
        while not stopping.is_set():
            ids = {"$gt": after} if after is not None else {"$gte": first}
            rows = await (
                self.documents.find({"_id": ids}, self.read_fields)
                .sort("_id", ASCENDING)
                .hint("_id_")
                .limit(self.batch_size)
                .to_list()
            )
            round_ = await self.rewrite(rows)
            after = rows[-1]["_id"] if rows else after
            round_.done = len(rows) < self.batch_size
            if not await self._advance(after, round_):
                break
            if progress is None:
                progress = round_
            else:
                progress.add(round_)
            if round_.done:
                # This process's share of the pass (the checkpoint holds the whole pass's).
                seconds = round(time.monotonic() - started, 3)
                extra = {"version": self.version, "seconds": seconds, **progress.counts()}
                log.info(f"{self.name} done", extra=extra)
                break
            await _wait(stopping, self.pause_seconds)
        return progress

    async def claim(self) -> bool:
        """Hold the lease if it is free, expired or this process's own."""
        now = bson_now()
        lease = {"owner": self.owner, "until": now + self.lease}
        held = await self.checkpoints.find_one_and_update(
            {
                "_id": self.checkpoint_id,
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
            await self.checkpoints.insert_one({"_id": self.checkpoint_id, "lease": lease})
        except DuplicateKeyError:
            return False
        return True

    async def _begin(self, checkpoint: Document) -> Document:
        first = await self.first_id(checkpoint)
        fields: dict[str, Any] = {
            "version": self.version,
            "first": first,
            "after": None,
            "done": False,
            "started_at": bson_now(),
            "finished_at": None,
            **dict.fromkeys(self.counted, 0),
        }
        await self.checkpoints.update_one(
            {"_id": self.checkpoint_id, "lease.owner": self.owner}, {"$set": fields}
        )
        log.info(f"{self.name} started", extra={"version": self.version, "first": first})
        return fields

    async def _advance(self, after: str | None, round_: Tally) -> bool:
        """Move the checkpoint past a round and renew the lease, if still held (False: stop)."""
        now = bson_now()
        done = {"finished_at": now} if round_.done else {}
        result = await self.checkpoints.update_one(
            {"_id": self.checkpoint_id, "lease.owner": self.owner},
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
            {"_id": self.checkpoint_id, "lease.owner": self.owner}, {"$set": {"lease": None}}
        )


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, less if the process stops."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass
