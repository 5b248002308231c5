"""HTTP routes of contact-svc: translate requests into handler calls, nothing more."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from contact_svc import batch_handlers, contact_handlers, listing_handlers, stats_handlers
from contact_svc.contact_repository import ContactRepository
from contact_svc.domain import API_SOURCE, Contact, ContactOrder
from contact_svc.listing_handlers import ContactFilter
from contact_svc.settings import ContactSettings
from contact_svc.stats import ProfileStats
from contacts_shared.journal import JournalRound
from contacts_shared.outbox import OutboxRelay, QueuedDocuments
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.schema import ContactStatus
from contacts_shared.web import AccountId, ProfileIds

router = APIRouter(prefix="/v1/profiles/{profile_id}/contacts", tags=["contacts"])


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
        return cls(
            key=contact.key,
            fields={  # in the profile's field order
                spec.name: contact.fields[spec.key]
                for spec in schema.fields
                if spec.key in contact.fields
            },
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


async def stats_of(profile_id: str, account_id: str, request: Request) -> ProfileStats:
    return await stats_handlers.profile_stats(
        account_id=account_id,
        profile_id=profile_id,
        schemas=request.app.state.schemas,
        stats=request.app.state.stats,
    )


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
    schema, contact = await contact_handlers.create_contact(
        account_id=account_id,
        profile_id=profile_id,
        fields=body.fields,
        status=body.status,
        source=API_SOURCE,
        **ports(request),
    )
    response.headers["location"] = f"/v1/profiles/{profile_id}/contacts/{contact.key}"
    return ContactOut.of(schema, contact)


# Filters shared by the listing and its count.
KeyPrefix = Annotated[str | None, Query(max_length=320, description="key prefix")]
FieldName = Annotated[str | None, Query(max_length=100, description="a field's name")]
FieldValue = Annotated[str | None, Query(max_length=2000, description="what it equals")]
ValuePrefix = Annotated[
    str | None,
    Query(
        max_length=200,
        description="what the field's value starts with, ignoring case and accents (`vina` "
        "finds `Viña del Mar`): text, email and phone fields, up to 64 characters once folded",
    ),
]
# The sources a contact's last change may have.
SOURCE_PATTERN = r"^(api|import:\S+|webhook:\S+|bulk:\S+)$"
SourceFilter = Annotated[
    str | None,
    Query(
        max_length=320,
        pattern=SOURCE_PATTERN,
        description="the source of the contact's LAST change: `api`, `import:<import id>`, "
        "`webhook:<webhook source id>` or `bulk:<bulk action id>`. A contact keeps only its "
        "latest source: one imported and then edited through the API is listed under `api`, "
        "not under its import.",
    ),
]


def contact_filter(
    status: ContactStatus | None = None,
    key_prefix: KeyPrefix = None,
    field: FieldName = None,
    value: FieldValue = None,
    source: SourceFilter = None,
    value_prefix: ValuePrefix = None,
) -> ContactFilter:
    """The filters a listing and its count take, from the query."""
    return ContactFilter(status, key_prefix, field, value, source, value_prefix)


Selected = Annotated[ContactFilter, Depends(contact_filter)]
Sort = Annotated[
    str,
    Query(
        min_length=1,
        max_length=101,
        description="`key` (the default), `created_at` (oldest first), `-created_at` (newest "
        "first), or a field's name (`Ciudad`; `-Ciudad`: descending). By a field: numbers and "
        "dates in their order, text ignoring case and accents (by its first 64 characters), "
        "ties by key; the contacts without a value for the field come last, in key order. "
        "An unknown field: 422.",
    ),
]


@router.get("")
async def list_contacts(
    profile_id: str,
    account_id: AccountId,
    request: Request,
    selected: Selected,
    sort: Sort = ContactOrder.KEY.value,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ContactPage:
    """A profile's contacts by key, creation time or a field's value, filtered by status, key
    prefix, one field's value or value prefix and the source of the last change, in any
    combination; `:count` counts the same filters."""
    listing = await listing_handlers.list_contacts(
        account_id=account_id,
        profile_id=profile_id,
        selected=selected,
        cursor=cursor,
        sort=sort,
        limit=limit,
        **ports(request),
    )
    items = [ContactOut.of(listing.schema, c) for c in listing.contacts]
    return ContactPage(items=items, next_cursor=listing.next_cursor)


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
    outcome: contact_handlers.Outcome
    key: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)


def item_out(result: batch_handlers.ItemResult) -> ItemOut:
    errors = [{"field": p.field, "message": p.message} for p in result.errors]
    return ItemOut(index=result.index, outcome=result.outcome, key=result.key, errors=errors)


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
    result, with the fields of a rejected one named. Items naming the same contact are one
    change (later values win) and report its outcome. New contacts go in one bulk insert.
    Answers once the batch's events are on Kafka: a client sending batches flat out is held to
    the rate they can be published, instead of leaving them to queue behind it."""
    queued, journaled = QueuedDocuments(), JournalRound()
    contacts = request.app.state.contacts.queueing_to(queued, journaled)
    results = await batch_handlers.upsert_batch(
        account_id=account_id,
        profile_id=profile_id,
        items=body.contacts,
        source=API_SOURCE,
        **(ports(request) | {"contacts": contacts}),
    )
    relay: OutboxRelay = request.app.state.relay
    await relay.publish_now(queued, journaled)
    counts = Counter(result.outcome for result in results)
    return BatchOut(
        created=counts[contact_handlers.Outcome.CREATED],
        updated=counts[contact_handlers.Outcome.UPDATED],
        unchanged=counts[contact_handlers.Outcome.UNCHANGED],
        rejected=counts[contact_handlers.Outcome.REJECTED],
        items=[item_out(result) for result in results],
    )


