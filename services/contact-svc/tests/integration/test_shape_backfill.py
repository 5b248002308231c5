"""Contacts stored before the current document shape, on the real server: once the backfill has
run, pages by a field list every one of them in order and the profile's sample counts them; a
write during the backfill is not undone; a stopped backfill resumes from its checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import ASCENDING, AsyncMongoClient

from contact_svc.contact_documents import (
    SEARCH_TERMS,
    SHAPE,
    SORT_KEYS,
    contact_document,
    in_sample,
    sample_term,
    sort_key,
    source_term,
)
from contact_svc.contact_repository import MongoContactRepository
from contact_svc.domain import Contact
from contact_svc.listing_repository import FieldOrder, SortedPosition
from contact_svc.settings import ContactSettings
from contact_svc.shape_backfill import CHECKPOINT, READ, ShapeBackfill
from contact_svc.suppression_repository import MongoSuppressionStore
from contacts_shared.journal import EventJournal
from contacts_shared.mongo import Database, Document
from contacts_shared.schema import ContactStatus

pytestmark = pytest.mark.integration

PROFILE = "p-old"
NOW = datetime.now(UTC).replace(microsecond=0)


def sampled_key(index: int) -> str:
    """Every fifth contact's key is in the profile's sample, so the sample has many."""
    key, suffix = f"c{index:04d}@example.com", 0
    while index % 5 == 0 and not in_sample(key):
        suffix += 1
        key = f"c{index:04d}.{suffix}@example.com"
    return key


def old_contact(index: int) -> Contact:
    key = sampled_key(index)
    created = NOW - timedelta(days=index % 9, minutes=index)
    return Contact(
        account_id="account",
        profile_id=PROFILE,
        key=key,
        # Names in an order other than the keys', some repeated, some missing.
        fields={
            "email": key,
            **({"nombre": f"Nombre {(index * 7919) % 97:02d}"} if index % 11 != 3 else {}),
        },
        status=ContactStatus.ACTIVE,
        status_source="api",
        status_changed_at=created,
        source="api",
        created_at=created,
        updated_at=created,
        version=1 + index % 3,
        deleted=index % 50 == 7,
    )


CONTACTS = [old_contact(i) for i in range(240)]


def in_old_shape(contact: Contact) -> Document:
    """The document the current builder writes, less what contacts written before sort keys
    and the sample lack: its sort keys, the sample and source terms, the shape."""
    document = contact_document(contact)
    old = (sample_term(PROFILE), source_term(PROFILE, contact.source))
    document[SEARCH_TERMS] = [t for t in document[SEARCH_TERMS] if t not in old]
    del document[SORT_KEYS], document[SHAPE]
    return document


@pytest.fixture
async def database(infrastructure: Any, unique: str) -> AsyncIterator[Database]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True
    )
    yield client[f"contact_svc_{unique}"]
    await client.close()


@pytest.fixture
async def repository(database: Database) -> MongoContactRepository:
    repository = MongoContactRepository(
        database["contacts"],
        ContactSettings(),
        suppressions=MongoSuppressionStore(database["suppressions"]),
        events_queued=lambda *_: None,
        journal=EventJournal(database["contacts_journal"], database["contacts"], lease_seconds=30),
        probe_size=10,
    )
    await repository.create_indexes()
    await database["contacts"].insert_many([in_old_shape(c) for c in CONTACTS])
    return repository


def backfill(database: Database, batch_size: int = 50, pause: float = 0.0) -> ShapeBackfill:
    return ShapeBackfill(
        database["contacts"],
        database["document_shapes"],
        batch_size=batch_size,
        lease=timedelta(seconds=30),
        pause_seconds=pause,
    )


async def walk_by_name(repository: MongoContactRepository, descending: bool) -> list[str]:
    order = FieldOrder("nombre", descending=descending)
    walked: list[str] = []
    after: SortedPosition | None = None
    while True:
        page = await repository.find_page(
            PROFILE,
            status=None,
            key_prefix=None,
            field_equals=None,
            after=after,
            limit=25,
            by_field=order,
        )
        walked += [c.key for c in page]
        if len(page) < 25:
            return walked
        last = page[-1]
        after = SortedPosition(sort_key(PROFILE, last.fields.get("nombre"), last.key), last.key)


def by_name(descending: bool) -> list[str]:
    """The live contacts' keys as a page by name lists them, computed here."""
    live = [c for c in CONTACTS if not c.deleted]
    named = sorted(
        (c for c in live if "nombre" in c.fields),
        key=lambda c: (c.fields["nombre"].casefold(), c.key),
        reverse=descending,
    )
    return [c.key for c in named] + sorted(c.key for c in live if "nombre" not in c.fields)


