"""HTTP routes of segment-svc: members of virtual profiles, their statistics, rebuild status,
and previews of rules before they are saved. Reads only segment-svc's own collections."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from contacts_shared.mongo import Document, bson_now
from contacts_shared.rules import RuleGroup, find_rule_problems
from contacts_shared.schema import FieldSpec
from contacts_shared.values import EXPORT_TRAILING_COLUMNS, csv_cell
from contacts_shared.web import AccountId, Problem, ProfileIds
from segment_svc.counts import TOTAL
from segment_svc.evaluate import Segment
from segment_svc.preview import PREVIEW_SAMPLE, preview_rules
from segment_svc.resources import Resources
from segment_svc.settings import SegmentSettings

router = APIRouter(prefix="/v1", tags=["segments"])


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def _segment(request: Request, account_id: str, virtual_id: str) -> Document:
    document = await _resources(request).segments.get(virtual_id)
    if document is None or document["account_id"] != account_id or document.get("deleted"):
        raise Problem(404, "Not Found", f"virtual profile {virtual_id} not found")
    return document


class MemberOut(BaseModel):
    key: str
    since: datetime
    status: str
    fields: dict[str, Any] = Field(
        description="values by field name, in the base profile's field order (as contact-svc "
        "answers them)"
    )


def by_name(fields: Sequence[FieldSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """Stored values (by field key) by field name, in the profile's field order."""
    return {spec.name: values[spec.key] for spec in fields if spec.key in values}


def _key_prefix(
    key_prefix: Annotated[
        str,
        Query(
            max_length=320,
            description="only members whose key (email or E.164 phone) starts with this, "
            "in any case",
        ),
    ] = "",
) -> str:
    """The prefix as keys are stored (normalized: lower case, no surrounding spaces)."""
    return key_prefix.strip().lower()


KeyPrefix = Annotated[str, Depends(_key_prefix)]


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


