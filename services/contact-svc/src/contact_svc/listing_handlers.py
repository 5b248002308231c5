"""Use cases that read a profile's contacts page by page: the listing with its filters and
orders, its count, and the CSV export."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from contact_svc.contact_documents import (
    FOLDED_TERM_LENGTH,
    SAMPLE_RATE,
    folded,
    sort_key,
    sortable_text,
)
from contact_svc.contact_handlers import writable_schema
from contact_svc.domain import Contact, ContactOrder, PagePosition, page_cursor, parse_cursor
from contact_svc.listing_repository import ContactPages, FieldOrder, SortedPosition
from contact_svc.stats import summarize
from contact_svc.stats_repository import StatsStore
from contacts_shared.mongo import bson_now
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.sampling import two_significant
from contacts_shared.schema import ContactStatus, FieldType
from contacts_shared.values import EXPORT_TRAILING_COLUMNS, FieldProblem, ValuesInvalid, csv_cell


@dataclass(frozen=True)
class ContactFilter:
    """What a listing and its count select: a status, a key prefix, one field's value (`field`
    = `value`, compared as the field's type) or the start of its text (`field` and
    `value_prefix`, case- and accent-insensitive) and the source of the contact's last change."""

    status: ContactStatus | None = None
    key_prefix: str | None = None
    field: str | None = None
    value: str | None = None
    source: str | None = None
    value_prefix: str | None = None


# The types whose values are searched by prefix: text as people write it.
PREFIX_TYPES = frozenset({FieldType.TEXT, FieldType.EMAIL, FieldType.PHONE})
# What people put between a phone number's digits (stored numbers are E.164: `+56912345678`).
PHONE_PUNCTUATION = re.compile(r"[\s().-]")


@dataclass(frozen=True)
class Selection:
    """A `ContactFilter` as the stored documents answer it."""

    key_prefix: str | None
    field_equals: tuple[str, Any] | None
    value_prefix: tuple[str, str] | None


@dataclass(frozen=True)
class ContactListing:
    """A page of contacts, and the cursor of the next (None: the last page)."""

    schema: ProfileSchema
    contacts: list[Contact]
    next_cursor: str | None


async def list_contacts(
    *,
    account_id: str,
    profile_id: str,
    selected: ContactFilter,
    cursor: str | None,
    sort: str,
    limit: int,
    region: str,
    schemas: SchemaStore,
    contacts: ContactPages,
) -> ContactListing:
    """A page of the contacts `selected`, in the order `sort` names (`listing_order`)."""
    schema = await writable_schema(schemas, account_id, profile_id)
    selection = _selection(schema, selected, region)
    order = listing_order(schema, sort)
    filters = {**_stored_filters(selected, selection), "limit": limit + 1}
    if isinstance(order, FieldOrder):
        after = parse_field_cursor(order, cursor) if cursor else None
        found = await contacts.find_page(profile_id, after=after, by_field=order, **filters)
    else:
        found = await contacts.find_page(
            profile_id,
            after=parse_cursor(order, cursor) if cursor else None,
            order=order,
            since=schema.created_at,
            **filters,
        )
    page = found[:limit]
    next_cursor = None
    if len(found) > limit:
        last = page[-1]
        next_cursor = (
            field_cursor(order, last) if isinstance(order, FieldOrder) else page_cursor(order, last)
        )
    return ContactListing(schema, page, next_cursor)


def listing_order(schema: ProfileSchema, sort: str) -> ContactOrder | FieldOrder:
    """The order `sort` names: `key`, `created_at`, `-created_at`, else a field's name (`-`
    first: descending); 422 naming a field the profile lacks."""
    try:
        return ContactOrder(sort)
    except ValueError:
        pass
    descending = sort.startswith("-")
    name = sort[1:] if descending else sort
    spec = schema.field_named(name)
    if spec is None:
        raise ValuesInvalid(
            [
                FieldProblem(
                    "sort",
                    f"no field '{name}' in this profile: sort by key, created_at, -created_at "
                    "or a field's name (- first for descending)",
                )
            ]
        )
    return FieldOrder(spec.key, descending)


FIELD_CURSOR = "field"


def field_cursor(order: FieldOrder, contact: Contact) -> str:
    """An opaque token for the page after `contact` by a field's value."""
    position = sort_key(contact.profile_id, contact.fields.get(order.field_key), contact.key)
    raw = [FIELD_CURSOR, order.field_key, order.descending, position, contact.key]
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


def parse_field_cursor(order: FieldOrder, token: str) -> SortedPosition:
    """The position a cursor token names; ValuesInvalid if it is not one of this order's."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        kind, field_key, descending, position, key = json.loads(raw)
        if (kind, field_key, descending) != (FIELD_CURSOR, order.field_key, order.descending):
            raise ValueError(kind)
        if not isinstance(key, str) or not isinstance(position, str | None):
            raise TypeError(key)
        return SortedPosition(position, key)
    except (ValueError, TypeError) as exc:
        raise ValuesInvalid(
            [FieldProblem("cursor", "not a cursor of this listing (use next_cursor as given)")]
        ) from exc


async def selected_keys(
    *,
    schema: ProfileSchema,
    selected: ContactFilter,
    after_key: str | None,
    limit: int,
    region: str,
    contacts: ContactPages,
) -> list[str]:
    """The keys of the next contacts `selected` in key order after `after_key`: a bulk
    action's selection, page by page, however large."""
    selection = _selection(schema, selected, region)
    return await contacts.find_keys(
        schema.profile_id, after_key=after_key, limit=limit, **_stored_filters(selected, selection)
    )


