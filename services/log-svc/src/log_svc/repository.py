"""log-svc storage: the import log (one document per import, its newest snapshot), each
import's refused rows (one document per row), and the contacts' audit trail (one document per
contact version)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, DeleteMany, IndexModel, InsertOne

from contacts_shared import tracing
from contacts_shared.events import ImportSnapshot, RefusedRow
from contacts_shared.mongo import (
    Collection,
    Document,
    bulk_write_tolerating_duplicates,
    ensure_indexes,
    prefix_range,
    replace_if_newer,
    update_each,
)
from log_svc.audit import erased_range, stored_document, stored_entry, trail_range


class ImportLog:
    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._collection,
            [IndexModel([("account_id", ASCENDING), ("created_at", DESCENDING)], name="newest")],
        )

    async def record(self, snapshot: ImportSnapshot) -> bool:
        """Keep the snapshot unless a newer one is there (events may come again, or late)."""
        document = snapshot.model_dump(mode="python")
        del document["id"]
        return await replace_if_newer(
            self._collection, snapshot.id, {"version": {"$lt": snapshot.version}}, document
        )

    async def get(self, import_id: str) -> ImportSnapshot | None:
        document = await self._collection.find_one({"_id": import_id})
        return _snapshot(document) if document else None

    async def page(
        self,
        account_id: str,
        *,
        profile_id: str | None,
        statuses: Sequence[str],
        since: datetime | None,
        until: datetime | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[ImportSnapshot]:
        """The account's imports, newest first, after the cursor `before` (created, id)."""
        query: Document = {"account_id": account_id}
        if profile_id:
            query["profile_id"] = profile_id
        if statuses:
            query["status"] = {"$in": list(statuses)}
        created: dict[str, Any] = {}
        if since:
            created["$gte"] = since
        if until:
            created["$lt"] = until
        if created:
            query["created_at"] = created
        if before is not None:
            at, import_id = before
            query["$or"] = [
                {"created_at": {"$lt": at}},
                {"created_at": at, "_id": {"$lt": import_id}},
            ]
        cursor = self._collection.find(query).sort(
            [("created_at", DESCENDING), ("_id", DESCENDING)]
        )
        return [_snapshot(document) async for document in cursor.limit(limit)]


def _snapshot(document: Document) -> ImportSnapshot:
    return ImportSnapshot.model_validate({**document, "id": document["_id"]})


class RefusedRows:
    """`_id` is `import id:line number`, so an import's rows are one range, in line order, and
    a row told again (by a resumed import) is written over itself."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def record(self, import_id: str, rows: Sequence[RefusedRow]) -> None:
        await update_each(
            self._collection,
            [(f"{import_id}:{row.line:012d}", {"$set": row.model_dump()}) for row in rows],
            upsert=True,
        )

    async def of_import(self, import_id: str) -> AsyncIterator[RefusedRow]:
        """The import's refused rows in line order, streamed."""
        ids = prefix_range(f"{import_id}:")
        async for document in self._collection.find({"_id": ids}).sort("_id", ASCENDING):
            yield RefusedRow.model_validate(document)

    async def page_of_import(
        self, import_id: str, *, after_line: int, limit: int
    ) -> list[RefusedRow]:
        """The import's refused rows after line `after_line`, in line order, `limit` at most."""
        ids = {"$gt": f"{import_id}:{after_line:012d}", "$lt": prefix_range(f"{import_id}:")["$lt"]}
        cursor = self._collection.find({"_id": ids}).sort("_id", ASCENDING).limit(limit)
        return [RefusedRow.model_validate(document) async for document in cursor]


class AuditTrail:
    """One entry per contact version (`audit.audit_entry`), stored without what its `_id`
    holds (`audit.stored_document`); the `_id` index is its only index."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def record(self, entries: Sequence[Document]) -> None:
        """Write the entries, in one unordered bulk write; one written again (a redelivery, an
        event published twice) is there already, the same, and stays. Inserts: an upsert of a
        new document costs several times an insert on this server."""
        await bulk_write_tolerating_duplicates(
            self._collection, [InsertOne(stored_document(e)) for e in entries]
        )

    async def erase(self, erased: Mapping[str, int]) -> None:
        """Delete each contact's entries up to its version (`contact id -> version`), in one
        unordered bulk write; those of later versions (the contact added again) stay."""
        if erased:
            with tracing.writing(self._collection, "bulkWrite", len(erased)):
                await self._collection.bulk_write(
                    [DeleteMany({"_id": erased_range(c, v)}) for c, v in erased.items()],
                    ordered=False,
                )

    async def of_contact(self, contact_id: str, after_version: int, limit: int) -> list[Document]:
        """The contact's entries after `after_version`, oldest first."""
        cursor = self._collection.find({"_id": trail_range(contact_id, after_version)})
        return [stored_entry(d) async for d in cursor.sort("_id", ASCENDING).limit(limit)]

    async def newest_of_contact(
        self, contact_id: str, before_version: int | None, limit: int
    ) -> list[Document]:
        """The contact's entries before `before_version` (all if None), newest first."""
        ids = trail_range(contact_id, before_version=before_version)
        cursor = self._collection.find({"_id": ids}).sort("_id", DESCENDING)
        return [stored_entry(d) async for d in cursor.limit(limit)]