async def test_old_contacts_are_listed_by_a_field_and_sampled_after_the_backfill(
    repository: MongoContactRepository, database: Database
) -> None:
    sampled = len([c for c in CONTACTS if not c.deleted and in_sample(c.key)])
    assert sampled >= 40
    # Before: a contact with a name but no sort key is in neither part of the page walk.
    assert len(await walk_by_name(repository, descending=False)) < len(by_name(False))
    assert (
        await repository.count_matching(
            PROFILE, status=None, key_prefix=None, field_equals=None, source=None, in_sample=True
        )
        == 0
    )

    stopping = asyncio.Event()
    await asyncio.wait_for(backfill(database).run(stopping), timeout=60)

    assert await walk_by_name(repository, descending=False) == by_name(False)
    assert await walk_by_name(repository, descending=True) == by_name(True)
    counted = await repository.count_matching(
        PROFILE, status=None, key_prefix=None, field_equals=None, source="api", in_sample=True
    )
    assert counted == sampled
    # Every document is as the builder writes it now, the contact itself untouched.
    stored = {d["_id"]: d async for d in database["contacts"].find({}, {"write_token": 0})}
    for contact in CONTACTS:
        assert stored[contact.id] == {**contact_document(contact)}, contact.key
    checkpoint = await database["document_shapes"].find_one({"_id": CHECKPOINT})
    assert checkpoint is not None
    assert checkpoint["done"] and checkpoint["reshaped"] == len(CONTACTS)
    assert checkpoint["lease"] is None
    # Done: the next start finds nothing to do with one query, and returns.
    assert not await backfill(database).needed()
    await asyncio.wait_for(backfill(database).run(stopping), timeout=5)


async def test_a_write_during_the_backfill_wins(
    repository: MongoContactRepository, database: Database
) -> None:
    """A contact changed between the backfill's read and its write keeps the change: the
    backfill's write is conditional on the version it read."""
    contacts = database["contacts"]
    changed = CONTACTS[1]
    renamed = Contact(
        **{
            **vars(changed),
            "fields": {**changed.fields, "nombre": "Zz renamed"},
            "version": changed.version + 1,
            "events": [],
        }
    )
    walker = backfill(database)
    rows = await contacts.find({}, READ).sort("_id", ASCENDING).to_list()
    # Saved by a request between the backfill's read and its write.
    await repository.save(renamed, expected_version=changed.version, unevented=True)
    progress = await walker.reshape(rows)

    assert (progress.read, progress.reshaped, progress.raced) == (
        len(CONTACTS),
        len(CONTACTS) - 1,
        1,
    )
    stored = await contacts.find_one({"_id": changed.id}, {"write_token": 0})
    assert stored == contact_document(renamed)
    assert stored is not None and stored[SORT_KEYS]["nombre"] == sort_key(
        PROFILE, "Zz renamed", changed.key
    )
    assert (await walk_by_name(repository, descending=True))[0] == changed.key


async def test_a_stopped_backfill_resumes_from_its_checkpoint(
    repository: MongoContactRepository, database: Database
) -> None:
    first = backfill(database, batch_size=20, pause=0.2)
    task = asyncio.create_task(first.run(asyncio.Event()))

    async def checkpointed() -> Document | None:
        return await database["document_shapes"].find_one({"_id": CHECKPOINT, "read": {"$gt": 0}})

    deadline = asyncio.get_running_loop().time() + 30
    while (at := await checkpointed()) is None:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    task.cancel()  # as a process stopping mid-pass
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped = await database["document_shapes"].find_one({"_id": CHECKPOINT})
    assert stopped is not None and not stopped["done"]
    assert stopped["lease"] is None  # released on the way out: the next start goes on at once
    done_before = stopped["read"]
    assert 0 < done_before < len(CONTACTS)
    assert at["after"] is not None

    second = backfill(database, batch_size=20)
    progress_read = await _walk_once(second)
    # It went on after the checkpoint: it read only what the first had not.
    assert progress_read == len(CONTACTS) - done_before
    finished = await database["document_shapes"].find_one({"_id": CHECKPOINT})
    assert finished is not None and finished["done"]
    # A round stopped after its write but before its checkpoint is read again, and skipped.
    assert finished["read"] == len(CONTACTS)
    assert not await second.needed()
    assert await walk_by_name(repository, descending=False) == by_name(False)


async def test_one_process_at_a_time_holds_the_backfill(database: Database) -> None:
    await database["contacts"].insert_many([in_old_shape(c) for c in CONTACTS[:10]])
    holder, other = backfill(database), backfill(database)
    assert await holder.claim()
    assert not await other.claim()
    await holder.release()
    assert await other.claim()


async def _walk_once(walker: ShapeBackfill) -> int:
    """Claim the lease and walk until done; what it read."""
    assert await walker.claim()
    try:
        progress = await walker.walk(asyncio.Event())
    finally:
        await walker.release()
    assert progress.done
    return progress.read
