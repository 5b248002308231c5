"""HTTP routes of contact-svc: translate requests into handler calls, nothing more."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from contact_svc import handlers
from contact_svc.domain import Contact, ProfileSchema
from contact_svc.repository import ContactRepository, SchemaStore
from contact_svc.settings import ContactSettings
from contacts_shared.schema import ContactStatus
from contacts_shared.web import AccountId

router = APIRouter(prefix="/v1/profiles/{profile_id}/contacts", tags=["contacts"])
SOURCE = "api"


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any] = Field(
        description="values by field name, as in CSV headers; includes the identity on POST",
        max_length=500,
    )
    status: ContactStatus | None = None


class ContactPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any] = Field(default_factory=dict, max_length=500)
    status: ContactStatus | None = None
    status_reason: str | None = Field(default=None, max_length=500)


class ContactOut(BaseModel):
    key: str
    fields: dict[str, Any] = Field(description="values by field name")
    status: ContactStatus
    status_reason: str | None
    status_source: str
    status_changed_at: datetime
    source: str
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, schema: ProfileSchema, contact: Contact) -> ContactOut:
        names = schema.names_by_key()
        return cls(
            key=contact.key,
            fields={names.get(key, key): value for key, value in contact.fields.items()},
            status=contact.status,
            status_reason=contact.status_reason,
            status_source=contact.status_source,
            status_changed_at=contact.status_changed_at,
            source=contact.source,
            version=contact.version,
            created_at=contact.created_at,
            updated_at=contact.updated_at,
        )


class ContactPage(BaseModel):
    items: list[ContactOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


def ports(request: Request) -> dict[str, Any]:
    settings: ContactSettings = request.app.state.settings
    schemas: SchemaStore = request.app.state.schemas
    contacts: ContactRepository = request.app.state.contacts
    return {"schemas": schemas, "contacts": contacts, "region": settings.default_phone_region}


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_contact(
    profile_id: str, body: ContactIn, account_id: AccountId, request: Request, response: Response
) -> ContactOut:
    """Add a contact (409 if the profile already has it)."""
    schema, contact = await handlers.create_contact(
        account_id=account_id,
        profile_id=profile_id,
        fields=body.fields,
        status=body.status,
        source=SOURCE,
        **ports(request),
    )
    response.headers["location"] = f"/v1/profiles/{profile_id}/contacts/{contact.key}"
    return ContactOut.of(schema, contact)


@router.get("")
async def list_contacts(
    profile_id: str,
    account_id: AccountId,
    request: Request,
    status: ContactStatus | None = None,
    key_prefix: Annotated[str | None, Query(max_length=320, description="key prefix")] = None,
    field: Annotated[str | None, Query(max_length=100, description="a field's name")] = None,
    value: Annotated[str | None, Query(max_length=2000, description="what it equals")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ContactPage:
    """A profile's contacts by key, filtered by status, key prefix or one field's value."""
    schema, found = await handlers.list_contacts(
        account_id=account_id,
        profile_id=profile_id,
        status=status,
        key_prefix=key_prefix,
        field=field,
        value=value,
        after_key=cursor,
        limit=limit + 1,
        **ports(request),
    )
    page = found[:limit]
    next_cursor = page[-1].key if len(found) > limit else None
    return ContactPage(items=[ContactOut.of(schema, c) for c in page], next_cursor=next_cursor)


MAX_BATCH = 1000


class ContactBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="each: values by field name, with the identity (email or phone)",
    )


class ItemOut(BaseModel):
    index: int
    outcome: handlers.Outcome
    key: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)


class BatchOut(BaseModel):
    created: int
    updated: int
    unchanged: int
    rejected: int
    items: list[ItemOut]


@router.post(":batch")
async def upsert_batch(
    profile_id: str, body: ContactBatch, account_id: AccountId, request: Request
) -> BatchOut:
    """Create or update up to 1,000 contacts (only the given fields change); each item's
    result, with the fields of a rejected one named."""
    results = await handlers.upsert_batch(
        account_id=account_id,
        profile_id=profile_id,
        items=body.contacts,
        source=SOURCE,
        **ports(request),
    )
    counts = dict.fromkeys(handlers.Outcome, 0)
    for result in results:
        counts[result.outcome] += 1
    return BatchOut(
        **{outcome.value: count for outcome, count in counts.items()},
        items=[
            ItemOut(
                index=r.index,
                outcome=r.outcome,
                key=r.key,
                errors=[{"field": p.field, "message": p.message} for p in r.errors],
            )
            for r in results
        ],
    )


@router.get("/{key}")
async def get_contact(
    profile_id: str, key: str, account_id: AccountId, request: Request
) -> ContactOut:
    """One contact, by email (regular profiles) or phone (mobile-only)."""
    schema, contact = await handlers.get_contact(
        account_id=account_id, profile_id=profile_id, key=key, **ports(request)
    )
    return ContactOut.of(schema, contact)


@router.put("/{key}")
async def put_contact(
    profile_id: str,
    key: str,
    body: ContactIn,
    account_id: AccountId,
    request: Request,
    response: Response,
) -> ContactOut:
    """Create the contact or replace all its values."""
    schema, contact, created = await handlers.put_contact(
        account_id=account_id,
        profile_id=profile_id,
        key=key,
        fields=body.fields,
        status=body.status,
        source=SOURCE,
        **ports(request),
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return ContactOut.of(schema, contact)


@router.patch("/{key}")
async def patch_contact(
    profile_id: str, key: str, body: ContactPatch, account_id: AccountId, request: Request
) -> ContactOut:
    """Change only the given values, and the status if given."""
    schema, contact = await handlers.patch_contact(
        account_id=account_id,
        profile_id=profile_id,
        key=key,
        fields=body.fields,
        status=body.status,
        status_reason=body.status_reason,
        source=SOURCE,
        **ports(request),
    )
    return ContactOut.of(schema, contact)


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_contact(
    profile_id: str, key: str, account_id: AccountId, request: Request
) -> None:
    """Remove a contact from the profile."""
    await handlers.delete_contact(
        account_id=account_id, profile_id=profile_id, key=key, source=SOURCE, **ports(request)
    )
