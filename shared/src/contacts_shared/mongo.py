"""MongoDB access through PyMongo's native asyncio client (Motor's successor)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

T = TypeVar("T")
Document = dict[str, Any]
MongoClient = AsyncMongoClient[Document]
Database = AsyncDatabase[Document]
Collection = AsyncCollection[Document]


def connect(url: str, *, app_name: str) -> MongoClient:
    """A client that connects lazily; no I/O happens until the first command."""
    return AsyncMongoClient(url, appname=app_name, tz_aware=True, serverSelectionTimeoutMS=5000)


async def ping(client: MongoClient) -> None:
    """Raise unless the server answers."""
    await client.admin.command("ping")


# What makes two indexes of one name the same index, besides their keys.
INDEX_OPTIONS = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds")
INDEX_NOT_FOUND = 27


def _same_index(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return list(existing["key"].items()) == list(wanted["key"].items()) and all(
        bool(existing.get(option)) == bool(wanted.get(option))
        if option in ("unique", "sparse")
        else existing.get(option) == wanted.get(option)
        for option in INDEX_OPTIONS
    )


async def ensure_indexes(collection: Collection, wanted: Sequence[IndexModel]) -> None:
    """Make the collection's indexes exactly `wanted` (plus `_id_`): create the missing ones,
    rebuild one whose keys or options changed under the same name, drop those no longer
    wanted. A new version's start-up so brings an older database in line instead of failing on
    a conflicting definition. Replicas starting together may race; each step tolerates that."""
    existing = {index["name"]: index async for index in await collection.list_indexes()}
    existing.pop("_id_", None)
    for model in wanted:
        name = model.document["name"]
        current = existing.pop(name, None)
        if current is not None and _same_index(current, model.document):
            continue
        if current is not None:
            await _drop_index(collection, name)
        await collection.create_indexes([model])
    for name in existing:
        await _drop_index(collection, name)


async def _drop_index(collection: Collection, name: str) -> None:
    try:
        await collection.drop_index(name)
    except OperationFailure as exc:
        if exc.code != INDEX_NOT_FOUND:
            raise


class DocumentLocks:
    """Serializes this process's writes to the same document.

    MongoDB applies each single-document update atomically; FerretDB v1 (the local server) does
    not: concurrent updates of one document lose writes (docs/adr/0004). Every writer of a
    document in a process takes its lock, so both servers see one update at a time per document.
    """

    def __init__(self) -> None:
        self._locks: dict[object, asyncio.Lock] = {}
        self._holders: dict[object, int] = {}

    @asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if self._holders[key] == 0:
                del self._holders[key], self._locks[key]


class ConditionalWriter:
    """Single-document updates applied only if the document still holds given values (its
    version, say): optimistic concurrency on either server.

    MongoDB takes the conditions in the filter. FerretDB v1 pushes only a filter of `_id`
    alone down into SQL and evaluates anything more in Go, several times slower
    (docs/adr/0004), so there the
    writer reads the document by `_id`, compares, and updates by `_id`, holding the document's
    lock; that is exact within the one process FerretDB deployments run per service.
    """

    def __init__(self, locks: DocumentLocks, *, id_only_filters: bool) -> None:
        self.locks = locks
        self.id_only_filters = id_only_filters

    @classmethod
    async def for_server(cls, client: MongoClient, locks: DocumentLocks) -> ConditionalWriter:
        build = await client.admin.command("buildInfo")
        return cls(locks, id_only_filters="ferretdbVersion" in build)

    async def find_by_ids(
        self, collection: Collection, ids: Sequence[object], projection: Document | None = None
    ) -> list[Document]:
        """The documents with these `_id`s that exist, in no particular order: one `$in` query
        on MongoDB, concurrent `_id` lookups on FerretDB (which would scan for `$in`)."""
        if not ids:
            return []
        if not self.id_only_filters:
            return [d async for d in collection.find({"_id": {"$in": list(ids)}}, projection)]
        found = await asyncio.gather(*(collection.find_one({"_id": i}, projection) for i in ids))
        return [document for document in found if document is not None]

    async def update_each(
        self,
        collection: Collection,
        updates: Sequence[tuple[object, Document]],
        *,
        upsert: bool = False,
    ) -> None:
        """Apply each update to the document with that `_id`: one unordered bulk write on
        MongoDB; on FerretDB one at a time under the document's lock, as its multi-statement
        updates can hang beside concurrent inserts (docs/adr/0004)."""
        if not updates:
            return
        if not self.id_only_filters:
            await collection.bulk_write(
                [UpdateOne({"_id": i}, u, upsert=upsert) for i, u in updates], ordered=False
            )
            return
        for document_id, update in updates:
            async with self.locks.hold(document_id):
                await collection.update_one({"_id": document_id}, update, upsert=upsert)

    async def update_if(
        self, collection: Collection, document_id: object, conditions: Document, update: Document
    ) -> bool:
        """Apply `update` if the document exists and equals `conditions`; True if applied."""
        async with self.locks.hold(document_id):
            if not self.id_only_filters:
                result = await collection.update_one({"_id": document_id, **conditions}, update)
                return result.matched_count == 1
            current = await collection.find_one({"_id": document_id}, dict.fromkeys(conditions, 1))
            if current is None or any(current.get(k) != v for k, v in conditions.items()):
                return False
            await collection.update_one({"_id": document_id}, update)
            return True


def bson_now() -> datetime:
    """Now in UTC, to the millisecond: what BSON dates hold, so stored and returned times agree."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class StaleDocument(Exception):
    """The document changed (or went) since it was read; read it again and retry."""


async def retry_if_stale(change: Callable[[], Awaitable[T]], *, attempts: int = 5) -> T:
    """Run an optimistic read-change-write again while a concurrent writer got there first."""
    for _ in range(attempts - 1):
        try:
            return await change()
        except StaleDocument:
            continue
    return await change()
