"""contact-svc's contacts: the port and its MongoDB implementation, with an outbox of events
in each document, and the bulk writes whose events go through the journal (ADR 12)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import InsertOne
from pymongo.errors import DuplicateKeyError

from contact_svc.contact_documents import (
    DELETED,
    SEARCH_TERMS,
    SORT_KEYS,
    contact_document,
    contact_of,
    field_term_prefix,
    folded_term_prefix,
    profile_range,
    stored_contact,
)
from contact_svc.domain import Contact, Suppression, contact_id, suppression_told
from contact_svc.listing_repository import LISTING_INDEXES, ContactPages, MongoContactPages
from contact_svc.shape_backfill import SHAPE_INDEX
from contact_svc.suppression_repository import SuppressionStore
from contacts_shared.journal import JOURNAL, EventJournal, JournaledWrite, JournalRound
from contacts_shared.mongo import (
    Collection,
    Document,
    StaleDocument,
    bulk_write_tolerating_duplicates,
    ensure_indexes,
    find_by_ids,
    update_each_if,
    update_if,
)
from contacts_shared.outbox import (
    OUTBOX,
    OUTBOX_INDEX,
    EventsQueued,
    outbox_entries,
    outbox_update,
)
from contacts_shared.settings import ServiceSettings


@dataclass(frozen=True)
class Saving:
    """A change of a live contact to write if its document is still at `expected_version`;
    `unevented` as for `save`."""

    contact: Contact
    expected_version: int
    unevented: bool = False


class ContactRepository(ContactPages, Protocol):
    def queueing_to(
        self, events_queued: EventsQueued, journaled: JournalRound | None = None
    ) -> ContactRepository: ...

    async def drop_field(self, profile_id: str, field_key: str) -> None: ...

    async def find(self, profile_id: str, key: str) -> tuple[Contact | None, int]: ...

    async def find_even_deleted(self, profile_id: str, key: str) -> Contact | None: ...

    async def find_many(
        self, profile_id: str, keys: Sequence[str]
    ) -> dict[str, tuple[Contact | None, int]]: ...

    async def find_stored(self, profile_id: str, keys: Sequence[str]) -> dict[str, Contact]: ...

    async def add_many(self, contacts: Sequence[Contact]) -> list[Contact]: ...

    async def suppressions_of(
        self, account_id: str, keys: Sequence[str]
    ) -> dict[str, Suppression]: ...

    async def add(self, contact: Contact, *, stored_version: int) -> None: ...

    async def save(
        self,
        contact: Contact,
        *,
        expected_version: int,
        deleted_before: bool = False,
        unevented: bool = False,
    ) -> None: ...

    async def save_many(self, changes: Sequence[Saving]) -> list[Contact]: ...

    async def count_deleted_by(self, profile_id: str, source: str) -> int: ...


class MongoContactRepository:
    """Contacts in one collection, `_id` = `profile_id:key`; each write carries its events, in
    the document's outbox or, for the bulk writes of a writer that publishes them itself, in
    the journal (ADR 12). Pages are read by `MongoContactPages`."""

    def __init__(
        self,
        collection: Collection,
        settings: ServiceSettings,
        *,
        suppressions: SuppressionStore,
        events_queued: EventsQueued,
        journal: EventJournal,
        journaled: JournalRound | None = None,
        probe_size: int = 1000,
    ) -> None:
        """`probe_size`: as for `MongoContactPages`."""
        self._collection = collection
        self._settings = settings
        self._suppressions = suppressions
        self._events_queued = events_queued
        self._journal = journal
        self._journaled = journaled
        self._probe_size = probe_size
        self._pages = MongoContactPages(collection, probe_size=probe_size)

    def queueing_to(
        self, events_queued: EventsQueued, journaled: JournalRound | None = None
    ) -> MongoContactRepository:
        """The same repository, naming the documents it queues events on to `events_queued`,
        and journaling the events of its bulk writes to `journaled` if given: the writer
        publishes both (`OutboxRelay.publish_now`)."""
        return MongoContactRepository(
            self._collection,
            self._settings,
            suppressions=self._suppressions,
            events_queued=events_queued,
            journal=self._journal,
            journaled=journaled,
            probe_size=self._probe_size,
        )

    async def create_indexes(self) -> None:
        await ensure_indexes(self._collection, [*LISTING_INDEXES, SHAPE_INDEX, OUTBOX_INDEX])

    async def find(self, profile_id: str, key: str) -> tuple[Contact | None, int]:
        """The live contact (None if absent or deleted) and the stored version (0: never)."""
        return stored_contact(
            await self._collection.find_one({"_id": contact_id(profile_id, key)}, {OUTBOX: 0})
        )

    async def find_even_deleted(self, profile_id: str, key: str) -> Contact | None:
        """The contact as stored, a deleted one too (`deleted` says), or None if never held."""
        document = await self._collection.find_one(
            {"_id": contact_id(profile_id, key)}, {OUTBOX: 0}
        )
        return None if document is None else contact_of(document)

    async def find_many(
        self, profile_id: str, keys: Sequence[str]
    ) -> dict[str, tuple[Contact | None, int]]:
        """`find` for many keys at once."""
        ids = [contact_id(profile_id, key) for key in keys]
        found = {
            document["key"]: document
            for document in await find_by_ids(self._collection, ids, {OUTBOX: 0})
        }
        return {key: stored_contact(found.get(key)) for key in keys}

    async def find_stored(self, profile_id: str, keys: Sequence[str]) -> dict[str, Contact]:
        """`find_even_deleted` for many keys at once: those the profile ever held."""
        ids = [contact_id(profile_id, key) for key in keys]
        documents = await find_by_ids(self._collection, ids, {OUTBOX: 0})
        return {document["key"]: contact_of(document) for document in documents}

    async def _entries_suppressing_first(self, contacts: Sequence[Contact]) -> list[list[Document]]:
        """Each contact's events as outbox entries. What they say of the account-wide
        suppression list is written first, before the contacts (ADR 15): once a write that
        unsubscribes is answered, every later arrival of the email or phone finds it."""
        events = [contact.take_events() for contact in contacts]
        told = [change for each in events for e in each if (change := suppression_told(e))]
        if told:
            await self._suppressions.apply(told)
        return [
            outbox_entries(each, account_id=contact.account_id, settings=self._settings)
            for contact, each in zip(contacts, events, strict=True)
        ]

    async def add(self, contact: Contact, *, stored_version: int) -> None:
        """Store a new contact; `stored_version` is what `find` said (0, or a deleted one's)."""
        if stored_version == 0:
            try:
                [entries] = await self._entries_suppressing_first([contact])
                await self._collection.insert_one({**contact_document(contact), OUTBOX: entries})
            except DuplicateKeyError as exc:
                raise StaleDocument(contact.id) from exc
            self._events_queued(contact.id, entries)
        else:
            await self.save(contact, expected_version=stored_version, deleted_before=True)

    async def add_many(self, contacts: Sequence[Contact]) -> list[Contact]:
        """Insert contacts of which no document exists, in one bulk write; those that one
        meanwhile came to exist for are not written and are returned, to be applied again."""
        if not contacts:
            return []
        entries = await self._entries_suppressing_first(contacts)
        if self._journaled is None:
            documents = [
                {**contact_document(c), OUTBOX: e} for c, e in zip(contacts, entries, strict=True)
            ]
        else:
            writes = [JournaledWrite.of(c.id, e) for c, e in zip(contacts, entries, strict=True)]
            token = await self._journal.record(writes)
            documents = [{**contact_document(c), JOURNAL: token} for c in contacts]
        outcome = await bulk_write_tolerating_duplicates(
            self._collection, [InsertOne(document) for document in documents]
        )
        refused = [contacts[index] for index in outcome.duplicates]
        refused_ids = {contact.id for contact in refused}
        if self._journaled is None:
            for contact, queued in zip(contacts, entries, strict=True):
                if contact.id not in refused_ids:
                    self._events_queued(contact.id, queued)
        else:
            self._journaled.applied(token, (w for w in writes if w.document_id not in refused_ids))
        return refused

    async def save(
        self,
        contact: Contact,
        *,
        expected_version: int,
        deleted_before: bool = False,
        unevented: bool = False,
    ) -> None:
        """Write the contact's change with its events, if it has any; `unevented`: write even
        without (a change no event tells, as an import's stamp on an unchanged contact)."""
        [entries] = await self._entries_suppressing_first([contact])
        if not entries and not unevented:
            return
        document = contact_document(contact)
        del document["_id"]
        applied = await update_if(
            self._collection,
            contact.id,
            {"version": expected_version, DELETED: deleted_before},
            {**(outbox_update(entries) if entries else {}), "$set": document},
        )
        if not applied:
            raise StaleDocument(contact.id)
        if entries:
            self._events_queued(contact.id)

    async def save_many(self, changes: Sequence[Saving]) -> list[Contact]:
        """`save` for many contacts of distinct keys, in one bulk write: those whose document
        has changed since it was read are not written and are returned, to be applied again.
        Journaled, a document with events in its outbox or a live journal's write is not
        written either: its events must leave after those (ADR 12)."""
        events = await self._entries_suppressing_first([change.contact for change in changes])
        changed = [(c, e) for c, e in zip(changes, events, strict=True) if e or c.unevented]
        conditions: Document = {DELETED: False}
        journaled: list[JournaledWrite] = []
        token = None
        if self._journaled is not None:
            conditions[f"{OUTBOX}.0"] = {"$exists": False}
            conditions[JOURNAL] = {"$nin": await self._journal.live_tokens()}
            journaled = [JournaledWrite.of(c.contact.id, e) for c, e in changed if e]
            token = await self._journal.record(journaled) if journaled else None
        writes = []
        for change, entries in changed:
            document = contact_document(change.contact)
            del document["_id"]
            if not entries:
                update = {"$set": document}
            elif token is None:
                update = {**outbox_update(entries), "$set": document}
            else:
                update = {"$set": {**document, JOURNAL: token}}
            conditions_read = {**conditions, "version": change.expected_version}
            writes.append((change.contact.id, conditions_read, update))
        applied = await update_each_if(self._collection, writes)
        if token is not None and self._journaled is not None:
            self._journaled.applied(token, (w for w in journaled if w.document_id in applied))
        elif self._journaled is None:
            for change, entries in changed:
                if change.contact.id in applied and entries:
                    self._events_queued(change.contact.id)
        return [change.contact for change, _ in changed if change.contact.id not in applied]

    async def suppressions_of(self, account_id: str, keys: Sequence[str]) -> dict[str, Suppression]:
        return await self._suppressions.get_many(account_id, keys)

    async def count_deleted_by(self, profile_id: str, source: str) -> int:
        """The profile's contacts whose deletion came from `source` (and that stay deleted)."""
        return await self._collection.count_documents(
            {"_id": profile_range(profile_id), DELETED: True, "source": source}
        )

    async def drop_field(self, profile_id: str, field_key: str) -> None:
        """Remove a deleted field's values from every contact of the profile (idempotent)."""
        prefixes = (
            field_term_prefix(profile_id, field_key),
            folded_term_prefix(profile_id, field_key),
        )
        pattern = "^(?:" + "|".join(re.escape(p) for p in prefixes) + ")"
        await self._collection.update_many(
            {"_id": profile_range(profile_id)},
            {
                "$unset": {f"fields.{field_key}": "", f"{SORT_KEYS}.{field_key}": ""},
                "$pull": {SEARCH_TERMS: {"$regex": pattern}},
            },
        )

    async def find_page(self, profile_id: str, **query: Any) -> list[Contact]:
        """`MongoContactPages.find_page`."""
        return await self._pages.find_page(profile_id, **query)

    async def find_keys(self, profile_id: str, **query: Any) -> list[str]:
        """`MongoContactPages.find_keys`."""
        return await self._pages.find_keys(profile_id, **query)

    async def count_matching(self, profile_id: str, **query: Any) -> int:
        """`MongoContactPages.count_matching`."""
        return await self._pages.count_matching(profile_id, **query)
