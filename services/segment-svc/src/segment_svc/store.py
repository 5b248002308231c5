"""segment-svc's MongoDB collections: the virtual profiles it keeps (`segments`), its projection
of the contacts rules read with their memberships (`contacts`), and the members of each
segment as the API lists them (`members`)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from pydantic_core import to_json
from pymongo import ASCENDING, IndexModel, InsertOne, ReturnDocument, UpdateOne

from contacts_shared.journal import JOURNAL, EventJournal, JournaledWrite, JournalRound
from contacts_shared.kafka import EventPublisher, OutgoingMessage, event_message
from contacts_shared.mongo import (
    Collection,
    Document,
    bson_now,
    bulk_write_tolerating_duplicates,
    ensure_indexes,
    find_by_ids,
    prefix_range,
    put_each,
)
from contacts_shared.profiles import MongoSchemaStore, ProfileSchema
from contacts_shared.rules import RuleGroup, conditions
from contacts_shared.schema import ContactStatus, ProfileSnapshot
from contacts_shared.values import name_key
from segment_svc.counts import TOTAL, Fold, Mark, Standing
from segment_svc.evaluate import Segment, reads_relative_dates
from segment_svc.membership import SAMPLE, Write, sample_term


def contact_range(profile_id: str) -> Document:
    """The `_id` range of a profile's contacts (`profile_id:key`)."""
    return prefix_range(f"{profile_id}:")


