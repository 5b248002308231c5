"""contact-svc storage: profile schemas projected from profile events, and contacts with an
outbox. Ports are Protocols; the MongoDB implementations follow them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, IndexModel, InsertOne, UpdateOne
from pymongo.errors import DuplicateKeyError

from contact_svc.domain import (
    Contact,
    ContactOrder,
    ImportStamp,
    PagePosition,
    Suppression,
    SuppressionLifted,
    contact_id,
    suppression_told,
)
from contact_svc.stats import CountedMark, PartitionCounts
from contacts_shared.commands import RowOutcome
from contacts_shared.journal import JOURNAL, EventJournal, JournaledWrite, JournalRound
from contacts_shared.mongo import (
    Collection,
    Document,
    StaleDocument,
    bson_now,
    bulk_write_tolerating_duplicates,
    ensure_indexes,
    find_by_ids,
    prefix_range,
    put_each,
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
from contacts_shared.schema import ContactStatus
from contacts_shared.settings import ServiceSettings

# A deleted contact's document stays, with its last version, so that a contact added again
# later continues the version sequence consumers have seen.
DELETED = "deleted"
# The import rows that last wrote the contact (ADR 10).
IMPORTED = "imported"


@dataclass(frozen=True)
class Saving:
    """A change of a live contact to write if its document is still at `expected_version`;
    `unevented` as for `save`."""

    contact: Contact
    expected_version: int
    unevented: bool = False


class ContactRepository(Protocol):
    def queueing_to(
        self, events_queued: EventsQueued, journaled: JournalRound | None = None
    ) -> ContactRepository: ...

    async def drop_field(self, profile_id: str, field_key: str) -> None: ...

    async def find(self, profile_id: str, key: str) -> tuple[Contact | None, int]: ...

    async def find_even_deleted(self, profile_id: str, key: str) -> Contact | None: ...

    async def find_many(
        self, profile_id: str, keys: Sequence[str]
    ) -> dict[str, tuple[Contact | None, int]]: ...

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

    async def find_page(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after: PagePosition | None,
        limit: int,
        order: ContactOrder = ...,
        since: datetime | None = None,
    ) -> list[Contact]: ...


# Strings the listing indexes serve, each beginning with the profile id so one index range is
# one profile's share (DocumentDB keeps each field of a compound index as a separate term, so
# `profile_id` in a filter would read the whole profile). ADR 9.
SEARCH_TERMS = "search_terms"  # the contact's status and every field value, as exact terms
CREATED_ORDER = "created_order"  # profile, creation time and key: creation order, one range
TERMS_INDEX = "search_terms_1"
CREATED_INDEX = "created_order_1"
SEPARATOR = "\x1f"
PAST_SEPARATOR = chr(ord(SEPARATOR) + 1)
# Longer values are not indexed (index keys are bounded); equality on them still works, by
# reading the profile in key order.
MAX_TERM_VALUE = 256
# Filters matching under 1 in RARE_FILTER_SHARE of the keys probed are served from the terms.
RARE_FILTER_SHARE = 200
FIRST_WINDOW = timedelta(hours=1)
OLDEST_CONTACT = datetime(2000, 1, 1, tzinfo=UTC)


def status_term(profile_id: str, status: ContactStatus) -> str:
    return SEPARATOR.join(("status", profile_id, status.value))


def field_term(profile_id: str, field_key: str, value: object) -> str | None:
    """The exact term of a stored value (None: not indexed); numbers equal as numbers."""
    if value is None or isinstance(value, list | dict):
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    if len(text) > MAX_TERM_VALUE:
        return None
    return SEPARATOR.join(("field", profile_id, field_key, text))


def created_order(profile_id: str, created_at: datetime, key: str = "") -> str:
    """Sorts as (profile, creation time, key); fixed-width UTC milliseconds."""
    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return SEPARATOR.join((profile_id, stamp, key))


def search_terms(contact: Contact) -> list[str]:
    terms = (field_term(contact.profile_id, k, v) for k, v in contact.fields.items())
    return [status_term(contact.profile_id, contact.status), *(t for t in terms if t)]


def contact_document(contact: Contact) -> Document:
    return {
        "_id": contact.id,
        "account_id": contact.account_id,
        "profile_id": contact.profile_id,
        "key": contact.key,
        "fields": contact.fields,
        "status": contact.status.value,
        "status_reason": contact.status_reason,
        "status_source": contact.status_source,
        "status_changed_at": contact.status_changed_at,
        "source": contact.source,
        "version": contact.version,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
        DELETED: contact.deleted,
        "erased": contact.erased,
        IMPORTED: asdict(contact.imported) if contact.imported else None,
        SEARCH_TERMS: search_terms(contact),
        CREATED_ORDER: created_order(contact.profile_id, contact.created_at, contact.key),
    }


def _stored(document: Document | None) -> tuple[Contact | None, int]:
    if document is None:
        return None, 0
    return (None if document.get(DELETED) else _contact(document)), document["version"]


def _contact(document: Document) -> Contact:
    return Contact(
        account_id=document["account_id"],
        profile_id=document["profile_id"],
        key=document["key"],
        fields=document["fields"],
        status=ContactStatus(document["status"]),
        status_reason=document.get("status_reason"),
        status_source=document["status_source"],
        status_changed_at=document["status_changed_at"],
        source=document["source"],
        version=document["version"],
        created_at=document["created_at"],
        updated_at=document["updated_at"],
        deleted=bool(document.get(DELETED)),
        erased=bool(document.get("erased")),
        imported=_stamp(document.get(IMPORTED)),
    )


def _stamp(stored: Document | None) -> ImportStamp | None:
    if not stored:
        return None
    return ImportStamp(
        import_id=stored["import_id"],
        first_line=stored["first_line"],
        first_outcome=RowOutcome(stored["first_outcome"]),
        line=stored["line"],
        outcome=RowOutcome(stored["outcome"]),
    )


class MongoContactRepository:
    """Contacts in one collection, `_id` = `profile_id:key`; each write carries its events, in
    the document's outbox or, for the bulk writes of a writer that publishes them itself, in
    the journal (ADR 12)."""

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
        """`probe_size`: keys read to judge whether a filter is rare (see `_in_key_order`)."""
        self._collection = collection
        self._settings = settings
        self._suppressions = suppressions
        self._events_queued = events_queued
        self._journal = journal
        self._journaled = journaled
        self._probe_size = probe_size

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
        await ensure_indexes(
            self._collection,
            [
                # Key order needs none: `_id` is `profile_id:key`.
                IndexModel([(SEARCH_TERMS, ASCENDING)], name=TERMS_INDEX),
                IndexModel([(CREATED_ORDER, ASCENDING)], name=CREATED_INDEX),
                OUTBOX_INDEX,
            ],
        )

    async def find(self, profile_id: str, key: str) -> tuple[Contact | None, int]:
        """The live contact (None if absent or deleted) and the stored version (0: never)."""
        return _stored(
            await self._collection.find_one({"_id": contact_id(profile_id, key)}, {OUTBOX: 0})
        )

    async def find_even_deleted(self, profile_id: str, key: str) -> Contact | None:
        """The contact as stored, a deleted one too (`deleted` says), or None if never held."""
        document = await self._collection.find_one(
            {"_id": contact_id(profile_id, key)}, {OUTBOX: 0}
        )
        return None if document is None else _contact(document)

    async def find_many(
        self, profile_id: str, keys: Sequence[str]
    ) -> dict[str, tuple[Contact | None, int]]:
        """`find` for many keys at once."""
        ids = [contact_id(profile_id, key) for key in keys]
        found = {
            document["key"]: document
            for document in await find_by_ids(self._collection, ids, {OUTBOX: 0})
        }
        return {key: _stored(found.get(key)) for key in keys}

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
        prefix = re.escape(SEPARATOR.join(("field", profile_id, field_key, "")))
        await self._collection.update_many(
            {"_id": profile_range(profile_id)},
            {
                "$unset": {f"fields.{field_key}": ""},
                "$pull": {SEARCH_TERMS: {"$regex": "^" + prefix}},
            },
        )

    async def find_page(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after: PagePosition | None,
        limit: int,
        order: ContactOrder = ContactOrder.KEY,
        since: datetime | None = None,
    ) -> list[Contact]:
        """A page of live contacts in `order`, reading about the page's worth of rows however
        large the profile (ADR 9); `since`: no contact is older (the profile's creation)."""
        filters: Document = {DELETED: False}
        terms = []
        if status is not None:
            filters["status"] = status.value
            terms.append(status_term(profile_id, status))
        if field_equals is not None:
            filters[f"fields.{field_equals[0]}"] = field_equals[1]
            if term := field_term(profile_id, *field_equals):
                terms.append(term)
        if order is ContactOrder.KEY:
            ids = profile_range(profile_id, key_prefix or "")
            if after is not None and contact_id(profile_id, after.key) >= ids["$gte"]:
                ids = {"$gt": contact_id(profile_id, after.key), "$lt": ids["$lt"]}
            documents = await self._in_key_order(ids, filters, terms, limit)
        else:
            if key_prefix:
                filters["_id"] = profile_range(profile_id, key_prefix)
            documents = await self._in_creation_order(
                profile_id, filters, after, order is ContactOrder.NEWEST, limit, since
            )
        return [_contact(document) for document in documents]

    async def _find(
        self, query: Document, index: str, limit: int, direction: int = ASCENDING
    ) -> list[Document]:
        field = "_id" if index == "_id_" else index.removesuffix("_1")
        cursor = self._collection.find(query, {OUTBOX: 0, SEARCH_TERMS: 0})
        return await cursor.sort(field, direction).hint(index).limit(limit).to_list()

    async def _in_key_order(
        self, ids: Document, filters: Document, terms: Sequence[str], limit: int
    ) -> list[Document]:
        """Read in `_id` order until `limit` match, unless the first `probe_size` keys show
        the filter is rare: then its matches come from the terms index and only they are
        sorted. Either way a page reads from `probe_size` to `RARE_FILTER_SHARE` times the
        page size of rows, however large the profile."""
        query = {**filters, "_id": ids}
        if filters == {DELETED: False}:  # no filter but liveness: nearly every row matches
            return await self._find(query, "_id_", limit)
        edge = await (
            self._collection.find({"_id": ids}, {"_id": 1})
            .sort("_id", ASCENDING)
            .hint("_id_")
            .skip(self._probe_size - 1)
            .limit(1)
            .to_list()
        )
        if not edge:  # fewer keys than the probe are left: one short read
            return await self._find(query, "_id_", limit)
        near = await self._find({**filters, "_id": {**ids, "$lte": edge[0]["_id"]}}, "_id_", limit)
        rest = {**filters, "_id": {"$gt": edge[0]["_id"], "$lt": ids["$lt"]}}
        wanted = limit - len(near)
        if wanted == 0:
            return near
        if len(near) * RARE_FILTER_SHARE >= self._probe_size or not terms:
            return near + await self._find(rest, "_id_", wanted)
        return near + await self._find({**rest, SEARCH_TERMS: {"$all": terms}}, TERMS_INDEX, wanted)

    async def _in_creation_order(
        self,
        profile_id: str,
        filters: Document,
        after: PagePosition | None,
        newest_first: bool,
        limit: int,
        since: datetime | None,
    ) -> list[Document]:
        """Windows of creation time from the cursor on, each read whole and sorted (DocumentDB
        sorts what a range matches), four times wider each time one comes back short: a page
        reads about an hour's additions, or the few windows it takes to find `limit`."""
        first, last = since or OLDEST_CONTACT, bson_now() + timedelta(minutes=1)
        # Bounds are `created_order` prefixes, which no contact's string equals.
        edge, at = None, last if newest_first else first
        if after is not None and after.created_at is not None:
            edge, at = created_order(profile_id, after.created_at, after.key), after.created_at
        width = FIRST_WINDOW
        found: list[Document] = []
        while True:
            at = at - width if newest_first else at + width
            done = at <= first if newest_first else at >= last
            bound = profile_id + (SEPARATOR if newest_first else PAST_SEPARATOR)
            if not done:
                bound = created_order(profile_id, at)
            if newest_first:
                window = {"$gt": bound, "$lt": edge or profile_id + PAST_SEPARATOR}
            else:
                window = {"$gt": edge or profile_id + SEPARATOR, "$lt": bound}
            direction = DESCENDING if newest_first else ASCENDING
            query = {**filters, CREATED_ORDER: window}
            found += await self._find(query, CREATED_INDEX, limit - len(found), direction)
            if done or len(found) == limit:
                return found
            edge, width = bound, width * 4


def profile_range(profile_id: str, key_prefix: str = "") -> Document:
    """The `_id` range of a profile's contacts whose keys start with `key_prefix`."""
    return prefix_range(contact_id(profile_id, key_prefix))


class SuppressionStore(Protocol):
    async def get_many(self, account_id: str, keys: Sequence[str]) -> dict[str, Suppression]: ...

    async def apply(self, changes: Sequence[Suppression | SuppressionLifted]) -> None: ...


class MongoSuppressionStore:
    """One document per (account, email or phone): the newest suppressing status or lift
    wins, so a change applied again, or late, leaves a newer one as it is."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def get_many(self, account_id: str, keys: Sequence[str]) -> dict[str, Suppression]:
        """The suppressions in force for these keys, by key."""
        ids = [f"{account_id}:{key}" for key in keys]
        suppressions = (
            Suppression(
                account_id=account_id,
                key=document["_id"].removeprefix(f"{account_id}:"),
                status=ContactStatus(document["status"]),
                profile_id=document["profile_id"],
                at=document["at"],
            )
            for document in await find_by_ids(self._collection, ids)
            if not document.get("lifted")
        )
        return {suppression.key: suppression for suppression in suppressions}

    async def apply(self, changes: Sequence[Suppression | SuppressionLifted]) -> None:
        """Record suppressions and lifts in one bulk write, each unless a newer one is there
        (its conditional upsert then meets the document's `_id`: a duplicate, not an error)."""
        newest: dict[str, Suppression | SuppressionLifted] = {}
        for change in changes:
            _id = f"{change.account_id}:{change.key}"
            if _id not in newest or newest[_id].at <= change.at:
                newest[_id] = change
        await bulk_write_tolerating_duplicates(
            self._collection,
            [
                UpdateOne(
                    {"_id": _id, "at": {"$lte": change.at}},
                    {"$set": {"at": change.at, **_suppression_fields(change)}},
                    upsert=True,
                )
                for _id, change in newest.items()
            ],
        )


def _suppression_fields(change: Suppression | SuppressionLifted) -> Document:
    if isinstance(change, SuppressionLifted):
        return {"lifted": True}
    return {"status": change.status.value, "profile_id": change.profile_id, "lifted": False}


class StatsStore(Protocol):
    async def marks(self, contact_ids: Sequence[str]) -> dict[str, CountedMark]: ...

    async def set_marks(
        self, marks: Mapping[str, CountedMark], *, stored: Container[str] = ()
    ) -> None: ...

    async def share(self, profile_id: str, partition: int) -> PartitionCounts: ...

    async def store(self, counts: PartitionCounts, *, expected_offset: int) -> None: ...

    async def of_profile(self, profile_id: str) -> list[PartitionCounts]: ...


class MongoStatsStore:
    """Per profile, a directory document (`_id` = profile id) listing the partitions that have
    counted its contacts, and a document per partition (`_id` = `profile_id|partition`), so
    reading a profile's statistics takes a few `_id` lookups, however many contacts it has;
    and per contact, the mark of the last event counted (see `stats.to_count`)."""

    def __init__(self, collection: Collection, marks: Collection) -> None:
        self._collection = collection
        self._marks = marks  # `_id` = contact id: a `CountedMark`

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
        document = await self._collection.find_one({"_id": f"{profile_id}|{partition}"})
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

    async def store(self, counts: PartitionCounts, *, expected_offset: int) -> None:
        """Write the share if it still stands at `expected_offset` (-1: not written yet)."""
        share_id = f"{counts.profile_id}|{counts.partition}"
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
        # which reads as zero, never a written share that no reader finds.
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
        directory = await self._collection.find_one({"_id": profile_id})
        partitions = directory["partitions"] if directory else []
        return list(await asyncio.gather(*(self.share(profile_id, p) for p in partitions)))
