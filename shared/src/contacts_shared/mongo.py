"""MongoDB access through PyMongo's native asyncio client (Motor's successor)."""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymongo
from pymongo import AsyncMongoClient, IndexModel, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from contacts_shared import tracing
from contacts_shared.settings import ServiceSettings

T = TypeVar("T")
Document = dict[str, Any]
MongoClient = AsyncMongoClient[Document]
Database = AsyncDatabase[Document]
Collection = AsyncCollection[Document]


def connect(url: str, *, app_name: str, call_timeout: float | None = None) -> MongoClient:
    """A client that connects lazily; no I/O happens until the first command. `call_timeout`:
    the longest a server may take to answer one round trip (a wedged server then fails the
    call as an outage, `faults.is_outage`, instead of holding it forever)."""
    return AsyncMongoClient(
        url,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        socketTimeoutMS=None if call_timeout is None else int(call_timeout * 1000),
    )


def service_client(settings: ServiceSettings) -> MongoClient:
    """The client a service opens: its server, its name, its call timeout."""
    return connect(
        settings.mongodb_url,
        app_name=settings.service_name,
        call_timeout=settings.mongodb_call_timeout_seconds,
    )


READINESS = "readiness"


async def round_trip(database: Database, instance: str) -> None:
    """Raise unless the server writes a document and reads it back: a server that answers
    pings while its writes hang (a wedged storage engine) is not one to send requests to."""
    now = bson_now()
    await database[READINESS].replace_one({"_id": instance}, {"at": now}, upsert=True)
    if await database[READINESS].find_one({"_id": instance, "at": now}) is None:
        raise RuntimeError("the readiness document written was not read back")


# What makes two indexes of one name the same index, besides their keys.
INDEX_OPTIONS = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds")
INDEX_NOT_FOUND = 27
INDEX_BUILD_SECONDS = 3600.0


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
    with pymongo.timeout(INDEX_BUILD_SECONDS):  # beyond a call's timeout, at a large size
        await _ensure_indexes(collection, wanted)


async def _ensure_indexes(collection: Collection, wanted: Sequence[IndexModel]) -> None:
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


DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class BulkOutcome:
    """What an unordered bulk write did: operations that took effect, and the indexes of those
    refused as duplicates (an insert, or a conditional upsert, that met an existing document)."""

    applied: int
    duplicates: list[int]


