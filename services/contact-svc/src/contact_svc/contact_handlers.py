"""Use cases on one contact at a time (create, read, replace, patch, delete, upsert), and the
rules the batch use cases apply the same way: the writable schema, the contact key and values
of a request, how a contact arrives (suppressed or not) and how a change is applied."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from contact_svc.contact_repository import ContactRepository
from contact_svc.domain import (
    SUPPRESSION_SOURCE,
    Contact,
    ContactExists,
    ContactNotFound,
    ProfileUnknown,
    Suppression,
)
from contacts_shared.mongo import bson_now, retry_if_stale
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.schema import ContactStatus
from contacts_shared.values import FieldProblem, ValuesInvalid


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"
    ACCEPTED = "accepted"  # on the command topic, to be applied
    STALE = "stale"  # older than a change the store sent before: not applied


async def writable_schema(schemas: SchemaStore, account_id: str, profile_id: str) -> ProfileSchema:
    """The profile's schema, if contact-svc has heard of it in this account."""
    schema = await schemas.get(profile_id)
    if schema is None or schema.account_id != account_id:
        raise ProfileUnknown(profile_id)
    schema.identity  # noqa: B018 - raises for virtual profiles, which hold no contacts
    return schema


def keyed_values(
    schema: ProfileSchema,
    given: Mapping[str, object],
    key: str | None,
    region: str,
    *,
    partial: bool,
) -> tuple[str, dict[str, Any]]:
    """The contact key (from the path, or the identity field of the body) and the other
    fields' values by field key, or ValuesInvalid naming the fields; unless `partial`, the
    required fields must be given."""
    contact_key, rest = _split_identity(schema, given, key, region)
    return contact_key, schema.values(rest, default_region=region, partial=partial)


def _split_identity(
    schema: ProfileSchema, given: Mapping[str, object], key: str | None, region: str
) -> tuple[str, dict[str, object]]:
    """The contact key (from the path, or the identity field of the body) and the rest."""
    identity = schema.identity
    rest: dict[str, object] = {}
    in_body = []
    for name, value in given.items():
        if schema.field_named(name) is identity:
            in_body.append(value)
        else:
            rest[name] = value
    if key is None:
        if not in_body:
            raise ValuesInvalid([FieldProblem(identity.name, "is required")])
        return schema.identity_key(in_body[0], region), rest
    path_key = schema.identity_key(key, region)
    if in_body and schema.identity_key(in_body[0], region) != path_key:
        raise ValuesInvalid([FieldProblem(identity.name, "differs from the contact in the path")])
    return path_key, rest


def arriving_contact(
    schema: ProfileSchema,
    key: str,
    values: Mapping[str, Any],
    source: str,
    suppression: Suppression | None,
    status: ContactStatus | None,
    now: datetime,
    *,
    version: int = 1,
    status_reason: str | None = None,
) -> Contact:
    """A contact being added: with the status given (and its reason), else suppressed as the
    account-wide suppression says, else active."""
    reason: str | None
    if status is None and suppression is not None:
        status, reason, status_source = suppression.status, suppression.reason(), SUPPRESSION_SOURCE
    else:
        status, reason, status_source = status or ContactStatus.ACTIVE, status_reason, source
    return Contact.create(
        schema=schema,
        key=key,
        values=dict(values),
        source=source,
        now=now,
        status=status,
        status_reason=reason,
        status_source=status_source,
        version=version,
    )


async def _add_new(
    schema: ProfileSchema,
    key: str,
    values: Mapping[str, Any],
    *,
    source: str,
    status: ContactStatus | None,
    stored_version: int,
    contacts: ContactRepository,
    status_reason: str | None = None,
) -> Contact:
    """Store a contact the profile does not hold. An email or phone suppressed elsewhere in the
    account arrives suppressed, unless the caller sets a status explicitly."""
    suppressions = {} if status else await contacts.suppressions_of(schema.account_id, [key])
    suppression = suppressions.get(key)
    contact = arriving_contact(
        schema,
        key,
        values,
        source,
        suppression,
        status,
        bson_now(),
        version=stored_version + 1,
        status_reason=status_reason,
    )
    await contacts.add(contact, stored_version=stored_version)
    return contact


async def _live(contacts: ContactRepository, profile_id: str, key: str) -> tuple[Contact, int]:
    """The live contact and its stored version; ContactNotFound (404) when there is none."""
    live, stored_version = await contacts.find(profile_id, key)
    if live is None:
        raise ContactNotFound(key)
    return live, stored_version


async def create_contact(
    *,
    account_id: str,
    profile_id: str,
    fields: Mapping[str, object],
    status: ContactStatus | None,
    source: str,
    region: str,
    schemas: SchemaStore,
    contacts: ContactRepository,
) -> tuple[ProfileSchema, Contact]:
    """Add a contact; 409 when it exists."""
    schema = await writable_schema(schemas, account_id, profile_id)
    key, values = keyed_values(schema, fields, None, region, partial=False)

    async def change() -> Contact:
        live, stored_version = await contacts.find(profile_id, key)
        if live is not None:
            raise ContactExists(key, schema.identity.name)
        return await _add_new(
            schema,
            key,
            values,
            source=source,
            status=status,
            stored_version=stored_version,
            contacts=contacts,
        )

    return schema, await retry_if_stale(change)


