"""Projected contacts written before sample buckets were kept, on the real server: the backfill
gives each its bucket without touching anything else, a projection write during it wins, a
stopped backfill resumes from its checkpoint, one process at a time holds it, and a finished
pass is recorded so a later start does nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contacts_shared.mongo import Database, Document
from contacts_shared.sampling import sample_bucket
from segment_svc.membership import SAMPLE, sample_term
from segment_svc.sample_backfill import CHECKPOINT, READ, FillRound, SampleBackfill

pytestmark = pytest.mark.integration

PROFILES = ("p-old", "p-older")


def old_document(profile_id: str, index: int) -> Document:
    """A projected contact as written before buckets were kept (no `sample`); some tombstones."""
    key = f"c{index:04d}@example.com"
    return {
        "_id": f"{profile_id}:{key}",
        "account_id": "account",
        "profile_id": profile_id,
        "key": key,
        "version": 1,
        "rev": 1,
        "status": "active",
        "deleted": index % 50 == 7,
        "fields": {"email": key},
        "segments": {},
    }


DOCUMENTS = [old_document(p, i) for p in PROFILES for i in range(150)]


@pytest.fixture
async def database(infrastructure: Any, unique: str) -> AsyncIterator[Database]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True
    )
    database = client[f"segment_svc_backfill_{unique}"]
    await database["contacts"].insert_many([dict(d) for d in DOCUMENTS])
    yield database
    await client.close()


def backfill(database: Database, batch_size: int = 40, pause: float = 0.0) -> SampleBackfill:
    return SampleBackfill(
        database["contacts"],
        database["backfills"],
        batch_size=batch_size,
        lease=timedelta(seconds=30),
        pause_seconds=pause,
    )


async def assert_all_bucketed(database: Database) -> None:
    """Every document as it was, plus its bucket."""
    stored = {d["_id"]: d async for d in database["contacts"].find({})}
    assert len(stored) == len(DOCUMENTS)
    for document in DOCUMENTS:
        term = sample_term(document["profile_id"], sample_bucket(document["key"]))
        assert stored[document["_id"]] == {**document, SAMPLE: term}


async def test_every_old_document_gets_its_bucket_and_a_finished_pass_is_recorded(
    database: Database,
) -> None:
    await asyncio.wait_for(backfill(database).run(asyncio.Event()), timeout=60)

    await assert_all_bucketed(database)
    checkpoint = await database["backfills"].find_one({"_id": CHECKPOINT})
    assert checkpoint is not None
    assert (checkpoint["done"], checkpoint["read"], checkpoint["filled"]) == (
        True,
        len(DOCUMENTS),
        len(DOCUMENTS),
    )
    assert checkpoint["lease"] is None and checkpoint["finished_at"] is not None
    # Done: a later start reads the checkpoint once and returns, walking nothing.
    await database["contacts"].update_one({"_id": DOCUMENTS[0]["_id"]}, {"$unset": {SAMPLE: ""}})
    assert not await backfill(database).needed()
    await asyncio.wait_for(backfill(database).run(asyncio.Event()), timeout=5)
    assert await database["contacts"].count_documents({SAMPLE: {"$exists": False}}) == 1


async def test_a_projection_write_during_the_backfill_wins(database: Database) -> None:
    """A document written between the backfill's read and its write keeps what was written:
    the backfill sets the bucket only where it is still missing."""
    contacts = database["contacts"]
    rows = await contacts.find({}, READ).sort("_id").to_list()
    written = DOCUMENTS[3]["_id"]
    # As the contact events' consumer writes it (conditional on its `rev`), with its bucket.
    term = sample_term(DOCUMENTS[3]["profile_id"], sample_bucket(DOCUMENTS[3]["key"]))
    await contacts.update_one(
        {"_id": written, "rev": 1},
        {"$set": {"status": "unsubscribed", SAMPLE: term}, "$inc": {"rev": 1}},
    )
    progress = await backfill(database).fill(rows)

    assert (progress.read, progress.filled, progress.raced) == (
        len(DOCUMENTS),
        len(DOCUMENTS) - 1,
        1,
    )
    stored = await contacts.find_one({"_id": written})
    assert stored == {**DOCUMENTS[3], "status": "unsubscribed", "rev": 2, SAMPLE: term}


async def test_a_stopped_backfill_resumes_from_its_checkpoint(database: Database) -> None:
    backfills = database["backfills"]
    first = backfill(database, batch_size=20, pause=0.2)
    task = asyncio.create_task(first.run(asyncio.Event()))
    deadline = asyncio.get_running_loop().time() + 30
    while (at := await backfills.find_one({"_id": CHECKPOINT, "read": {"$gt": 0}})) is None:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    task.cancel()  # as a worker stopping mid-pass
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped = await backfills.find_one({"_id": CHECKPOINT})
    assert stopped is not None and not stopped["done"]
    assert stopped["lease"] is None  # released on the way out: the next start goes on at once
    done_before = stopped["read"]
    assert 0 < done_before < len(DOCUMENTS) and at["after"] is not None

    second = backfill(database, batch_size=20)
    assert await second.claim()
    try:
        progress = await second.walk(asyncio.Event())
    finally:
        await second.release()
    # It went on after the checkpoint: it read only what the first had not.
    assert progress.done and progress.read == len(DOCUMENTS) - done_before
    finished = await backfills.find_one({"_id": CHECKPOINT})
    assert finished is not None and finished["done"]
    assert (finished["read"], finished["filled"]) == (len(DOCUMENTS), len(DOCUMENTS))
    assert not await second.needed()
    await assert_all_bucketed(database)


async def test_one_process_at_a_time_holds_the_backfill(database: Database) -> None:
    holder, other = backfill(database), backfill(database)
    assert await holder.claim()
    assert not await other.claim()
    # The other waits; the holder's rounds move the checkpoint, the other's would not.
    assert await holder._advance("x", FillRound(read=1))
    assert not await other._advance("y", FillRound(read=1))
    await holder.release()
    assert await other.claim()
    assert not await holder.claim()