@router.get("/profiles/{virtual_id}/members")
async def list_members(
    virtual_id: str,
    account_id: AccountId,
    request: Request,
    key_prefix: KeyPrefix,
    cursor: Annotated[str | None, Query(max_length=400, description="next_cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MemberPage:
    """The virtual profile's members in key order, with their values."""
    document = await _segment(request, account_id, virtual_id)
    resources = _resources(request)
    segment = await resources.segments.segment(document)
    page = await resources.members.page(virtual_id, cursor, limit + 1, key_prefix)
    more = len(page) > limit
    page = page[:limit]
    contacts = await resources.projection.load([m["contact_id"] for m in page])
    items = [
        MemberOut(
            key=m["key"],
            since=m["since"],
            status=m["status"],
            fields=by_name(
                segment.base_fields, contacts.get(m["contact_id"], {}).get("fields", {})
            ),
        )
        for m in page
    ]
    return MemberPage(items=items, next_cursor=page[-1]["key"] if more and page else None)


class MemberCount(BaseModel):
    count: int


@router.get("/profiles/{virtual_id}/members:count")
async def count_members(
    virtual_id: str, account_id: AccountId, request: Request, key_prefix: KeyPrefix
) -> MemberCount:
    """Members, folded from the membership events (a moment behind the members list); with
    `key_prefix`, those the members list holds, counted over their key range."""
    await _segment(request, account_id, virtual_id)
    resources = _resources(request)
    if key_prefix:
        return MemberCount(count=await resources.members.count(virtual_id, key_prefix))
    counts = await resources.counts.counts(virtual_id)
    return MemberCount(count=counts[TOTAL])


class SegmentStats(BaseModel):
    total: int
    by_status: dict[str, int]

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> SegmentStats:
        """From `MemberCounts.counts`."""
        return cls(total=counts[TOTAL], by_status={k: n for k, n in counts.items() if k != TOTAL})


@router.get("/profiles/{virtual_id}/stats")
async def segment_stats(virtual_id: str, account_id: AccountId, request: Request) -> SegmentStats:
    """Members in all and per status, as a regular profile's statistics are served: folded
    from the membership events, a moment behind the members list."""
    await _segment(request, account_id, virtual_id)
    return SegmentStats.of(await _resources(request).counts.counts(virtual_id))


class StatsBatch(BaseModel):
    stats: dict[str, SegmentStats] = Field(
        description="by virtual profile id, in the order asked; ids unknown, deleted or of "
        "another account are left out"
    )


@router.get("/stats")
async def stats_batch(
    account_id: AccountId,
    request: Request,
    profile_id: ProfileIds,
) -> StatsBatch:
    """The statistics of a page of virtual profiles, each as `/profiles/{id}/stats` answers
    it, in one call and a fixed number of queries."""
    resources = _resources(request)
    asked = list(dict.fromkeys(profile_id))
    live = await resources.segments.live_of_account(account_id, asked)
    counts = await resources.counts.counts_of([i for i in asked if i in live])
    return StatsBatch(stats={i: SegmentStats.of(c) for i, c in counts.items()})


class Membership(BaseModel):
    key: str
    member: bool
    since: datetime | None


@router.get("/profiles/{virtual_id}/members/{key}")
async def membership(
    virtual_id: str, key: str, account_id: AccountId, request: Request
) -> Membership:
    """Whether the contact is a member, and since when."""
    await _segment(request, account_id, virtual_id)
    member = await _resources(request).members.get(virtual_id, key)
    return Membership(key=key, member=member is not None, since=(member or {}).get("since"))


class ContactSegment(BaseModel):
    id: str
    name: str | None = Field(
        description="None for a virtual profile not renamed since names were kept"
    )
    since: datetime = Field(description="member since")


class ContactSegments(BaseModel):
    profile_id: str
    key: str
    segments: list[ContactSegment]


@router.get("/contacts/{profile_id}/{key}/segments")
async def contact_segments(
    profile_id: str,
    key: Annotated[str, Path(max_length=320, description="the contact's key (email or phone)")],
    account_id: AccountId,
    request: Request,
) -> ContactSegments:
    """The virtual profiles a contact of a regular profile belongs to, by id, in one call:
    from segment-svc's membership projection (a moment behind the contact's writes). 404 if
    segment-svc holds no such live contact in the caller's account."""
    resources = _resources(request)
    key = key.strip().lower()
    held = await resources.projection.memberships(f"{profile_id}:{key}")
    if held is None or held["account_id"] != account_id or held.get("deleted"):
        raise Problem(404, "Not Found", f"contact {key} of profile {profile_id} not found")
    members = held.get("segments") or {}
    names = await resources.segments.names_of(account_id, sorted(members)) if members else {}
    return ContactSegments(
        profile_id=profile_id,
        key=key,
        segments=[
            ContactSegment(id=vid, name=names[vid], since=members[vid]["since"])
            for vid in sorted(names)
        ],
    )


@router.get("/profiles/{virtual_id}/members:export")
async def export_members(
    virtual_id: str, account_id: AccountId, request: Request, key_prefix: KeyPrefix
) -> StreamingResponse:
    """Every member (whose key starts with `key_prefix`) as CSV, streamed, laid out as
    contact-svc exports a profile (the base profile's fields by name, status, created and
    updated times), then since when it is a member."""
    document = await _segment(request, account_id, virtual_id)
    resources = _resources(request)
    segment = await resources.segments.segment(document)

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        fields = segment.base_fields
        writer.writerow([*(spec.name for spec in fields), *EXPORT_TRAILING_COLUMNS, "member_since"])
        yield _flushed(buffer)
        async for page in resources.members.pages(virtual_id, key_prefix):
            contacts = await resources.projection.load([m["contact_id"] for m in page])
            for member in page:
                contact = contacts.get(member["contact_id"], {})
                values = contact.get("fields", {})
                writer.writerow(
                    [
                        *(csv_cell(values.get(spec.key)) for spec in fields),
                        member["status"],
                        *(_iso(contact.get(at)) for at in ("created_at", "updated_at")),
                        member["since"].isoformat(),
                    ]
                )
            yield _flushed(buffer)

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{virtual_id}-members.csv"'},
    )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _flushed(buffer: io.StringIO) -> str:
    """What the CSV writer put in `buffer` since the last call."""
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


class SegmentOut(BaseModel):
    id: str
    base_profile_id: str
    rules_version: int
    missing_fields: list[str] = Field(
        description="fields the rules name that the base profile no longer has: conditions on "
        "them hold for no contact"
    )
    rebuild: dict[str, Any] = Field(description="pending, progress, and the last one's outcome")


@router.get("/segments/{virtual_id}")
async def segment_status(virtual_id: str, account_id: AccountId, request: Request) -> SegmentOut:
    """How segment-svc holds a virtual profile: rebuild progress and problems of its rules."""
    document = await _segment(request, account_id, virtual_id)
    segment = await _resources(request).segments.segment(document)
    rebuild = document.get("rebuild") or {}
    return SegmentOut(
        id=segment.id,
        base_profile_id=segment.base_profile_id,
        rules_version=segment.rules_version,
        missing_fields=segment.missing_fields(),
        rebuild={k: rebuild.get(k) for k in ("pending", "reason", "progress", "last")},
    )


class PreviewIn(BaseModel):
    base_profile_id: str = Field(min_length=1, max_length=100)
    rules: RuleGroup


class PreviewOut(BaseModel):
    count: int = Field(description="contacts the rules admit (an estimate unless `exact`)")
    checked: int = Field(description="contacts checked against the rules")
    exact: bool = Field(
        description="false: a profile larger than segment-svc's preview budget (10,000 by "
        "default), estimated from the contacts of whole sample buckets (a hash of the key: an "
        "unbiased sample), `count` and `contacts` to two significant digits; the error is about "
        "1/sqrt(matches checked): 10% at 100, 3% at 1,000"
    )
    contacts: int = Field(
        description="the live contacts `count` is out of: `checked` when exact, else how many "
        "the buckets checked stand for"
    )
    complete: bool = Field(
        description="false: some contacts were projected before sample buckets were kept and "
        "are in none yet, so the estimate stands for the others only (`contacts`); a rebuild "
        "of a virtual profile over the profile, or the contact's next change, files them"
    )
    sample: list[MemberOut] = Field(description=f"up to {PREVIEW_SAMPLE} matches, in key order")


@router.post("/segments:preview")
async def preview(body: PreviewIn, account_id: AccountId, request: Request) -> PreviewOut:
    """Try rules on a regular profile before saving them: how many contacts match (counted on
    a small profile, estimated on a large one), and 20 of them."""
    resources = _resources(request)
    schema = await resources.schemas.get(body.base_profile_id)
    if schema is None or schema.account_id != account_id:
        raise Problem(404, "Not Found", f"profile {body.base_profile_id} not found")
    problems = find_rule_problems(body.rules, schema.fields)
    if problems:
        raise Problem(
            422,
            "Invalid rules",
            "; ".join(f"{p.path}: {p.message}" for p in problems),
            [{"field": p.path, "message": p.message} for p in problems],
        )
    segment = Segment("preview", account_id, body.base_profile_id, body.rules, 0, schema.fields)
    settings: SegmentSettings = request.app.state.settings
    found = await preview_rules(
        segment,
        projection=resources.projection,
        budget=settings.preview_budget,
        today=bson_now().date(),
    )
    return PreviewOut(
        count=found.count,
        checked=found.tally.checked,
        exact=found.exact,
        contacts=found.contacts,
        complete=found.complete,
        sample=[
            MemberOut(
                key=state.key,
                since=state.view.updated_at,
                status=state.status.value,
                fields=by_name(schema.fields, state.view.fields),
            )
            for state in found.sample
            if state.view is not None
        ],
    )
