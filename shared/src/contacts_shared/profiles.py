"""A service's projection of `profiles.events`: each profile's fields at their newest version,
all a service needs to check values, headers or rules against a profile without asking
profile-svc. Kept by contact-svc and import-svc alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from contacts_shared.events import DomainEvent, EventEnvelope, ProfileDeleted, ProfileEvent
from contacts_shared.mongo import Collection, ensure_indexes, replace_if_newer
from contacts_shared.schema import FieldSpec, ProfileSnapshot, ProfileType
from contacts_shared.values import field_named, fields_by_name, identity_key, typed_values

# A deleted profile's schema stays, with its last version, so a late event cannot revive it.
DELETED = "deleted"
ACCOUNT = "account_id"


class ProfileNotWritable(Exception):
    """Virtual profiles hold no contacts of their own."""


@dataclass(frozen=True)
class ProfileSchema:
    """A profile's fields, projected from profile events."""

    profile_id: str
    account_id: str
    type: ProfileType
    fields: tuple[FieldSpec, ...]
    version: int
    # No contact of the profile is older: where pages in creation order start looking.
    created_at: datetime | None = None

    @classmethod
    def of(cls, snapshot: ProfileSnapshot) -> ProfileSchema:
        return cls(
            profile_id=snapshot.id,
            account_id=snapshot.account_id,
            type=snapshot.type,
            fields=snapshot.fields,
            version=snapshot.version,
            created_at=snapshot.created_at,
        )

    @cached_property  # asked for every row of an import
    def identity(self) -> FieldSpec:
        if self.type is ProfileType.VIRTUAL:
            raise ProfileNotWritable("virtual profiles hold no contacts of their own")
        return next(spec for spec in self.fields if spec.identity)

    def field_named(self, name: str) -> FieldSpec | None:
        return field_named(self._fields_by_name, name)

    @cached_property  # asked for every value of every row
    def _fields_by_name(self) -> dict[str, FieldSpec]:
        return fields_by_name(self.fields)

    def identity_key(self, raw: object, default_region: str) -> str:
        """The contact key: normalized email or E.164 phone; ValuesInvalid says why not."""
        return identity_key(self.identity, raw, default_region)

    def values(
        self, given: Mapping[str, object], *, default_region: str, partial: bool
    ) -> dict[str, Any]:
        """`contacts_shared.values.typed_values` over this profile's fields."""
        return typed_values(self.fields, given, default_region=default_region, partial=partial)


class SchemaStore(Protocol):
    async def get(self, profile_id: str) -> ProfileSchema | None: ...

    async def apply(self, schema: ProfileSchema, *, deleted: bool) -> bool: ...


# Beyond `wait`: an ObjectId keeps whole seconds of its minting, and profile-svc's clock may
# run somewhat ahead of ours.
MINTING_SLACK_SECONDS = 2.0


def wait_for_new_profile_until(profile_id: str, wait: float) -> float | None:
    """Until when (Unix time) a request may wait for `profile_id` to reach the projection: a
    profile id carries its creation time (profile-svc mints ObjectIds), and only one minted in
    the last `wait` seconds can be on its way. None for an older or malformed id: it is
    unknown now and will stay so, whatever the wait."""
    if not ObjectId.is_valid(profile_id):
        return None
    minted = ObjectId(profile_id).generation_time.timestamp()
    return minted + wait + MINTING_SLACK_SECONDS


class PatientSchemas:
    """The schemas as a request handler should see them: a profile created a moment ago and
    not in the projection yet is looked for again until `wait` seconds after its creation
    before it counts as unknown. profile-svc's events reach the projection a moment after
    profile-svc answered, and a client that creates a profile and uses it at once must not be
    told it does not exist; an older or mistyped id is unknown at once, without holding the
    request. Consumers use the store itself: they must not stall on a profile that is gone."""

    def __init__(self, store: SchemaStore, *, wait: float, poll: float = 0.05) -> None:
        self._store = store
        self._wait = wait
        self._poll = poll

    async def get(self, profile_id: str) -> ProfileSchema | None:
        until = wait_for_new_profile_until(profile_id, self._wait)
        while (schema := await self._store.get(profile_id)) is None:
            if until is None or time.time() >= until:
                return None
            await asyncio.sleep(self._poll)
        return schema

    async def apply(self, schema: ProfileSchema, *, deleted: bool) -> bool:
        return await self._store.apply(schema, deleted=deleted)


class MongoSchemaStore:
    """The latest version of each profile's schema; older or repeated events change nothing."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def get(self, profile_id: str) -> ProfileSchema | None:
        document = await self._collection.find_one({"_id": profile_id})
        if document is None or document.get(DELETED):
            return None
        return ProfileSchema(
            profile_id=document["_id"],
            account_id=document["account_id"],
            type=ProfileType(document["type"]),
            fields=tuple(FieldSpec.model_validate(spec) for spec in document["fields"]),
            version=document["version"],
            created_at=document.get("created_at"),
        )

    async def create_indexes(self) -> None:
        await ensure_indexes(self._collection, [IndexModel([(ACCOUNT, ASCENDING)], name=ACCOUNT)])

    async def holding_contacts(self, account_id: str) -> list[str]:
        """The ids of the account's profiles that hold contacts (not deleted, not virtual)."""
        cursor = self._collection.find(
            {
                ACCOUNT: account_id,
                DELETED: {"$ne": True},
                "type": {"$ne": ProfileType.VIRTUAL.value},
            },
            {"_id": 1},
        )
        return [document["_id"] async for document in cursor]

    async def apply(self, schema: ProfileSchema, *, deleted: bool) -> bool:
        """Store `schema` unless a newer or equal version is there; True if stored."""
        return await replace_if_newer(
            self._collection,
            schema.profile_id,
            {"version": {"$lt": schema.version}},
            {
                ACCOUNT: schema.account_id,
                "type": schema.type.value,
                "fields": [spec.model_dump(mode="json") for spec in schema.fields],
                "version": schema.version,
                "created_at": schema.created_at,
                DELETED: deleted,
            },
        )


async def project_profile_event(
    envelope: EventEnvelope, event: DomainEvent, schemas: SchemaStore
) -> None:
    """Store what a profile event says of the profile's schema, its deletion included; other
    events change nothing. Older or repeated events are ignored by the store."""
    if isinstance(event, ProfileDeleted):
        gone = ProfileSchema(event.profile_id, envelope.accountid, event.type, (), event.version)
        await schemas.apply(gone, deleted=True)
    elif isinstance(event, ProfileEvent):
        await schemas.apply(ProfileSchema.of(event.profile), deleted=False)
