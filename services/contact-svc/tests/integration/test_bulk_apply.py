"""Webhook commands applied in bulk against the real server: merged per contact, new contacts
inserted at once, existing ones updated, suppressions honoured, and a batch applied twice
changing nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from contact_svc.batch_handlers import apply_import_rows, apply_upserts
from contact_svc.bulk_handlers import apply_bulk_changes, count_bulk_pages
from contact_svc.bulk_jobs import BulkJob, BulkState
from contact_svc.bulk_repository import MongoBulkJobStore
from contact_svc.contact_handlers import upsert_contact
from contact_svc.contact_repository import MongoContactRepository
from contact_svc.domain import Contact, Suppression
from contact_svc.listing_handlers import ContactFilter
from contact_svc.settings import ContactSettings
from contact_svc.suppression_repository import MongoSuppressionStore
from contacts_shared.commands import (
    BulkAction,
    BulkOutcome,
    ImportAction,
    ImportContact,
    RowOutcome,
    UpsertContact,
)
from contacts_shared.journal import JOURNAL, EventJournal, JournaledWrite, JournalRound
from contacts_shared.mongo import Collection, connect
from contacts_shared.outbox import OUTBOX, QueuedDocuments
from contacts_shared.profiles import MongoSchemaStore, ProfileSchema
from contacts_shared.schema import ContactStatus

pytestmark = pytest.mark.integration


@dataclass
class Stores:
    schemas: MongoSchemaStore
    contacts: MongoContactRepository
    suppressions: MongoSuppressionStore
    queued: list[str]
    documents: Collection
    journal: EventJournal


@pytest.fixture
async def stores(
    infrastructure: Any, unique: str, regular_schema: ProfileSchema
) -> AsyncIterator[Stores]:
    client = connect(infrastructure.mongodb_url, app_name="test")
    database = client[f"bulk_{unique}"]
    suppressions = MongoSuppressionStore(database["suppressions"])
    queued: list[str] = []

    def events_queued(document_id: object, inserted: list[Any] | None = None) -> None:
        queued.append(str(document_id))

    journal = EventJournal(database["contacts_journal"], database["contacts"], lease_seconds=30)
    contacts = MongoContactRepository(
        database["contacts"],
        ContactSettings(mongodb_url=infrastructure.mongodb_url),
        suppressions=suppressions,
        events_queued=events_queued,
        journal=journal,
    )
    schemas = MongoSchemaStore(database["profile_schemas"])
    await schemas.apply(regular_schema, deleted=False)
    yield Stores(schemas, contacts, suppressions, queued, database["contacts"], journal)
    await client.close()


def upsert(key: str, account: str = "a1", profile: str = "p1", **values: Any) -> UpsertContact:
    return UpsertContact(
        command_id=key,
        account_id=account,
        profile_id=profile,
        key=key,
        values=values,
        source="webhook:s1",
        received_at=datetime.now(UTC),
    )


async def test_a_batch_is_merged_per_contact_and_applied_once(stores: Stores) -> None:
    existing = upsert("old@x.io", nombre="Old")
    await apply_upserts([existing], schemas=stores.schemas, contacts=stores.contacts)
    await stores.suppressions.apply(
        [Suppression("a1", "gone@x.io", ContactStatus.BOUNCED, "p9", datetime.now(UTC))]
    )
    batch = [
        upsert("new@x.io", nombre="Ana"),
        upsert("old@x.io", ciudad="Lima"),
        upsert("new@x.io", ciudad="Quito", retired="dropped: no such field"),
        upsert("gone@x.io", nombre="Bea"),
        upsert("stray@x.io", account="a2", nombre="Other account"),
        upsert("lost@x.io", profile="p-deleted"),
    ]

    for _ in range(2):  # the second time, as a redelivery: nothing changes
        orphans = await apply_upserts(batch, schemas=stores.schemas, contacts=stores.contacts)
        assert [o.key for o in orphans] == ["stray@x.io", "lost@x.io"]
        found = {
            key: await stores.contacts.find("p1", key)
            for key in ("new@x.io", "old@x.io", "gone@x.io", "stray@x.io")
        }
        new, old, gone = (found[k][0] for k in ("new@x.io", "old@x.io", "gone@x.io"))
        assert new is not None and new.version == 1
        assert new.fields == {"email": "new@x.io", "nombre": "Ana", "ciudad": "Quito"}
        assert old is not None and old.version == 2
        assert old.fields == {"email": "old@x.io", "nombre": "Old", "ciudad": "Lima"}
        assert gone is not None and gone.status is ContactStatus.BOUNCED
        assert gone.status_source == "suppression"
        assert found["stray@x.io"] == (None, 0)
    # Events were queued once per written contact: old twice (created, updated), the others once.
    assert sorted(stores.queued) == sorted(
        ["p1:old@x.io", "p1:old@x.io", "p1:new@x.io", "p1:gone@x.io"]
    )


async def test_contacts_that_came_to_exist_meanwhile_are_handed_back(
    stores: Stores, regular_schema: ProfileSchema
) -> None:
    await apply_upserts(
        [upsert("race@x.io", nombre="First")], schemas=stores.schemas, contacts=stores.contacts
    )
    now = datetime.now(UTC)
    created = [
        Contact.create(
            schema=regular_schema, key=key, values={"nombre": key}, source="webhook", now=now
        )
        for key in ("race@x.io", "free@x.io")
    ]
    refused = await stores.contacts.add_many(created)
    assert [c.key for c in refused] == ["race@x.io"]
    found = {key: await stores.contacts.find("p1", key) for key in ("race@x.io", "free@x.io")}
    assert found["race@x.io"][0] is not None and found["race@x.io"][0].fields["nombre"] == "First"
    assert found["free@x.io"][1] == 1


async def test_existing_contacts_are_updated_in_bulk_and_a_concurrent_write_is_kept(
    stores: Stores, regular_schema: ProfileSchema
) -> None:
    keys = [f"k{n}@x.io" for n in range(60)]
    await apply_upserts(
        [upsert(key, nombre="Uno") for key in keys],
        schemas=stores.schemas,
        contacts=stores.contacts,
    )
    # Each contact changed by the batch and, at the same time, one by one through the API.
    batch = apply_upserts(
        [upsert(key, nombre="Dos") for key in keys],
        schemas=stores.schemas,
        contacts=stores.contacts,
    )
    singles = [
        upsert_contact(
            schema=regular_schema,
            key=key,
            values={"ciudad": "Lima"},
            source="api",
            contacts=stores.contacts,
        )
        for key in keys
    ]
    await asyncio.gather(batch, *singles)
    for key in keys:
        contact, version = await stores.contacts.find("p1", key)
        assert contact is not None and version == 3, (key, version)
        assert contact.fields == {"email": key, "nombre": "Dos", "ciudad": "Lima"}, key


async def test_a_journaled_batch_writes_each_row_once_unless_earlier_events_wait(
    stores: Stores,
) -> None:
    """Journaled (ADR 12), new and changed contacts are written once, their events kept in the
    journal; a contact whose outbox still holds events, or whose last write's journal is live,
    goes through its outbox, after them."""
    keys = [f"k{n}@x.io" for n in range(10)]
    await apply_upserts(
        [upsert(key, nombre="Uno") for key in keys],
        schemas=stores.schemas,
        contacts=stores.contacts,
    )
    collection = stores.documents
    # Relayed, except k8's events; k9 was last written by a journal whose writer is not done.
    await collection.update_many({"_id": {"$ne": "p1:k8@x.io"}}, {"$set": {OUTBOX: []}})
    live = await stores.journal.record([JournaledWrite("p1:k9@x.io", [])])
    await collection.update_one({"_id": "p1:k9@x.io"}, {"$set": {JOURNAL: live}})
    stores.queued.clear()

    queued, journaled = QueuedDocuments(), JournalRound()
    news = [f"n{n}@x.io" for n in range(5)]
    await apply_upserts(
        [upsert(key, nombre="Dos") for key in keys + news],
        schemas=stores.schemas,
        contacts=stores.contacts.queueing_to(queued, journaled),
    )

    documents = {d["key"]: d async for d in collection.find({})}
    assert all(documents[k]["fields"]["nombre"] == "Dos" for k in keys + news)
    once = keys[:8] + news
    assert {documents[k][JOURNAL] for k in once} == set(journaled.tokens) and live not in set(
        journaled.tokens
    )
    assert not any(documents[k].get(OUTBOX) for k in once)
    assert sorted(m.key for w in journaled.writes for m in w.messages) == sorted(
        f"p1:{k}" for k in once
    )
    assert list(queued) == ["p1:k8@x.io", "p1:k9@x.io"]
    assert [len(documents[k][OUTBOX]) for k in ("k8@x.io", "k9@x.io")] == [2, 1]


def imported(key: str, line: int, action: str = "append_or_update", **values: Any) -> ImportContact:
    return ImportContact(
        import_id=values.pop("import_id", "imp1"),
        account_id=values.pop("account", "a1"),
        profile_id=values.pop("profile", "p1"),
        key=key,
        values=values,
        action=ImportAction(action),
        line=line,
        sequence=line - 2,
    )


async def test_import_rows_report_exact_outcomes_and_a_redelivery_repeats_them(
    stores: Stores,
) -> None:
    await apply_upserts(
        [upsert("old@x.io", nombre="Old")], schemas=stores.schemas, contacts=stores.contacts
    )
    stores.queued.clear()
    batch = [
        imported("new@x.io", 2, nombre="Ana"),
        imported("old@x.io", 3, ciudad="Lima"),
        imported("new@x.io", 4, nombre="Ana B"),
        imported("absent@x.io", 5, "unsubscribe"),
        imported("stray@x.io", 6, account="a2"),
        imported("lost@x.io", 2, profile="p-deleted", import_id="imp2"),
        imported("old@x.io", 8, "append", nombre="Not applied"),
    ]
    expected = [
        (0, 2, RowOutcome.CREATED),
        (1, 3, RowOutcome.UPDATED),
        (2, 4, RowOutcome.DUPLICATE),
        (3, 5, RowOutcome.NOT_FOUND),
        (4, 6, RowOutcome.PROFILE_GONE),
        (6, 8, RowOutcome.DUPLICATE),
    ]
    for _ in range(2):  # the second time, as a redelivery
        outcomes = await apply_import_rows(batch, schemas=stores.schemas, contacts=stores.contacts)
        assert outcomes == {"imp1": expected, "imp2": [(0, 2, RowOutcome.PROFILE_GONE)]}
        new, _ = await stores.contacts.find("p1", "new@x.io")
        old, _ = await stores.contacts.find("p1", "old@x.io")
        assert new is not None and new.fields["nombre"] == "Ana B" and new.version == 2
        assert old is not None and old.fields == {
            "email": "old@x.io",
            "nombre": "Old",
            "ciudad": "Lima",
        }
        assert old.imported is not None and (old.imported.first_line, old.imported.line) == (3, 8)
        assert await stores.contacts.find("p1", "absent@x.io") == (None, 0)
    assert sorted(stores.queued) == ["p1:new@x.io", "p1:old@x.io"]  # written once each


def unsubscribing(job_id: str, keys: tuple[str, ...]) -> BulkJob:
    """A job unsubscribing the keys of profile p1."""
    return BulkJob(
        id=job_id,
        account_id="a1",
        profile_id="p1",
        action=BulkAction.CHANGE_STATUS,
        created_at=datetime.now(UTC),
        status=ContactStatus.UNSUBSCRIBED,
        keys=keys,
    )


async def test_a_bulk_page_applied_again_repeats_its_outcomes_and_counts_once(
    stores: Stores,
) -> None:
    await apply_upserts(
        [upsert(key) for key in ("a@x.io", "b@x.io", "c@x.io")],
        schemas=stores.schemas,
        contacts=stores.contacts,
    )
    jobs = MongoBulkJobStore(stores.documents.database["bulk_jobs"])
    job = unsubscribing("j1", ("a@x.io", "b@x.io", "gone@x.io"))
    page = job.pend(job.keys_after(10), datetime.now(UTC))
    job.sent([0])  # all in partition 0, as sent
    job.all_sent(datetime.now(UTC))
    await jobs.add(job)
    change = job.change(page, page.keys)
    expected = {BulkOutcome.CHANGED: 2, BulkOutcome.NOT_FOUND: 1}

    # Applied, then applied again before it was counted (a crash in between): the second run
    # finds the contacts stamped, repeats the outcomes and writes nothing.
    for _ in range(2):
        [applied] = await apply_bulk_changes(
            [change], partition=0, schemas=stores.schemas, contacts=stores.contacts, jobs=jobs
        )
        assert applied.outcomes == expected
        a, _ = await stores.contacts.find("p1", "a@x.io")
        assert a is not None and a.status is ContactStatus.UNSUBSCRIBED and a.version == 2
    await count_bulk_pages([applied, applied], partition=0, jobs=jobs)
    counted = await jobs.get("j1")
    assert counted is not None and counted.counts == expected
    assert counted.state is BulkState.COMPLETED
    # Sent again by a resumed sender, after it was counted: skipped.
    assert (
        await apply_bulk_changes(
            [change], partition=0, schemas=stores.schemas, contacts=stores.contacts, jobs=jobs
        )
        == []
    )
    c, _ = await stores.contacts.find("p1", "c@x.io")
    assert c is not None and c.status is ContactStatus.ACTIVE and c.version == 1


async def test_a_job_reads_back_as_it_was_stored(stores: Stores) -> None:
    jobs = MongoBulkJobStore(stores.documents.database["bulk_jobs"])
    job = BulkJob(
        id="j2",
        account_id="a1",
        profile_id="p1",
        action=BulkAction.DELETE,
        created_at=datetime.now(UTC).replace(microsecond=0),
        filter=ContactFilter(status=ContactStatus.BOUNCED, field="Ciudad", value_prefix="vi"),
        total=7,
    )
    await jobs.add(job)
    assert await jobs.get("j2") == job


async def test_a_batch_of_pages_is_applied_together_each_counted_apart(stores: Stores) -> None:
    keys = ("a@x.io", "b@x.io", "c@x.io", "d@x.io")
    await apply_upserts(
        [upsert(key) for key in keys[:3]], schemas=stores.schemas, contacts=stores.contacts
    )
    jobs = MongoBulkJobStore(stores.documents.database["bulk_jobs"])
    job = unsubscribing("j2", keys)
    first = job.pend(job.keys_after(2), datetime.now(UTC))
    job.sent([0])
    second = job.pend(job.keys_after(2), datetime.now(UTC))
    job.sent([0])
    job.all_sent(datetime.now(UTC))
    await jobs.add(job)
    pages = [job.change(first, first.keys), job.change(second, second.keys)]

    # Both pages read and written at once, and a copy of the first in the same batch (sent
    # again while the first waited): it shares keys, so it applies after, finding the stamps.
    applied = await apply_bulk_changes(
        [*pages, pages[0]], partition=0, schemas=stores.schemas, contacts=stores.contacts, jobs=jobs
    )
    assert [(p.page, p.outcomes) for p in applied] == [
        (1, {BulkOutcome.CHANGED: 2}),
        (2, {BulkOutcome.CHANGED: 1, BulkOutcome.NOT_FOUND: 1}),
        (1, {BulkOutcome.CHANGED: 2}),
    ]
    for key in keys[:3]:
        contact, _ = await stores.contacts.find("p1", key)
        assert contact is not None and contact.status is ContactStatus.UNSUBSCRIBED
        assert contact.version == 2
    await count_bulk_pages(applied, partition=0, jobs=jobs)
    counted = await jobs.get("j2")
    assert counted is not None and counted.state is BulkState.COMPLETED
    assert counted.counts == {BulkOutcome.CHANGED: 3, BulkOutcome.NOT_FOUND: 1}
