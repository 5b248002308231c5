"""Projected contacts written before sample buckets were kept given their bucket in the
background (ADR 11, addendum of 2026-12, backfill), so a preview's estimate of a large profile
stands for every contact. The walk is `contacts_shared.backfill`'s, as contact-svc's
shape backfill (ADR 9, addendum 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pymongo import UpdateOne

from contacts_shared.backfill import LeasedBackfill, Tally
from contacts_shared.mongo import Document
from contacts_shared.sampling import sample_bucket
from segment_svc.membership import SAMPLE, sample_term

# The one checkpoint document, in its own small collection (`backfills`).
CHECKPOINT = "contacts_sample"
# What a document is read with: its id, and its bucket if it has one (`profile_id` and `key`,
# what the bucket is computed from, are the two halves of the id; read to not parse it).
READ: Document = {"_id": 1, SAMPLE: 1, "profile_id": 1, "key": 1}
COUNTS = ("read", "filled", "raced")


def filling(document: Document) -> UpdateOne | None:
    """The update that gives a projected contact its sample bucket, only where it still has
    none (a concurrent projection write sets the same value: the bucket depends on the key
    alone, so no version guard is needed). None: it has one."""
    if SAMPLE in document:
        return None
    profile_id, key = document.get("profile_id"), document.get("key")
    if profile_id is None or key is None:
        profile_id, _, key = document["_id"].partition(":")
    term = sample_term(profile_id, sample_bucket(key))
    return UpdateOne({"_id": document["_id"], SAMPLE: {"$exists": False}}, {"$set": {SAMPLE: term}})


@dataclass
class FillRound(Tally):
    """What one round (or a pass so far) did: documents read, given their bucket, and those
    that had one by the time of the write (a projection write came first)."""

    read: int = 0
    filled: int = 0
    raced: int = 0
    done: bool = False


@dataclass
class SampleBackfill(LeasedBackfill[FillRound]):
    """Gives the projected contacts without one their sample bucket, a round at a time
    (`LeasedBackfill`). Started with the worker; once a pass is recorded done, a start costs
    one read of the checkpoint."""

    checkpoint_id: ClassVar[str] = CHECKPOINT
    name: ClassVar[str] = "sample backfill"
    read_fields: ClassVar[Document] = READ
    counted: ClassVar[tuple[str, ...]] = COUNTS

    async def needed(self) -> bool:
        """Whether no pass has finished yet: one read of the checkpoint."""
        checkpoint = await self.checkpoints.find_one({"_id": CHECKPOINT}, {"done": 1})
        return not (checkpoint or {}).get("done")

    async def rewrite(self, rows: list[Document]) -> FillRound:
        return await self.fill(rows)

    async def fill(self, rows: list[Document]) -> FillRound:
        """Give these documents, read earlier, their sample bucket where they still lack it."""
        updates = [update for row in rows if (update := filling(row)) is not None]
        matched = 0
        if updates:
            matched = (await self.documents.bulk_write(updates, ordered=False)).matched_count
        return FillRound(len(rows), matched, len(updates) - matched)
