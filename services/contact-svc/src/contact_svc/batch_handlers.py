"""Use cases that write many contacts at once: `contacts:batch`, and the command consumer's
webhook upserts and import rows (ADR 10). Each reads its contacts at once, inserts the new
ones in one bulk write and updates the live ones in another; what a bulk write could not
apply goes through the one-contact use cases."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contact_svc.contact_handlers import (
    Outcome,
    arriving_contact,
    change_contact,
    keyed_values,
    upsert_contact,
    writable_schema,
)
from contact_svc.contact_repository import ContactRepository, Saving
from contact_svc.domain import Contact, import_rows
from contacts_shared.commands import ImportContact, RowOutcome, UpsertContact
from contacts_shared.mongo import bson_now, retry_if_stale
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.schema import ContactStatus
from contacts_shared.values import FieldProblem, ValuesInvalid


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
    return keyed_values(schema, fields, None, region, partial=True)


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
        arriving_contact(
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
        outcomes[live.key] = change_contact(
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
            return arriving_contact(
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
