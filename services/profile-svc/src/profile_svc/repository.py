"""Profile storage: a port (Protocol) and its MongoDB implementation with an outbox."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from contacts_shared.events import DomainEvent
from contacts_shared.mongo import (
    Collection,
    Document,
    StaleDocument,
    ensure_indexes,
    update_if,
)
from contacts_shared.outbox import (
    OUTBOX,
    OUTBOX_INDEX,
    TOMBSTONE,
    EventsQueued,
    outbox_entries,
    outbox_update,
)
from contacts_shared.rules import RuleGroup
from contacts_shared.schema import FieldSpec, ProfileType
from contacts_shared.settings import ServiceSettings
from contacts_shared.values import name_key
from profile_svc.domain import PagePosition, Profile, ProfileConflict, ProfileOrder


@dataclass(frozen=True)
class ProfileFilter:
    """Which of an account's profiles a list holds; None or empty: any."""

    types: tuple[ProfileType, ...] = ()
    name_prefix: str | None = None
    base_profile_id: str | None = None
    ids: tuple[str, ...] = ()


class ProfileRepository(Protocol):
    async def add(self, profile: Profile) -> None: ...

    async def get(self, account_id: str, profile_id: str) -> Profile | None: ...

    async def save(self, profile: Profile, *, expected_version: int) -> None: ...

    async def remove(self, profile: Profile, *, expected_version: int) -> None: ...

    async def find_page(
        self,
        account_id: str,
        filters: ProfileFilter,
        *,
        order: ProfileOrder,
        after: PagePosition | None,
        limit: int,
    ) -> list[Profile]: ...

    async def count(self, account_id: str, filters: ProfileFilter) -> int: ...

    async def based_on(self, account_id: str, base_profile_id: str) -> list[Profile]: ...


MAX_DEPENDENTS = 1000
# The stored field each order sorts on; `_id` breaks its ties.
SORT_FIELDS = {"name": "name_key", "created_at": "created_at", "updated_at": "updated_at"}


def _profile_document(profile: Profile) -> Document:
    return {
        "_id": profile.id,
        "account_id": profile.account_id,
        "name": profile.name,
        "name_key": name_key(profile.name),
        "description": profile.description,
        "type": profile.type.value,
        "fields": [spec.model_dump(mode="json") for spec in profile.fields],
        "base_profile_id": profile.base_profile_id,
        "rules": profile.rules.model_dump(exclude_none=True) if profile.rules else None,
        "version": profile.version,
        "created_at": profile.created_at,
        "updated_at": profile.updated_at,
    }


def _profile_from(document: Document) -> Profile:
    return Profile(
        id=document["_id"],
        account_id=document["account_id"],
        name=document["name"],
        description=document["description"],
        type=ProfileType(document["type"]),
        fields=[FieldSpec.model_validate(spec) for spec in document["fields"]],
        base_profile_id=document.get("base_profile_id"),
        rules=RuleGroup.model_validate(document["rules"]) if document.get("rules") else None,
        version=document["version"],
        created_at=document["created_at"],
        updated_at=document["updated_at"],
    )


def _filter_query(account_id: str, filters: ProfileFilter) -> Document:
    query: Document = {"account_id": account_id, TOMBSTONE: {"$ne": True}}
    if filters.types:
        query["type"] = {"$in": [t.value for t in filters.types]}
    if filters.ids:
        query["_id"] = {"$in": list(filters.ids)}
    if filters.name_prefix:
        query["name_key"] = {"$regex": "^" + re.escape(name_key(filters.name_prefix))}
    if filters.base_profile_id is not None:
        query["base_profile_id"] = filters.base_profile_id
    return query