async def bulk_write_tolerating_duplicates(
    collection: Collection, operations: Sequence[InsertOne[Document] | UpdateOne]
) -> BulkOutcome:
    """One unordered bulk write in which a duplicate key is an answer, not a failure: the
    document is there already (or newer than the condition allowed). Other errors raise."""
    if not operations:
        return BulkOutcome(0, [])
    # The span fails only with what raises: duplicates are an answer.
    with tracing.writing(collection, "bulkWrite", len(operations)):
        try:
            result = await collection.bulk_write(list(operations), ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(error["code"] != DUPLICATE_KEY for error in errors):
                raise
            details = exc.details
            applied = details["nInserted"] + details["nMatched"] + details["nUpserted"]
            return BulkOutcome(applied, [error["index"] for error in errors])
    return BulkOutcome(result.inserted_count + result.matched_count + result.upserted_count, [])


def prefix_range(prefix: str) -> Document:
    """The range of strings that start with `prefix`: an `_id` filter for documents whose ids
    are composite (`profile_id:key`, `upload:piece`), read in order from the `_id` index."""
    return {"$gte": prefix, "$lt": _successor(prefix)}


def _successor(prefix: str) -> str:
    """The least string above every string that starts with `prefix`."""
    while prefix and prefix[-1] == chr(sys.maxunicode):
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def find_by_ids(
    collection: Collection, ids: Sequence[object], projection: Document | None = None
) -> list[Document]:
    """The documents with these `_id`s that exist, in no particular order: one `$in` query."""
    if not ids:
        return []
    return [d async for d in collection.find({"_id": {"$in": list(ids)}}, projection)]


async def update_each(
    collection: Collection, updates: Sequence[tuple[object, Document]], *, upsert: bool = False
) -> None:
    """Apply each update to the document with that `_id`: one unordered bulk write."""
    if updates:
        with tracing.writing(collection, "bulkWrite", len(updates)):
            await collection.bulk_write(
                [UpdateOne({"_id": i}, u, upsert=upsert) for i, u in updates], ordered=False
            )


async def put_each(
    collection: Collection, documents: Mapping[Any, Document], *, stored: Container[Any]
) -> None:
    """Set each document's fields (`_id` -> fields), creating it if absent. Those not among
    `stored` (the ids a read just found) are inserted: an upsert of a new document costs several
    times an insert on DocumentDB. One created meanwhile by another writer refuses its insert and
    is updated instead, as an upsert would have."""
    new = [i for i in documents if i not in stored]
    outcome = await bulk_write_tolerating_duplicates(
        collection, [InsertOne({"_id": i, **documents[i]}) for i in new]
    )
    raced = {new[index] for index in outcome.duplicates}
    await update_each(
        collection,
        [(i, {"$set": fields}) for i, fields in documents.items() if i in stored or i in raced],
        upsert=True,
    )


# Set by `update_each_if` on each document it writes, to learn which of its writes applied.
WRITE_TOKEN = "write_token"


async def update_each_if(
    collection: Collection, updates: Sequence[tuple[object, Document, Document]]
) -> set[object]:
    """Apply each `(_id, conditions, update)` whose document holds the conditions (its
    version, say), in one unordered bulk write; the ids of those applied. A bulk result counts
    matches without naming them, so each write also stamps this call's token, read back only
    when some did not apply. Ids must be distinct."""
    if not updates:
        return set()
    token = uuid.uuid4().hex
    with tracing.writing(collection, "bulkWrite", len(updates)):
        result = await collection.bulk_write(
            [
                UpdateOne(
                    {"_id": document_id, **conditions},
                    {**update, "$set": {**update.get("$set", {}), WRITE_TOKEN: token}},
                )
                for document_id, conditions, update in updates
            ],
            ordered=False,
        )
    ids = [document_id for document_id, _, _ in updates]
    if result.matched_count == len(ids):
        return set(ids)
    stamped = collection.find({"_id": {"$in": ids}, WRITE_TOKEN: token}, {"_id": 1})
    return {document["_id"] async for document in stamped}


async def update_if(
    collection: Collection, document_id: object, conditions: Document, update: Document
) -> bool:
    """Apply `update` if the document exists and holds `conditions` (its version, say); True if
    applied. The server matches and updates one document atomically: optimistic concurrency."""
    result = await collection.update_one({"_id": document_id, **conditions}, update)
    return result.matched_count == 1


async def replace_if_newer(
    collection: Collection, document_id: object, older: Document, document: Document
) -> bool:
    """Replace the document if it matches `older`, or create it; True if written. A document
    that exists but is not older makes the upsert collide on `_id` and stays as it is; the
    first collision may be a concurrent creation, so the filter is tried once more."""
    for _ in range(2):
        try:
            await collection.replace_one({"_id": document_id, **older}, document, upsert=True)
        except DuplicateKeyError:
            continue
        return True
    return False


def bson_now() -> datetime:
    """Now in UTC, to the millisecond: what BSON dates hold, so stored and returned times agree."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class StaleDocument(Exception):
    """The document changed (or went) since it was read; read it again and retry."""


# How long a writer keeps losing races before it gives up: far beyond any normal contention,
# where each lost attempt means another writer's attempt won.
STALE_RETRY_SECONDS = 30.0


async def retry_if_stale(
    change: Callable[[], Awaitable[T]], *, give_up_after: float = STALE_RETRY_SECONDS
) -> T:
    """Run an optimistic read-change-write again while a concurrent writer got there first.

    Every round of a race has a winner, so concurrent writers of one document all get through;
    a growing, jittered pause keeps the losers from colliding again in lockstep. A count of
    attempts would run out under contention (forty concurrent writers of one contact), so only
    time bounds it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    pause = 0.002
    while True:
        try:
            return await change()
        except StaleDocument:
            if loop.time() >= deadline:
                raise
        await asyncio.sleep(random.uniform(0, pause))
        pause = min(pause * 2, 0.2)