@dataclass(frozen=True)
class Counted:
    """A count: `exact`, or estimated from the profile's sample (`estimated`)."""

    count: int
    exact: bool


# A filter the profile's sample matches at most this many times (about 5,000 matches in all,
# counted in tens of milliseconds) is counted exactly; above, estimated.
EXACT_IN_SAMPLE = 20


async def count_listed(
    *,
    account_id: str,
    profile_id: str,
    selected: ContactFilter,
    exact: bool,
    region: str,
    schemas: SchemaStore,
    contacts: ContactPages,
    stats: StatsStore,
) -> Counted:
    """How many contacts `list_contacts` lists with the same filters, at about the same cost
    however many match: none or a status alone from the statistics (a moment behind the
    writes); a filter the profile's sample matches at most EXACT_IN_SAMPLE times
    counted exactly, more estimated from the sample. `exact`: count exactly however many (every
    match is read)."""
    schema = await writable_schema(schemas, account_id, profile_id)
    selection = _selection(schema, selected, region)
    if selection == Selection(None, None, None) and selected.source is None:
        return Counted(await _from_statistics(profile_id, selected.status, stats), exact=True)
    filters = _stored_filters(selected, selection)
    if not exact:
        in_sample = await contacts.count_matching(profile_id, in_sample=True, **filters)
        if in_sample > EXACT_IN_SAMPLE:
            return Counted(estimated(in_sample), exact=False)
    return Counted(await contacts.count_matching(profile_id, **filters), exact=True)


def estimated(in_sample: int) -> int:
    """How many contacts `in_sample` matches of the profile's sample stand for, to two
    significant digits: the sample's error is about one in the square root of its count (22%
    at 20, 7% at 200)."""
    return two_significant(in_sample * SAMPLE_RATE)


async def _from_statistics(profile_id: str, status: ContactStatus | None, stats: StatsStore) -> int:
    counted = summarize(await stats.of_profile(profile_id), today=bson_now().date())
    return counted.total if status is None else counted.by_status.get(status.value, 0)


def _stored_filters(selected: ContactFilter, selection: Selection) -> dict[str, Any]:
    """The filters as `find_page` and `count_matching` take them."""
    return {
        "status": selected.status,
        "key_prefix": selection.key_prefix,
        "field_equals": selection.field_equals,
        "value_prefix": selection.value_prefix,
        "source": selected.source,
    }


def _selection(schema: ProfileSchema, selected: ContactFilter, region: str) -> Selection:
    """The stored (field key, value) that `field` = `value` asks for, compared as the field's
    type, or the (field key, folded prefix) that `field` and `value_prefix` ask for; and the
    key prefix to read (the key itself when `field` = `value` is the identity)."""
    field, value, value_prefix = selected.field, selected.value, selected.value_prefix
    key_prefix = selected.key_prefix.strip().lower() if selected.key_prefix else None
    if value is not None and value_prefix is not None:
        raise ValuesInvalid([FieldProblem("value_prefix", "give value or value_prefix, not both")])
    if (field is None) != (value is None and value_prefix is None):
        raise ValuesInvalid(
            [FieldProblem("field", "give field with value or value_prefix, or none of them")]
        )
    if field is None:
        return Selection(key_prefix, None, None)
    spec = schema.field_named(field)
    if spec is None:
        raise ValuesInvalid([FieldProblem("field", f"no field '{field}' in this profile")])
    if value_prefix is not None:
        return Selection(key_prefix, None, (spec.key, _folded_prefix(spec.type, value_prefix)))
    assert value is not None
    if spec.identity:
        key = schema.identity_key(value, region)
        if key.startswith(key_prefix or ""):
            key_prefix = key  # the key itself: its `_id` range reads one contact
        return Selection(key_prefix, (spec.key, key), None)
    converted = schema.values({spec.name: value}, default_region=region, partial=True)
    return Selection(key_prefix, (spec.key, converted[spec.key]), None)


def _folded_prefix(field_type: FieldType, prefix: str) -> str:
    """The prefix as sort keys hold text (`sortable_text`); refused for numbers, dates and
    booleans, and past the length of text kept there (it could not tell longer values apart)."""
    if field_type not in PREFIX_TYPES:
        raise ValuesInvalid(
            [FieldProblem("value_prefix", f"{field_type.value} fields have no prefix search")]
        )
    if field_type is FieldType.PHONE:
        prefix = PHONE_PUNCTUATION.sub("", prefix)
    wanted = folded(prefix.lstrip())
    if len(wanted) > FOLDED_TERM_LENGTH:
        raise ValuesInvalid(
            [FieldProblem("value_prefix", f"at most {FOLDED_TERM_LENGTH} characters once folded")]
        )
    return sortable_text(wanted)


EXPORT_PAGE = 1000


async def export_csv(
    *, account_id: str, profile_id: str, schemas: SchemaStore, contacts: ContactPages
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