async def put_contact(
    *,
    account_id: str,
    profile_id: str,
    key: str,
    fields: Mapping[str, object],
    status: ContactStatus | None,
    source: str,
    region: str,
    schemas: SchemaStore,
    contacts: ContactRepository,
) -> tuple[ProfileSchema, Contact, bool]:
    """Create or replace a contact's values; True when it was created."""
    schema = await writable_schema(schemas, account_id, profile_id)
    contact_key, values = keyed_values(schema, fields, key, region, partial=False)

    contact, outcome = await upsert_contact(
        schema=schema,
        key=contact_key,
        values=values,
        source=source,
        contacts=contacts,
        replace_all=True,
        status=status,
    )
    return schema, contact, outcome is Outcome.CREATED


async def patch_contact(
    *,
    account_id: str,
    profile_id: str,
    key: str,
    fields: Mapping[str, object],
    status: ContactStatus | None,
    status_reason: str | None,
    source: str,
    region: str,
    schemas: SchemaStore,
    contacts: ContactRepository,
) -> tuple[ProfileSchema, Contact]:
    """Change only the given fields, and the status if given."""
    schema = await writable_schema(schemas, account_id, profile_id)
    contact_key, values = keyed_values(schema, fields, key, region, partial=True)

    async def change() -> Contact:
        live, stored_version = await _live(contacts, profile_id, contact_key)
        now = bson_now()
        live.set_values(values, schema=schema, replace_all=False, source=source, now=now)
        if status is not None:
            live.change_status(status, reason=status_reason, source=source, now=now)
        await contacts.save(live, expected_version=stored_version)
        return live

    return schema, await retry_if_stale(change)


async def get_contact(
    *,
    account_id: str,
    profile_id: str,
    key: str,
    region: str,
    schemas: SchemaStore,
    contacts: ContactRepository,
) -> tuple[ProfileSchema, Contact]:
    schema = await writable_schema(schemas, account_id, profile_id)
    contact_key = schema.identity_key(key, region)
    live, _ = await _live(contacts, profile_id, contact_key)
    return schema, live


async def delete_contact(
    *,
    account_id: str,
    profile_id: str,
    key: str,
    source: str,
    region: str,
    schemas: SchemaStore,
    contacts: ContactRepository,
) -> None:
    schema = await writable_schema(schemas, account_id, profile_id)
    contact_key = schema.identity_key(key, region)

    async def change() -> None:
        live, stored_version = await _live(contacts, profile_id, contact_key)
        live.delete(source=source, now=bson_now())
        await contacts.save(live, expected_version=stored_version)

    await retry_if_stale(change)


async def upsert_contact(
    *,
    schema: ProfileSchema,
    key: str,
    values: Mapping[str, Any],
    source: str,
    contacts: ContactRepository,
    replace_all: bool = False,
    status: ContactStatus | None = None,
    status_reason: str | None = None,
    keep_suppressed: bool = False,
    read: tuple[Contact | None, int] | None = None,
) -> tuple[Contact, Outcome]:
    """Create the contact, or change the given values of an existing one (all of them when
    `replace_all`), and its status if given (`keep_suppressed`: only if it is active). Values
    are validated, by field key. Applying the same values again changes nothing and publishes
    nothing: redelivered commands are harmless. `read`: what `contacts.find` gave moments
    ago, used for the first attempt."""

    async def change() -> tuple[Contact, Outcome]:
        nonlocal read
        live, stored_version = read or await contacts.find(schema.profile_id, key)
        read = None  # a retry reads again
        now = bson_now()
        if live is None:
            contact = await _add_new(
                schema,
                key,
                values,
                source=source,
                status=status,
                stored_version=stored_version,
                contacts=contacts,
                status_reason=status_reason,
            )
            return contact, Outcome.CREATED
        outcome = change_contact(
            live,
            values,
            schema=schema,
            source=source,
            now=now,
            replace_all=replace_all,
            status=status,
            status_reason=status_reason,
            keep_suppressed=keep_suppressed,
        )
        await contacts.save(live, expected_version=stored_version)
        return live, outcome

    return await retry_if_stale(change)


def change_contact(
    live: Contact,
    values: Mapping[str, Any],
    *,
    schema: ProfileSchema,
    source: str,
    now: datetime,
    replace_all: bool = False,
    status: ContactStatus | None = None,
    status_reason: str | None = None,
    keep_suppressed: bool = False,
) -> Outcome:
    """Change the given values of a live contact (all of them when `replace_all`), and its
    status if given: whether that changed anything. `keep_suppressed`: a status a store's
    record tells (a consent withdrawn) changes only an active contact, so a bounce stays one."""
    if keep_suppressed and live.status is not ContactStatus.ACTIVE:
        status = None
    changed = live.set_values(
        dict(values), schema=schema, replace_all=replace_all, source=source, now=now
    )
    if status is not None and live.change_status(
        status, reason=status_reason, source=source, now=now
    ):
        changed += ("status",)
    return Outcome.UPDATED if changed else Outcome.UNCHANGED
