"""HTTP routes of bulk actions: a status change or a deletion of many contacts, answered at once
with a job to follow (ADR 18)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from contact_svc import bulk_handlers
from contact_svc.api import SOURCE_PATTERN, ports
from contact_svc.bulk_jobs import MAX_BULK_KEYS, BulkJob, BulkState
from contact_svc.listing_handlers import ContactFilter
from contacts_shared.commands import BulkAction, BulkOutcome
from contacts_shared.schema import ContactStatus
from contacts_shared.web import AccountId

router = APIRouter(tags=["bulk actions"])


class BulkFilterIn(BaseModel):
    """The contacts a listing with the same query parameters selects (`{}`: all of them)."""

    model_config = ConfigDict(extra="forbid")

    status: ContactStatus | None = None
    key_prefix: str | None = Field(default=None, max_length=320)
    field: str | None = Field(default=None, max_length=100, description="a field's name")
    value: str | None = Field(default=None, max_length=2000)
    value_prefix: str | None = Field(default=None, max_length=200)
    source: str | None = Field(default=None, max_length=320, pattern=SOURCE_PATTERN)

    def selected(self) -> ContactFilter:
        return ContactFilter(
            self.status, self.key_prefix, self.field, self.value, self.source, self.value_prefix
        )


class BulkActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: BulkAction
    status: ContactStatus | None = Field(default=None, description="for change_status")
    reason: str | None = Field(default=None, max_length=500, description="for change_status")
    keys: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BULK_KEYS,
        description="the contacts, by email (regular profiles) or phone (mobile-only); keys "
        "the profile does not hold are counted as not_found",
    )
    filter: BulkFilterIn | None = Field(
        default=None, description="else every contact the filter selects when it is read"
    )


class BulkActionOut(BaseModel):
    id: str
    profile_id: str
    action: BulkAction
    status: ContactStatus | None
    reason: str | None
    selection: Literal["keys", "filter"]
    filter: BulkFilterIn | None
    state: BulkState
    total: int = Field(description="what the selection held when the action was accepted")
    selected: int = Field(description="contacts sent to be changed so far")
    counts: dict[BulkOutcome, int] = Field(description="outcomes of the contacts applied")
    percent: float
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: BulkJob) -> BulkActionOut:
        chosen = job.filter
        return cls(
            id=job.id,
            profile_id=job.profile_id,
            action=job.action,
            status=job.status,
            reason=job.reason,
            selection="keys" if chosen is None else "filter",
            filter=None
            if chosen is None
            else BulkFilterIn(
                status=chosen.status,
                key_prefix=chosen.key_prefix,
                field=chosen.field,
                value=chosen.value,
                value_prefix=chosen.value_prefix,
                source=chosen.source,
            ),
            state=job.state,
            total=job.total,
            selected=job.selected,
            counts={outcome: job.counts.get(outcome, 0) for outcome in BulkOutcome},
            percent=job.percent,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


@router.post("/v1/profiles/{profile_id}/contacts:bulk", status_code=status.HTTP_202_ACCEPTED)
async def start_bulk_action(
    profile_id: str, body: BulkActionIn, account_id: AccountId, request: Request, response: Response
) -> BulkActionOut:
    """Change the status (with a reason) of, or delete, the contacts named by `keys` or every
    contact `filter` selects, however many: answered at once with the job, done in the
    background through the contacts' command topic, each contact changed once and told by one
    event, even across crashes. Follow it at `Location`."""
    job = await bulk_handlers.accept_bulk_action(
        account_id=account_id,
        profile_id=profile_id,
        action=body.action,
        status=body.status,
        reason=body.reason,
        keys=body.keys,
        selected=body.filter.selected() if body.filter is not None else None,
        stats=request.app.state.stats,
        jobs=request.app.state.bulk_jobs,
        **ports(request),
    )
    request.app.state.bulk_sender.wake.set()
    response.headers["location"] = f"/v1/bulk-actions/{job.id}"
    return BulkActionOut.of(job)


@router.get("/v1/bulk-actions/{job_id}")
async def get_bulk_action(job_id: str, account_id: AccountId, request: Request) -> BulkActionOut:
    """A bulk action: its state, counts so far and percentage."""
    job = await bulk_handlers.owned_job(request.app.state.bulk_jobs, account_id, job_id)
    return BulkActionOut.of(job)


class BulkActionList(BaseModel):
    items: list[BulkActionOut]


@router.get("/v1/profiles/{profile_id}/bulk-actions")
async def list_bulk_actions(
    profile_id: str,
    account_id: AccountId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BulkActionList:
    """The profile's bulk actions, newest first."""
    jobs = await bulk_handlers.profile_jobs(
        account_id=account_id,
        profile_id=profile_id,
        limit=limit,
        schemas=request.app.state.schemas,
        jobs=request.app.state.bulk_jobs,
    )
    return BulkActionList(items=[BulkActionOut.of(job) for job in jobs])
