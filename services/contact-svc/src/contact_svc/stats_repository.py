"""Profile statistics as stored (see stats.py): the port and its MongoDB implementation."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Protocol

from pymongo.errors import DuplicateKeyError

from contact_svc.stats import CountedMark, PartitionCounts
from contacts_shared.mongo import (
    Collection,
    Document,
    StaleDocument,
    find_by_ids,
    put_each,
    update_if,
)


class StatsStore(Protocol):
    async def marks(self, contact_ids: Sequence[str]) -> dict[str, CountedMark]: ...

    async def set_marks(
        self, marks: Mapping[str, CountedMark], *, stored: Container[str] = ()
    ) -> None: ...

    async def share(self, profile_id: str, partition: int) -> PartitionCounts: ...

    async def store(self, counts: PartitionCounts, *, expected_offset: int) -> None: ...

    async def of_profile(self, profile_id: str) -> list[PartitionCounts]: ...

    async def of_profiles(self, profile_ids: Sequence[str]) -> dict[str, list[PartitionCounts]]: ...


class MongoStatsStore:
    """Per profile, a directory document (`_id` = profile id) listing the partitions that have
    counted its contacts, and a document per partition (`_id` = `profile_id|partition`), so
    reading the statistics of a profile, or of a page of profiles, takes one `$in` query on
    `_id`, however many contacts they have; and per contact, the mark of the last event counted
    (see `stats.to_count`)."""

    def __init__(self, collection: Collection, marks: Collection, *, partitions: int = 1) -> None:
        """`partitions`: how many `contacts.events` has (`topic_partitions`); the shares of
        those are read in the same query as the directories."""
        self._collection = collection
        self._marks = marks  # `_id` = contact id: a `CountedMark`
        self._partitions = partitions

    async def marks(self, contact_ids: Sequence[str]) -> dict[str, CountedMark]:
        found = await find_by_ids(self._marks, contact_ids)
        # Marks written before `before` was kept count on from their own version.
        return {
            d["_id"]: CountedMark(
                d["version"], d["offset"], d["before"] if "before" in d else d["version"]
            )
            for d in found
        }

    async def set_marks(
        self, marks: Mapping[str, CountedMark], *, stored: Container[str] = ()
    ) -> None:
        """Write the marks; `stored`: the ids `marks` found (most marks are new: a contact's
        first event), see `put_each`."""
        documents = {
            contact_id: {"version": m.version, "offset": m.offset, "before": m.before}
            for contact_id, m in marks.items()  # asdict's deep copy costs several times more
        }
        await put_each(self._marks, documents, stored=stored)

    async def share(self, profile_id: str, partition: int) -> PartitionCounts:
        document = await self._collection.find_one({"_id": _share_id(profile_id, partition)})
        return _counts(profile_id, partition, document)

    async def store(self, counts: PartitionCounts, *, expected_offset: int) -> None:
        """Write the share if it still stands at `expected_offset` (-1: not written yet)."""
        share_id = _share_id(counts.profile_id, counts.partition)
        fields = {
            "offset": counts.offset,
            "by_status": counts.by_status,
            "added_by_day": counts.added_by_day,
            "last_change_at": counts.last_change_at,
        }
        if expected_offset >= 0:
            if not await update_if(
                self._collection, share_id, {"offset": expected_offset}, {"$set": fields}
            ):
                raise StaleDocument(share_id)
            return
        # Listed before it is written: a crash in between leaves a listed share that is absent,
        # which reads as zero, never a written share that no reader finds. (FerretDB v2 may
        # drop one of several `$addToSet`s racing to create the directory: seen 10 times in 60
        # races of six partitions. The shares of the topic's partitions are read whether listed
        # or not, see `of_profiles`; the directory names those of partitions added later.)
        await self._collection.update_one(
            {"_id": counts.profile_id},
            {"$addToSet": {"partitions": counts.partition}},
            upsert=True,
        )
        try:
            await self._collection.insert_one({"_id": share_id, **fields})
        except DuplicateKeyError:
            raise StaleDocument(share_id) from None

    async def of_profile(self, profile_id: str) -> list[PartitionCounts]:
        """The shares of the partitions the profile's directory lists (none: no contacts yet)."""
        return (await self.of_profiles([profile_id]))[profile_id]

    async def of_profiles(self, profile_ids: Sequence[str]) -> dict[str, list[PartitionCounts]]:
        """`of_profile` for each profile, in one query: the directories and the shares of the
        partitions expected, by `_id`; a second reads those of any further partition listed."""
        expected = range(self._partitions)
        wanted = [*profile_ids, *(_share_id(p, n) for p in profile_ids for n in expected)]
        found = {d["_id"]: d for d in await find_by_ids(self._collection, wanted)}
        # The expected partitions' shares count when present, listed or not (see `store`).
        listed = {
            p: sorted(
                {*(found[p]["partitions"] if p in found else [])}
                | {n for n in expected if _share_id(p, n) in found}
            )
            for p in profile_ids
        }
        further = [_share_id(p, n) for p, ns in listed.items() for n in ns if n not in expected]
        found |= {d["_id"]: d for d in await find_by_ids(self._collection, further)}
        return {
            p: [_counts(p, n, found.get(_share_id(p, n))) for n in partitions]
            for p, partitions in listed.items()
        }


def _share_id(profile_id: str, partition: int) -> str:
    return f"{profile_id}|{partition}"


def _counts(profile_id: str, partition: int, document: Document | None) -> PartitionCounts:
    """A partition's share as stored; zero if absent (listed, but not written yet)."""
    if document is None:
        return PartitionCounts(profile_id, partition)
    return PartitionCounts(
        profile_id,
        partition,
        offset=document["offset"],
        by_status=document["by_status"],
        added_by_day=document["added_by_day"],
        last_change_at=document["last_change_at"],
    )
