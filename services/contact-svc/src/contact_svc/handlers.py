"""Use cases of contact-svc; each takes its ports as keyword arguments."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from contact_svc.domain import (
    SUPPRESSION_SOURCE,
    Contact,
    ContactExists,
    ContactNotFound,
    ContactOrder,
    PagePosition,
    ProfileUnknown,
    Suppression,
    import_rows,
    parse_cursor,
    suppression_told,
)
from contact_svc.repository import ContactRepository, Saving, StatsStore
from contact_svc.stats import ProfileStats, summarize
from contacts_shared.commands import (
    DeleteContact,
    ImportContact,
    PurgeForImport,
    RowOutcome,
    UpsertContact,
)
from contacts_shared.events import ContactEvent, DomainEvent
from contacts_shared.mongo import StaleDocument, bson_now, retry_if_stale
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.schema import ContactStatus
from contacts_shared.values import EXPORT_TRAILING_COLUMNS, FieldProblem, ValuesInvalid, csv_cell


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


def _arriving(
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
    contact = _arriving(
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
    key, rest = _split_identity(schema, fields, None, region)
    values = schema.values(rest, default_region=region, partial=False)

    async def change() -> Contact:
        live, stored_version = await contacts.find(profile_id, key)
        if live is not None:
            raise ContactExists(key)
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
    contact_key, rest = _split_identity(schema, fields, key, region)
    values = schema.values(rest, default_region=region, partial=False)

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
    contact_key, rest = _split_identity(schema, fields, key, region)
    values = schema.values(rest, default_region=region, partial=True)

    async def change() -> Contact:
        live, stored_version = await contacts.find(profile_id, contact_key)
        if live is None:
            raise ContactNotFound(contact_key)
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
    live, _ = await contacts.find(profile_id, contact_key)
    if live is None:
        raise ContactNotFound(contact_key)
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
        live, stored_version = await contacts.find(profile_id, contact_key)
        if live is None:
            raise ContactNotFound(contact_key)
        live.delete(source=source, now=bson_now())
        await contacts.save(live, expected_version=stored_version)

    await retry_if_stale(change)


async def list_contacts(
    *,
    account_id: str,
    profile_id: str,
    status: ContactStatus | None,
    key_prefix: str | None,
    field: str | None,
    value: str | None,
    cursor: str | None,
    order: ContactOrder,
    limit: int,
    region: str,
    schemas: SchemaStore,
    contacts: ContactRepository,
) -> tuple[ProfileSchema, list[Contact]]:
    """A page of contacts by key; `field` = `value` compares the value as the field's type."""
    schema = await writable_schema(schemas, account_id, profile_id)
    field_equals = None
    if (field is None) != (value is None):
        raise ValuesInvalid([FieldProblem("field", "give both field and value, or neither")])
    if field is not None and value is not None:
        spec = schema.field_named(field)
        if spec is None:
            raise ValuesInvalid([FieldProblem("field", f"no field '{field}' in this profile")])
        if spec.identity:
            key = schema.identity_key(value, region)
            field_equals = (spec.key, key)
            if key.startswith(key_prefix.strip().lower() if key_prefix else ""):
                key_prefix = key  # the key itself: its `_id` range reads one contact
        else:
            converted = schema.values({spec.name: value}, default_region=region, partial=True)
            field_equals = (spec.key, converted[spec.key])
    page = await contacts.find_page(
        profile_id,
        status=status,
        key_prefix=key_prefix.strip().lower() if key_prefix else None,
        field_equals=field_equals,
        after=parse_cursor(order, cursor) if cursor else None,
        order=order,
        limit=limit,
        since=schema.created_at,
    )
    return schema, page


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
        outcome = _changed(
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


def _changed(
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


@dataclass(frozen=True)
class ItemResult:
    index: int
    outcome: Outcome
    key: str | None = None
    errors: tuple[FieldProblem, ...] = ()


def validate_item(
    schema: ProfileSchema, fields: Mapping[str, object], region: str
) -> tuple[str, dict[str, Any]]:
    """An item's contact key and values by field key, or ValuesInvalid naming its fields."""
    key, rest = _split_identity(schema, fields, None, region)
    return key, schema.values(rest, default_region=region, partial=True)


async def upsert_batch(
    *,
    account_id: str,
    profile_id: str,
    items: Sequence[Mapping[str, object]],
    source: str,
    region: str,
    schemas: SchemaStore,
    contacts: ContactRepository,
) -> list[ItemResult]:
    """Upsert the valid items together, as `apply_upserts` does: a bad item is reported and
    changes nothing, the others are applied. Items naming one contact are merged into one
    change, and each reports its outcome."""
    schema = await writable_schema(schemas, account_id, profile_id)
    results: list[ItemResult] = []
    valid: list[tuple[str, _Change]] = []
    for index, fields in enumerate(items):
        try:
            key, values = validate_item(schema, fields, region)
        except ValuesInvalid as exc:
            results.append(ItemResult(index, Outcome.REJECTED, errors=tuple(exc.problems)))
            continue
        valid.append((key, _Change(values, source)))
        results.append(ItemResult(index, Outcome.ACCEPTED, key))
    outcomes = await _apply_changes(schema, _merge(valid), contacts)
    return [
        ItemResult(r.index, outcomes[r.key], r.key) if r.key is not None else r for r in results
    ]


async def apply_upserts(
    commands: Sequence[UpsertContact], *, schemas: SchemaStore, contacts: ContactRepository
) -> list[UpsertContact]:
    """Apply a batch from the command topic, in order per contact; returns the commands whose
    profile is gone (they change nothing). Several commands for one contact are merged into
    one change, as applying them in turn would leave it. Contacts the profile never held are
    created with one bulk insert; the others go one by one through `upsert_contact`. Applying
    a batch again finds its values in place and changes nothing."""
    orphans: list[UpsertContact] = []
    by_profile: dict[str, list[UpsertContact]] = {}
    for command in commands:
        by_profile.setdefault(command.profile_id, []).append(command)
    for profile_id, group in by_profile.items():
        schema = await schemas.get(profile_id)
        if schema is None:
            orphans.extend(group)
            continue
        known = {spec.key for spec in schema.fields}  # a field removed since is left out
        merged = _merge(
            (
                c.key,
                _Change(
                    {k: v for k, v in c.values.items() if k in known},
                    c.source,
                    c.status,
                    c.status_reason,
                ),
            )
            for c in group
            if c.account_id == schema.account_id
        )
        orphans.extend(c for c in group if c.account_id != schema.account_id)
        await _apply_changes(schema, merged, contacts)
    return orphans


@dataclass(frozen=True)
class _Change:
    """One contact's change: values by key, and a status with its reason when one is set."""

    values: Mapping[str, Any]
    source: str
    status: ContactStatus | None = None
    status_reason: str | None = None


async def _apply_changes(
    schema: ProfileSchema, merged: Mapping[str, _Change], contacts: ContactRepository
) -> dict[str, Outcome]:
    """Apply one change per contact key; the outcome of each. The contacts are read at once:
    those the profile never held go in with one bulk insert, the live ones are updated in one
    bulk write, each conditional on the version read. A contact deleted before, or written
    meanwhile (an insert refused), goes through `upsert_contact` alone."""
    stored = await contacts.find_many(schema.profile_id, list(merged))
    fresh = _never_held(stored)
    suppressions = await contacts.suppressions_of(schema.account_id, fresh)
    now = bson_now()
    new = [
        _arriving(
            schema,
            key,
            merged[key].values,
            merged[key].source,
            suppressions.get(key),
            merged[key].status,
            now,
            status_reason=merged[key].status_reason,
        )
        for key in fresh
    ]
    outcomes = dict.fromkeys(merged, Outcome.CREATED)

    def changed(live: Contact, version: int) -> Saving:
        change = merged[live.key]
        outcomes[live.key] = _changed(
            live,
            change.values,
            schema=schema,
            source=change.source,
            now=now,
            status=change.status,
            status_reason=change.status_reason,
            keep_suppressed=True,
        )
        return Saving(live, version)

    for key, read in (await _write_in_bulk(contacts, stored, new, changed)).items():
        change = merged[key]
        _, outcomes[key] = await upsert_contact(
            schema=schema,
            key=key,
            values=change.values,
            source=change.source,
            contacts=contacts,
            status=change.status,
            status_reason=change.status_reason,
            keep_suppressed=True,
            read=read,
        )
    return outcomes


def _never_held(stored: Mapping[str, tuple[Contact | None, int]]) -> list[str]:
    """The keys of `find_many`'s answer that the profile never held (no document)."""
    return [key for key, (_, version) in stored.items() if version == 0]


async def _write_in_bulk(
    contacts: ContactRepository,
    stored: Mapping[str, tuple[Contact | None, int]],
    new: Sequence[Contact],
    change: Callable[[Contact, int], Saving | None],
) -> dict[str, tuple[Contact | None, int] | None]:
    """Insert `new` (contacts `stored` says the profile never held) in one bulk write, and
    write the changes `change` makes to the live contacts among `stored` (None: nothing to
    write) in another. The keys left to apply one by one, each with what to start from: its
    read for a contact deleted before, None (read again) for one written meanwhile."""
    refused = [contact.key for contact in await contacts.add_many(new)]
    savings = [
        saving
        for live, version in stored.values()
        if live is not None and (saving := change(live, version)) is not None
    ]
    stale = {contact.key for contact in await contacts.save_many(savings)}
    left = {
        key: None if key in stale else read
        for key, read in stored.items()
        if key in stale or (read[0] is None and read[1] > 0)
    }
    return left | dict.fromkeys(refused)


def _merge(changes: Iterable[tuple[str, _Change]]) -> dict[str, _Change]:
    """One change per contact key from (key, change) in order, keys in first-seen order:
    later values win, field by field, and a later status, as applying the changes in turn
    would leave it."""
    merged: dict[str, _Change] = {}
    for key, change in changes:
        earlier = merged.get(key)
        if earlier is not None:
            change = _Change(
                {**earlier.values, **change.values},
                change.source,
                change.status or earlier.status,
                change.status_reason if change.status else earlier.status_reason,
            )
        merged[key] = change
    return merged


# Rows applied: (sequence, line, outcome) in the order applied, per import.
ImportOutcomes = dict[str, list[tuple[int, int, RowOutcome]]]


async def apply_import_rows(
    rows: Sequence[ImportContact], *, schemas: SchemaStore, contacts: ContactRepository
) -> ImportOutcomes:
    """Apply a batch of import rows, in order per contact (ADR 10): contacts the profile
    never held go in with one bulk insert, the others are read at once and written one by
    one, each conditional on the version read. Applying the batch again changes nothing and
    reports the same outcomes."""
    outcomes: ImportOutcomes = {}
    by_profile: dict[str, list[ImportContact]] = {}
    for row in rows:
        by_profile.setdefault(row.profile_id, []).append(row)
    for profile_id, group in by_profile.items():
        schema = await schemas.get(profile_id)
        account = schema.account_id if schema else None  # rows of another account: not here
        by_key: dict[str, list[ImportContact]] = {}
        for row in group:
            if row.account_id == account:
                by_key.setdefault(row.key, []).append(row)
        applied = await _import_into(schema, by_key, contacts) if schema and by_key else {}
        taken = dict.fromkeys(applied, 0)  # each key's outcomes are in its rows' order
        for row in group:
            if row.account_id == account:
                outcome = applied[row.key][taken[row.key]]
                taken[row.key] += 1
            else:
                outcome = RowOutcome.PROFILE_GONE
            outcomes.setdefault(row.import_id, []).append((row.sequence, row.line, outcome))
    return outcomes


async def _import_into(
    schema: ProfileSchema, by_key: Mapping[str, list[ImportContact]], contacts: ContactRepository
) -> dict[str, list[RowOutcome]]:
    """Each key's rows applied: their outcomes, in order. The contacts are read at once, then
    written as `_apply_changes` does."""
    stored = await contacts.find_many(schema.profile_id, list(by_key))
    fresh = _never_held(stored)
    suppressions = await contacts.suppressions_of(schema.account_id, fresh)
    now = bson_now()

    def arriving(version: int) -> Callable[[ImportContact], Contact]:
        def new_contact(row: ImportContact) -> Contact:
            suppression = suppressions.get(row.key)
            return _arriving(
                schema, row.key, row.values, row.source, suppression, None, now, version=version
            )

        return new_contact

    outcomes: dict[str, list[RowOutcome]] = {}
    new: list[Contact] = []
    for key in fresh:
        contact, outcomes[key], _ = import_rows(
            None, by_key[key], schema=schema, new_contact=arriving(1), now=now
        )
        if contact is not None:  # else nothing to create (an unsubscribe): outcomes told
            new.append(contact)

    def imported(live: Contact, version: int) -> Saving | None:
        contact, outcomes[live.key], write = import_rows(
            live, by_key[live.key], schema=schema, new_contact=arriving(version + 1), now=now
        )
        return Saving(contact, version, unevented=True) if write and contact else None

    for key, read in (await _write_in_bulk(contacts, stored, new, imported)).items():
        outcomes[key] = await _import_one(schema, by_key[key], contacts, read, arriving)
    return outcomes


async def _import_one(
    schema: ProfileSchema,
    rows: list[ImportContact],
    contacts: ContactRepository,
    read: tuple[Contact | None, int] | None,
    arriving: Callable[[int], Callable[[ImportContact], Contact]],
) -> list[RowOutcome]:
    async def change() -> list[RowOutcome]:
        nonlocal read
        live, stored_version = read or await contacts.find(schema.profile_id, rows[0].key)
        read = None  # a retry reads again
        contact, outcomes, write = import_rows(
            live, rows, schema=schema, new_contact=arriving(stored_version + 1), now=bson_now()
        )
        if write and contact is not None:
            if live is None:
                await contacts.add(contact, stored_version=stored_version)
            else:
                await contacts.save(contact, expected_version=stored_version, unevented=True)
        return outcomes

    return await retry_if_stale(change)


async def purge_for_import(
    command: PurgeForImport, *, schemas: SchemaStore, contacts: ContactRepository
) -> int:
    """Delete, with their events, the profile's contacts that no row of the overwrite wrote;
    the number this purge has deleted in all its runs, so a redelivery reports the same."""
    schema = await schemas.get(command.profile_id)
    if schema is None or schema.account_id != command.account_id:
        return 0
    after: PagePosition | None = None
    while page := await contacts.find_page(
        command.profile_id,
        status=None,
        key_prefix=None,
        field_equals=None,
        after=after,
        limit=DELETION_BATCH,
    ):
        for contact in page:
            await _purge_one(command, contact, contacts)
        after = PagePosition(page[-1].key)
    return await contacts.count_deleted_by(command.profile_id, command.source)


async def _purge_one(command: PurgeForImport, read: Contact, contacts: ContactRepository) -> None:
    first: Contact | None = read

    async def change() -> None:
        nonlocal first
        live = first or (await contacts.find(command.profile_id, read.key))[0]
        first = None  # a retry reads again
        if live is None or (live.imported and live.imported.import_id == command.import_id):
            return  # gone meanwhile, or written by the import's rows: kept
        expected = live.version
        live.delete(source=command.source, now=bson_now())
        await contacts.save(live, expected_version=expected)

    await retry_if_stale(change)


async def apply_deletes(
    commands: Sequence[DeleteContact], *, schemas: SchemaStore, contacts: ContactRepository
) -> None:
    """Delete the contacts named, in order, each with its event; an erasure also wipes what
    a deletion before it left. A contact the profile does not hold, or a profile gone, is
    left as it is; so is a contact already deleted (erased) when the command comes again."""
    for command in commands:
        schema = await schemas.get(command.profile_id)
        if schema is not None and schema.account_id == command.account_id:
            await retry_if_stale(partial(_delete_one, command, contacts))


async def _delete_one(command: DeleteContact, contacts: ContactRepository) -> None:
    stored = await contacts.find_even_deleted(command.profile_id, command.key)
    if stored is None or (stored.deleted and (stored.erased or not command.erase)):
        return
    was_deleted, expected = stored.deleted, stored.version
    stored.delete(source=command.source, now=bson_now(), erase=command.erase)
    await contacts.save(stored, expected_version=expected, deleted_before=was_deleted)


# -- the account-wide suppression list -----------------------------------------------------------


async def enforce_suppressions(
    events: Sequence[DomainEvent],
    *,
    profiles_of: Callable[[str], Awaitable[list[str]]],
    contacts: ContactRepository,
) -> int:
    """Bring under the suppression list the contacts that a batch of contact events shows may
    have escaped it (ADR 15); how many were suppressed. An active contact whose email or phone
    is suppressed arrived while the suppression was being written (its arrival read the list
    a moment before); a new suppression reaches the same email or phone in every other profile
    of the account. Either way the contact takes the suppressing status, `status_source`
    suppression, through a versioned write with its own event. The list is read before and
    after the contacts: before, to skip the (usual) batch with nothing suppressed; after, so a
    re-activation (which lifts the list before it writes the contact) is never undone."""
    suspects: dict[str, dict[str, set[str]]] = {}  # account -> profile -> keys
    suppressed: dict[str, set[str]] = {}  # account -> keys suppressed by this batch
    for event in events:
        told = suppression_told(event)
        if isinstance(told, Suppression):
            suppressed.setdefault(told.account_id, set()).add(told.key)
        elif isinstance(event, ContactEvent) and event.contact.status is ContactStatus.ACTIVE:
            contact = event.contact
            by_profile = suspects.setdefault(contact.account_id, {})
            by_profile.setdefault(contact.profile_id, set()).add(contact.key)
    enforced = 0
    for account_id in suspects.keys() | suppressed.keys():
        by_profile = suspects.get(account_id, {})
        keys = set().union(suppressed.get(account_id, set()), *by_profile.values())
        in_force = await contacts.suppressions_of(account_id, sorted(keys))
        if not in_force:
            continue
        targets = {p: held & in_force.keys() for p, held in by_profile.items()}
        if reached := suppressed.get(account_id, set()) & in_force.keys():
            for profile_id in await profiles_of(account_id):
                targets[profile_id] = targets.get(profile_id, set()) | reached
        for profile_id, profile_keys in targets.items():
            enforced += await _suppress_active(account_id, profile_id, profile_keys, contacts)
    return enforced


async def _suppress_active(
    account_id: str, profile_id: str, keys: set[str], contacts: ContactRepository
) -> int:
    """Give the profile's active contacts among `keys` the status their suppression says."""
    if not keys:
        return 0
    stored = await contacts.find_many(profile_id, sorted(keys))
    active = [k for k, (live, _) in stored.items() if live and live.status is ContactStatus.ACTIVE]
    if not active:
        return 0
    suppressions = await contacts.suppressions_of(account_id, active)
    suppressed = 0
    for key in active:
        if suppression := suppressions.get(key):
            suppressed += await _suppress_one(suppression, profile_id, stored[key], contacts)
    return suppressed


async def _suppress_one(
    suppression: Suppression,
    profile_id: str,
    read: tuple[Contact | None, int],
    contacts: ContactRepository,
) -> bool:
    """Suppress one contact, read (as `read`) while active, then found suppressed; a write
    raced by another reads the contact, then the list, again."""
    first: tuple[Contact | None, int] | None = read
    key, account_id = suppression.key, suppression.account_id

    async def change() -> bool:
        nonlocal first
        live, version = first or await contacts.find(profile_id, key)
        in_force: Suppression | None = suppression
        if first is None:
            in_force = (await contacts.suppressions_of(account_id, [key])).get(key)
        first = None
        if live is None or live.status is not ContactStatus.ACTIVE or in_force is None:
            return False
        live.change_status(
            in_force.status, reason=in_force.reason(), source=SUPPRESSION_SOURCE, now=bson_now()
        )
        await contacts.save(live, expected_version=version)
        return True

    return await retry_if_stale(change)


# -- reactions to profile changes ----------------------------------------------------------------

DELETION_BATCH = 500


async def delete_profile_contacts(
    *, profile_id: str, source: str, contacts: ContactRepository
) -> int:
    """Delete every contact of a deleted profile, each with its ContactDeleted event, in
    bounded batches; running it again (a redelivered event) finds nothing left to do."""
    deleted = 0
    while page := await contacts.find_page(
        profile_id,
        status=None,
        key_prefix=None,
        field_equals=None,
        after=None,
        limit=DELETION_BATCH,
    ):
        for contact in page:
            expected = contact.version
            contact.delete(source=source, now=bson_now())
            try:
                await contacts.save(contact, expected_version=expected)
                deleted += 1
            except StaleDocument:
                continue  # changed meanwhile: the next page reads it again
    return deleted


# -- export and statistics -----------------------------------------------------------------------

EXPORT_PAGE = 1000


async def export_csv(
    *, account_id: str, profile_id: str, schemas: SchemaStore, contacts: ContactRepository
) -> AsyncIterator[str]:
    """The profile's contacts as CSV, one page at a time: headers are the field names (as an
    import expects them), then status and times. Memory stays bounded by the page size."""
    schema = await writable_schema(schemas, account_id, profile_id)
    columns = [spec.name for spec in schema.fields] + list(EXPORT_TRAILING_COLUMNS)

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        after = None
        while True:
            page = await contacts.find_page(
                profile_id,
                status=None,
                key_prefix=None,
                field_equals=None,
                after=after,
                limit=EXPORT_PAGE,
            )
            for contact in page:
                writer.writerow(
                    [csv_cell(contact.fields.get(spec.key)) for spec in schema.fields]
                    + [
                        contact.status.value,
                        contact.created_at.isoformat(),
                        contact.updated_at.isoformat(),
                    ]
                )
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(page) < EXPORT_PAGE:
                return
            after = PagePosition(page[-1].key)

    return rows()


async def profile_stats(
    *, account_id: str, profile_id: str, schemas: SchemaStore, stats: StatsStore
) -> ProfileStats:
    """The profile's statistics as counted from its contact events so far (see stats.py)."""
    await writable_schema(schemas, account_id, profile_id)
    return summarize(await stats.of_profile(profile_id), today=bson_now().date())