class SegmentStore:
    """Virtual profiles as segment-svc knows them from profile events, with their rebuild state:
    `rebuild.request` grows with every request (rules changed, a field they read came or went,
    a new day for relative-date rules); a rebuild is done when it finished the latest request."""

    def __init__(self, collection: Collection, schemas: MongoSchemaStore) -> None:
        self._collection = collection
        self._schemas = schemas

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._collection,
            [
                IndexModel([("base_profile_id", ASCENDING)], name="by_base"),
                IndexModel([("rebuild.pending", ASCENDING)], name="rebuild_pending"),
            ],
        )

    async def apply_virtual(self, profile: ProfileSnapshot) -> None:
        """Keep a virtual profile's newest rules; a change of rules asks for a rebuild. Older
        or repeated events change nothing (one writer: the profile events' consumer)."""
        held = await self._collection.find_one({"_id": profile.id})
        if held is not None and held["version"] >= profile.version:
            return
        rules_changed = held is None or held["rules"] != profile.rules
        update: Document = {
            "$set": {
                "account_id": profile.account_id,
                "name": profile.name,
                "base_profile_id": profile.base_profile_id,
                "rules": profile.rules,
                "version": profile.version,
                "deleted": False,
                "relative_dates": reads_relative_dates(RuleGroup.model_validate(profile.rules)),
                **({"rules_version": profile.version} if rules_changed else {}),
            }
        }
        if rules_changed:
            update["$set"]["rebuild.pending"] = True
            update["$set"]["rebuild.reason"] = "rules_changed" if held else "created"
            update["$inc"] = {"rebuild.request": 1}
        await self._collection.update_one({"_id": profile.id}, update, upsert=True)

    async def delete(self, segment_id: str, version: int) -> None:
        """A deleted virtual profile: its members leave (by a rebuild that admits nobody)."""
        await self._collection.update_one(
            {"_id": segment_id, "version": {"$lt": version}},
            {
                "$set": {
                    "deleted": True,
                    "version": version,
                    "rebuild.pending": True,
                    "rebuild.reason": "segment_deleted",
                },
                "$inc": {"rebuild.request": 1},
            },
        )

    async def request_rebuild(self, base_profile_id: str, field_name: str, reason: str) -> None:
        """Rebuild the segments of a base profile whose rules name `field_name`."""
        wanted = name_key(field_name)
        cursor = self._collection.find(
            {"base_profile_id": base_profile_id, "deleted": False}, {"rules": 1}
        )
        naming = [
            document["_id"]
            async for document in cursor
            if any(
                name_key(c.field) == wanted
                for c in conditions(RuleGroup.model_validate(document["rules"]))
            )
        ]
        if naming:
            await self._collection.update_many(
                {"_id": {"$in": naming}},
                {
                    "$set": {"rebuild.pending": True, "rebuild.reason": reason},
                    "$inc": {"rebuild.request": 1},
                },
            )

    async def segment(self, document: Document, schema: ProfileSchema | None = None) -> Segment:
        """The segment a stored virtual profile is, over its base profile's `schema` (read
        when not given)."""
        schema = schema or await self._schemas.get(document["base_profile_id"])
        return Segment(
            id=document["_id"],
            account_id=document["account_id"],
            base_profile_id=document["base_profile_id"],
            rules=RuleGroup.model_validate(document["rules"]),
            rules_version=document["rules_version"],
            base_fields=schema.fields if schema is not None else (),
        )

    async def of_profiles(self, base_profile_ids: Sequence[str]) -> dict[str, list[Segment]]:
        """The live segments over each of these base profiles."""
        found: dict[str, list[Segment]] = {base: [] for base in base_profile_ids}
        schemas: dict[str, ProfileSchema | None] = {}
        async for document in self._collection.find(
            {"base_profile_id": {"$in": list(base_profile_ids)}, "deleted": False}
        ):
            base = document["base_profile_id"]
            if base not in schemas:
                schemas[base] = await self._schemas.get(base)
            found[base].append(await self.segment(document, schemas[base]))
        return found

    async def get(self, segment_id: str) -> Document | None:
        return await self._collection.find_one({"_id": segment_id})

    async def live_of_account(self, account_id: str, segment_ids: Sequence[str]) -> set[str]:
        """Those of `segment_ids` that are live virtual profiles of the account: one query."""
        cursor = self._collection.find(
            {"_id": {"$in": list(segment_ids)}, "account_id": account_id, "deleted": False},
            {"_id": 1},
        )
        return {document["_id"] async for document in cursor}

    async def names_of(self, account_id: str, segment_ids: Sequence[str]) -> dict[str, str | None]:
        """Those of `segment_ids` that are live virtual profiles of the account, with their
        names (None: known from before names were kept): one query of the `_id` index."""
        cursor = self._collection.find(
            {"_id": {"$in": list(segment_ids)}, "account_id": account_id, "deleted": False},
            {"_id": 1, "name": 1},
        )
        return {document["_id"]: document.get("name") async for document in cursor}

    async def claim_rebuild(self, owner: str, lease: timedelta) -> Document | None:
        """Take a pending rebuild nobody holds (or whose holder's lease ran out)."""
        now = bson_now()
        return await self._collection.find_one_and_update(
            {
                "rebuild.pending": True,
                "$or": [{"rebuild.lease_until": None}, {"rebuild.lease_until": {"$lt": now}}],
            },
            {"$set": {"rebuild.owner": owner, "rebuild.lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )

    async def checkpoint(
        self, segment_id: str, owner: str, lease: timedelta, progress: Mapping[str, Any]
    ) -> Document | None:
        """Record a rebuild's progress and extend its lease; None if another took it over."""
        return await self._collection.find_one_and_update(
            {"_id": segment_id, "rebuild.owner": owner},
            {
                "$set": {
                    "rebuild.lease_until": bson_now() + lease,
                    **{f"rebuild.{k}": v for k, v in progress.items()},
                }
            },
            return_document=ReturnDocument.AFTER,
        )

    async def finish_rebuild(
        self,
        segment_id: str,
        owner: str,
        request: int,
        outcome: Mapping[str, Any],
        *,
        evaluated_on: str,
    ) -> None:
        """The rebuild of `request` is done; a request made meanwhile keeps it pending."""
        await self._collection.update_one(
            {"_id": segment_id, "rebuild.owner": owner},
            {
                "$set": {
                    "evaluated_on": evaluated_on,
                    "rebuild.pending": False,
                    "rebuild.last": dict(outcome),
                    "rebuild.lease_until": None,
                    "rebuild.progress": None,
                }
            },
        )
        await self._collection.update_one(
            {"_id": segment_id, "rebuild.request": {"$gt": request}},
            {"$set": {"rebuild.pending": True}},
        )

    async def request_new_day_rebuilds(self, today: str) -> int:
        """Ask for a rebuild of each segment with relative-date rules last evaluated before
        `today` (UTC): their members change with the date alone. How many."""
        result = await self._collection.update_many(
            {
                "deleted": False,
                "relative_dates": True,
                "evaluated_on": {"$lt": today},
                "rebuild.pending": False,
            },
            {
                "$set": {"rebuild.pending": True, "rebuild.reason": "new_day"},
                "$inc": {"rebuild.request": 1},
            },
        )
        return result.modified_count


class ContactProjection:
    """Each contact's newest state and memberships, one document per contact (`_id` = contact
    id). Writers (the contact events' consumer, rebuilds) read a document, then write it only
    if its `rev` is unchanged; a lost race is read again and evaluated again."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def create_indexes(self) -> None:
        # One string per document, `profile_id:bucket`: an equality is one term of the index
        # (DocumentDB keeps each field of a compound index as a term of its own, ADR 9).
        await ensure_indexes(
            self._collection, [IndexModel([(SAMPLE, ASCENDING)], name=SAMPLE, sparse=True)]
        )

    async def load(self, ids: Sequence[str]) -> dict[str, Document]:
        return {d["_id"]: d for d in await find_by_ids(self._collection, ids)}

    async def memberships(self, contact_id: str) -> Document | None:
        """A contact's account, deletion and memberships: one read of the `_id` index."""
        return await self._collection.find_one(
            {"_id": contact_id}, {"account_id": 1, "deleted": 1, "segments": 1}
        )

    async def write(self, writes: Sequence[Write], token: str) -> list[str]:
        """Write each `(held, new fields, entries)`, stamped with `token` (the journal of their
        entries, if they have any): an insert where nothing was held, else an update
        conditional on the held `rev`. Returns the ids whose write lost a race."""
        operations: list[InsertOne[Document] | UpdateOne] = []
        for held, fields, _ in writes:
            if held is None:
                operations.append(InsertOne({**fields, JOURNAL: token, "rev": 1}))
            else:
                update: Document = {"$set": {**fields, JOURNAL: token}, "$inc": {"rev": 1}}
                operations.append(UpdateOne({"_id": held["_id"], "rev": held["rev"]}, update))
        outcome = await bulk_write_tolerating_duplicates(self._collection, operations)
        if outcome.applied == len(operations):
            return []
        ids = [fields["_id"] for _, fields, _ in writes]
        written = await find_by_ids(self._collection, ids, {JOURNAL: 1})
        done = {d["_id"] for d in written if d.get(JOURNAL) == token}
        return [i for i in ids if i not in done]

    async def page(
        self,
        profile_id: str,
        after: str | None,
        limit: int,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[Document]:
        """The next contacts of a profile in `_id` order (a rebuild's walk); `fields`: only
        those of their documents."""
        bounds = contact_range(profile_id)
        if after is not None:
            bounds = {**bounds, "$gt": after}
        cursor = (
            self._collection.find({"_id": bounds}, fields, limit=limit).sort("_id").hint("_id_")
        )
        return [d async for d in cursor]

    async def nth_id(self, profile_id: str, skipped: int) -> str | None:
        """The `_id` of the profile's contact after the first `skipped` in `_id` order (deleted
        ones included); None if it has no more. Read from the `_id` index alone."""
        cursor = (
            self._collection.find({"_id": contact_range(profile_id)}, {"_id": 1})
            .sort("_id")
            .hint("_id_")
            .skip(skipped)
            .limit(1)
        )
        found = [d["_id"] async for d in cursor]
        return found[0] if found else None

    async def count_unbucketed(self, profile_id: str, below: str) -> int:
        """The profile's contacts before `below` in `_id` order whose documents lack their sample
        bucket (written before buckets were kept)."""
        bounds = {**contact_range(profile_id), "$lt": below}
        return await self._collection.count_documents(
            {"_id": bounds, SAMPLE: {"$exists": False}}, hint="_id_"
        )

    # The sample reads name no index: the planner takes `sample` (measured), and an API started
    # before a worker made it (the worker makes indexes) answers slowly instead of failing.
    async def bucket_size(self, profile_id: str, bucket: int) -> int:
        """How many of the profile's contacts (deleted ones included) one sample bucket holds."""
        return await self._collection.count_documents({SAMPLE: sample_term(profile_id, bucket)})

    async def in_buckets(
        self, profile_id: str, buckets: Iterable[int], fields: Sequence[str]
    ) -> list[Document]:
        """These `fields` of a profile's contacts in these sample buckets, in no order: of
        those whose documents carry their bucket, read from its index."""
        terms = [sample_term(profile_id, bucket) for bucket in buckets]
        return [d async for d in self._collection.find({SAMPLE: {"$in": terms}}, fields)]


class Members:
    """Each segment's members (`_id` = `segment_id|key`, so a segment's members are one `_id`
    range in key order). A member who left stays as a tombstone for a while, so a late copy of
    an older entry (two relays racing) cannot bring it back: writes are ordered by the contact
    document's `rev` that made them."""

    TOMBSTONE_TTL = timedelta(minutes=10)

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._collection,
            [
                IndexModel([("segment_id", ASCENDING), ("status", ASCENDING)], name="by_status"),
                IndexModel([("left_at", ASCENDING)], name="tombstones", sparse=True),
            ],
        )

    async def apply(self, entries: Sequence[Document]) -> None:
        """Apply member changes, each only over older ones (by `rev`): entering members are
        inserted where no record is (an upsert of a new document costs several inserts on
        DocumentDB), the rest, and those refused, updated in one bulk write."""
        records = [(f"{entry['segment_id']}|{entry['key']}", entry) for entry in entries]
        entering = [(_id, entry) for _id, entry in records if entry["kind"] == "entered"]
        outcome = await bulk_write_tolerating_duplicates(
            self._collection,
            [InsertOne({"_id": _id, **self._values(entry), "in": True}) for _id, entry in entering],
        )
        refused = {entering[index][0] for index in outcome.duplicates}
        operations = []
        for _id, entry in records:
            if entry["kind"] == "entered" and _id not in refused:
                continue
            change: Document = (
                {"$set": {**self._values(entry), "in": True}, "$unset": {"left_at": ""}}
                if entry["member"] is not None
                else {"$set": {**self._values(entry), "in": False, "left_at": bson_now()}}
            )
            operations.append(
                UpdateOne({"_id": _id, "rev": {"$lt": entry["rev"]}}, change, upsert=True)
            )
        # A member record already at a newer rev makes its upsert collide: it stays.
        await bulk_write_tolerating_duplicates(self._collection, operations)

    @staticmethod
    def _values(entry: Document) -> Document:
        return {
            "rev": entry["rev"],
            "segment_id": entry["segment_id"],
            "key": entry["key"],
            "contact_id": entry["contact_id"],
            **(entry["member"] or {}),
        }

    async def forget_tombstones(self) -> int:
        result = await self._collection.delete_many(
            {"left_at": {"$lt": bson_now() - self.TOMBSTONE_TTL}}
        )
        return result.deleted_count

    @staticmethod
    def _range(segment_id: str, key_prefix: str, after: str | None = None) -> Document:
        """The segment's members whose keys start with `key_prefix` (and come after `after`):
        one range of the `_id` index."""
        ids = prefix_range(f"{segment_id}|{key_prefix}")
        if after is not None:
            ids["$gt"] = f"{segment_id}|{after}"
        return {"_id": ids, "in": True}

    async def page(
        self, segment_id: str, after: str | None, limit: int, key_prefix: str = ""
    ) -> list[Document]:
        """The next members in key order, of those whose keys start with `key_prefix`."""
        cursor = (
            self._collection.find(self._range(segment_id, key_prefix, after), limit=limit)
            .sort("_id")
            .hint("_id_")
        )
        return [d async for d in cursor]

    async def pages(
        self, segment_id: str, key_prefix: str = "", size: int = 500
    ) -> AsyncIterator[list[Document]]:
        """Every member whose key starts with `key_prefix`, a page at a time, in key order."""
        after: str | None = None
        while page := await self.page(segment_id, after, size, key_prefix):
            yield page
            after = page[-1]["key"]

    async def count(self, segment_id: str, key_prefix: str) -> int:
        """Members whose keys start with `key_prefix`, counted over their `_id` range."""
        return await self._collection.count_documents(
            self._range(segment_id, key_prefix), hint="_id_"
        )

    async def get(self, segment_id: str, key: str) -> Document | None:
        return await self._collection.find_one({"_id": f"{segment_id}|{key}", "in": True})

    async def counts(self, segment_id: str) -> dict[str, int]:
        """Members per status."""
        counts = {status.value: 0 for status in ContactStatus}
        pipeline: list[Document] = [
            {"$match": {"segment_id": segment_id, "in": True}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ]
        async for row in await self._collection.aggregate(pipeline):
            counts[row["_id"]] = row["n"]
        return counts


def _mark_id(key: tuple[str, str]) -> str:
    """A member mark's `_id`: `segment_id|contact_id`."""
    return f"{key[0]}|{key[1]}"


class MemberCounts:
    """Member counts folded from `segments.events` (`segment_svc.counts`): `member_marks`
    (`_id` = `segment_id|contact_id`) and `member_shares` (`_id` = `segment_id|partition`)."""

    def __init__(self, marks: Collection, shares: Collection) -> None:
        self._marks = marks
        self._shares = shares

    async def marks_of(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Mark]:
        found = await find_by_ids(self._marks, [_mark_id(key) for key in keys])
        return {
            (d["segment_id"], d["contact_id"]): Mark(
                Standing(d["member"], d["status"]),
                d["sequence"],
                d["offset"],
                Standing(d["was_member"], d["was_status"]),
                # Marks written before `was_sequence` was kept: `was_*` is from just before.
                d["was_sequence"] if "was_sequence" in d else d["sequence"] - 1,
            )
            for d in found
        }

    async def counted_to(self, shares: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The offset each `(segment, partition)` share has counted to."""
        found = await find_by_ids(self._shares, [f"{s}|{p}" for s, p in shares])
        return {(d["segment_id"], int(d["_id"].rsplit("|", 1)[1])): d["offset"] for d in found}

    async def record(
        self, folds: Sequence[Fold], *, stored: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Marks first, then each segment's share of each partition, once up to its offset;
        `stored`: the marks `marks_of` found (see `put_each`)."""
        marks = {
            _mark_id(key): {
                "segment_id": key[0],
                "contact_id": key[1],
                "member": mark.standing.member,
                "status": mark.standing.status,
                "was_member": mark.before.member,
                "was_status": mark.before.status,
                "was_sequence": mark.before_sequence,
                "sequence": mark.sequence,
                "offset": mark.offset,
            }
            for counted in folds
            for key, mark in counted.marks.items()
        }
        await put_each(self._marks, marks, stored={_mark_id(key) for key in stored})
        shares = []
        for counted in folds:
            # Every segment of the batch moves its share's offset, even with nothing to add.
            for segment_id in {segment_id for segment_id, _ in counted.marks}:
                delta = counted.deltas.get(segment_id, {})
                change: Document = {
                    "$set": {
                        "segment_id": segment_id,
                        "offset": counted.offset,
                    }
                }
                if delta:
                    change["$inc"] = {f"counts.{k}": v for k, v in delta.items()}
                shares.append(
                    UpdateOne(
                        {
                            "_id": f"{segment_id}|{counted.partition}",
                            "offset": {"$lt": counted.offset},
                        },
                        change,
                        upsert=True,
                    )
                )
        # A share that already counted up to here (a redelivered batch) collides: it stays.
        await bulk_write_tolerating_duplicates(self._shares, shares)

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._shares, [IndexModel([("segment_id", ASCENDING)], name="by_segment")]
        )

    async def counts(self, segment_id: str) -> dict[str, int]:
        """Members in all (`members`) and per status."""
        return (await self.counts_of([segment_id]))[segment_id]

    async def counts_of(self, segment_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """`counts` of each of these segments, their shares read in one query."""
        totals: dict[str, Counter[str]] = {}
        for segment_id in segment_ids:
            totals[segment_id] = Counter({status.value: 0 for status in ContactStatus})
            totals[segment_id][TOTAL] = 0
        async for share in self._shares.find(
            {"segment_id": {"$in": list(totals)}}, {"segment_id": 1, "counts": 1}
        ):
            totals[share["segment_id"]].update(share.get("counts") or {})
        return {segment_id: dict(total) for segment_id, total in totals.items()}


class MembershipRelay:
    """Writes contacts' documents and then, once, what their writes tell: membership events
    and member records, journaled beside the documents (ADR 12) rather than in them, so each
    document is written once."""

    def __init__(
        self,
        projection: ContactProjection,
        members: Members,
        publisher: EventPublisher,
        journal: EventJournal,
    ) -> None:
        self._projection = projection
        self.members = members
        self._publisher = publisher
        self._journal = journal

    async def write(self, writes: Sequence[Write]) -> set[str]:
        """Journal the writes' entries, write the documents stamped with the journal's token
        (`ContactProjection.write`), then publish and apply the entries of those written and
        remove the journal; the ids whose write lost a race. What a live journal (a writer
        that died, or one racing this one) holds of these documents goes out first."""
        await self._journal.flush([held for held, _, _ in writes if held], self._publisher)
        journaled = [
            JournaledWrite(
                fields["_id"], [_message(e) for e in entries], [_record(e) for e in entries]
            )
            for _, fields, entries in writes
            if entries
        ]
        token = await self._journal.record(journaled) if journaled else uuid.uuid4().hex
        lost = set(await self._projection.write(writes, token))
        if journaled:
            done = JournalRound()
            done.applied(token, (w for w in journaled if w.document_id not in lost))
            await self._journal.publish(done, self._publisher)
        return lost

    async def sweep(self) -> int:
        """Publish and apply what writers that died left in journals past their lease; how
        many journals."""
        return await self._journal.sweep(self._publisher)


def _message(entry: Document) -> OutgoingMessage:
    """A membership entry's event, keyed by contact so one contact's events stay in order."""
    return event_message(entry["topic"], entry["contact_id"], to_json(entry["envelope"]))


def _record(entry: Document) -> Document:
    """A membership entry's member record change (`Members.apply`)."""
    return {k: entry[k] for k in ("kind", "segment_id", "key", "contact_id", "rev", "member")}