class ContactCount(BaseModel):
    count: int
    exact: bool = Field(
        description="false: an estimate from the profile's sample (one contact in 256), to two "
        "significant digits; its error is about 1/sqrt(count/256): 7% at 50,000"
    )
    status: ContactStatus | None


@router.get(":count")
async def count_contacts(
    profile_id: str,
    account_id: AccountId,
    request: Request,
    selected: Selected,
    exact: Annotated[
        bool, Query(description="count exactly however many match (reads every match)")
    ] = False,
) -> ContactCount:
    """How many contacts the listing gives with the same filters, in tens of milliseconds
    however large the profile. None or a status alone: read from the statistics (see
    `/stats`), a moment behind the writes. Another filter: counted exactly up to about 5,000
    matches; more are estimated from the profile's sample (`exact` false) unless `exact=true`."""
    counted = await listing_handlers.count_listed(
        account_id=account_id,
        profile_id=profile_id,
        selected=selected,
        exact=exact,
        stats=request.app.state.stats,
        **ports(request),
    )
    return ContactCount(count=counted.count, exact=counted.exact, status=selected.status)


@router.get(":export", response_class=StreamingResponse)
async def export_contacts(
    profile_id: str, account_id: AccountId, request: Request
) -> StreamingResponse:
    """The profile's contacts as CSV, streamed; its header row matches the profile's fields."""
    rows = await listing_handlers.export_csv(
        account_id=account_id,
        profile_id=profile_id,
        schemas=request.app.state.schemas,
        contacts=request.app.state.contacts,
    )
    filename = f"contacts-{profile_id}.csv"
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/{key}")
async def get_contact(
    profile_id: str, key: str, account_id: AccountId, request: Request
) -> ContactOut:
    """One contact, by email (regular profiles) or phone (mobile-only)."""
    schema, contact = await contact_handlers.get_contact(
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
    schema, contact, created = await contact_handlers.put_contact(
        account_id=account_id,
        profile_id=profile_id,
        key=key,
        fields=body.fields,
        status=body.status,
        source=API_SOURCE,
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
    schema, contact = await contact_handlers.patch_contact(
        account_id=account_id,
        profile_id=profile_id,
        key=key,
        fields=body.fields,
        status=body.status,
        status_reason=body.status_reason,
        source=API_SOURCE,
        **ports(request),
    )
    return ContactOut.of(schema, contact)


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_contact(
    profile_id: str, key: str, account_id: AccountId, request: Request
) -> None:
    """Remove a contact from the profile."""
    await contact_handlers.delete_contact(
        account_id=account_id, profile_id=profile_id, key=key, source=API_SOURCE, **ports(request)
    )


class DayCountOut(BaseModel):
    day: date
    count: int


class StatsOut(BaseModel):
    total: int
    by_status: dict[str, int]
    added_last_7_days: int
    added_last_30_days: int
    added_by_day: list[DayCountOut] = Field(
        description="contacts added each UTC day of the last 30, oldest first, zeros included"
    )
    last_change_at: datetime | None


stats_router = APIRouter(tags=["contacts"])


@stats_router.get("/v1/profiles/{profile_id}/stats")
async def profile_stats(profile_id: str, account_id: AccountId, request: Request) -> StatsOut:
    """Contacts of the profile: total, per status, added in the last 7 and 30 days (UTC days,
    today included) and on each of those 30 days, and the time of the last change. Counted
    from the contact events as they are published, so a change shows here a moment after its
    write is answered."""
    return StatsOut(**asdict(await stats_of(profile_id, account_id, request)))


class StatsBatch(BaseModel):
    stats: dict[str, StatsOut] = Field(
        description="by profile id, in the order asked; ids unknown, deleted, virtual or of "
        "another account are left out"
    )


@stats_router.get("/v1/stats")
async def profiles_stats(
    account_id: AccountId,
    request: Request,
    profile_id: ProfileIds,
) -> StatsBatch:
    """The statistics of a page of profiles, each as `/v1/profiles/{id}/stats` answers it, in
    one call and a fixed number of queries. A profile created a moment ago that contact-svc
    has not heard of yet is left out too (it holds no contacts yet)."""
    found = await stats_handlers.profiles_stats(
        account_id=account_id,
        profile_ids=profile_id,
        profiles_of=request.app.state.profiles_of,
        stats=request.app.state.stats,
    )
    return StatsBatch(stats={p: StatsOut(**asdict(s)) for p, s in found.items()})
