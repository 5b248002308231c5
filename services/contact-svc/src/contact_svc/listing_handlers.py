"""Use cases that read a profile's contacts page by page: the listing with its filters, and
the CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from contact_svc.contact_handlers import writable_schema
from contact_svc.domain import Contact, ContactOrder, PagePosition, parse_cursor
from contact_svc.listing_repository import ContactPages
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.schema import ContactStatus
from contacts_shared.values import EXPORT_TRAILING_COLUMNS, FieldProblem, ValuesInvalid, csv_cell


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
    contacts: ContactPages,
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