class MongoProfileRepository:
    """Profiles in one collection; each write carries its events in the document's outbox."""

    def __init__(
        self,
        collection: Collection,
        settings: ServiceSettings,
        *,
        events_queued: EventsQueued,
    ) -> None:
        self._collection = collection
        self._settings = settings
        self._events_queued = events_queued

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._collection,
            [
                IndexModel(
                    [("account_id", ASCENDING), ("name_key", ASCENDING)],
                    unique=True,
                    name="name_unique",
                ),
                # One per list order (each serves both directions); name_unique cannot, as
                # it does not end in the `_id` that breaks ties.
                *(
                    IndexModel(
                        [("account_id", ASCENDING), (field, ASCENDING), ("_id", ASCENDING)],
                        name=f"by_{attribute}",
                    )
                    for attribute, field in SORT_FIELDS.items()
                ),
                # The filters, in the default order; a filter with another order sorts only
                # its matches, one account's profiles at most.
                IndexModel(
                    [
                        ("account_id", ASCENDING),
                        ("type", ASCENDING),
                        ("created_at", ASCENDING),
                        ("_id", ASCENDING),
                    ],
                    name="by_type",
                ),
                IndexModel(
                    [
                        ("account_id", ASCENDING),
                        ("base_profile_id", ASCENDING),
                        ("created_at", ASCENDING),
                        ("_id", ASCENDING),
                    ],
                    name="by_base",
                ),
                OUTBOX_INDEX,
            ],
        )

    def _entries(self, profile: Profile, events: Sequence[DomainEvent]) -> list[Document]:
        return outbox_entries(events, account_id=profile.account_id, settings=self._settings)

    def _name_taken(self, profile: Profile) -> ProfileConflict:
        return ProfileConflict(f"a profile named '{profile.name}' already exists", field="name")

    async def add(self, profile: Profile) -> None:
        document = _profile_document(profile)
        document[OUTBOX] = self._entries(profile, profile.take_events())
        try:
            await self._collection.insert_one(document)
        except DuplicateKeyError as exc:
            raise self._name_taken(profile) from exc
        self._events_queued(profile.id)

    async def get(self, account_id: str, profile_id: str) -> Profile | None:
        document = await self._collection.find_one(
            {"_id": profile_id, "account_id": account_id, TOMBSTONE: {"$ne": True}}, {OUTBOX: 0}
        )
        return _profile_from(document) if document else None

    async def _update(self, profile: Profile, expected_version: int, changes: Document) -> None:
        events = profile.take_events()
        if not events:
            return
        update: dict[str, Any] = {**outbox_update(self._entries(profile, events)), "$set": changes}
        try:
            applied = await update_if(
                self._collection,
                profile.id,
                {"account_id": profile.account_id, "version": expected_version},
                update,
            )
        except DuplicateKeyError as exc:
            raise self._name_taken(profile) from exc
        if not applied:
            raise StaleDocument(profile.id)
        self._events_queued(profile.id)

    async def save(self, profile: Profile, *, expected_version: int) -> None:
        changes = _profile_document(profile)
        for fixed in ("_id", "account_id", "type", "created_at"):
            del changes[fixed]
        await self._update(profile, expected_version, changes)

    async def remove(self, profile: Profile, *, expected_version: int) -> None:
        # A tombstone until the relay has published ProfileDeleted; the name is freed at once.
        await self._update(
            profile,
            expected_version,
            {TOMBSTONE: True, "name_key": f"\x00deleted:{profile.id}", "version": profile.version},
        )

    async def find_page(
        self,
        account_id: str,
        filters: ProfileFilter,
        *,
        order: ProfileOrder,
        after: PagePosition | None,
        limit: int,
    ) -> list[Profile]:
        field = SORT_FIELDS[order.attribute]
        query = _filter_query(account_id, filters)
        if after is not None:
            beyond = "$lt" if order.descending else "$gt"
            query["$or"] = [
                {field: {beyond: after.value}},
                {field: after.value, "_id": {beyond: after.id}},
            ]
        direction = DESCENDING if order.descending else ASCENDING
        cursor = (
            self._collection.find(query, {OUTBOX: 0})
            .sort([(field, direction), ("_id", direction)])
            .limit(limit)
        )
        return [_profile_from(document) async for document in cursor]

    async def count(self, account_id: str, filters: ProfileFilter) -> int:
        return await self._collection.count_documents(_filter_query(account_id, filters))

    async def based_on(self, account_id: str, base_profile_id: str) -> list[Profile]:
        query = _filter_query(account_id, ProfileFilter(base_profile_id=base_profile_id))
        cursor = self._collection.find(query, {OUTBOX: 0}).limit(MAX_DEPENDENTS)
        return [_profile_from(document) async for document in cursor]
