"""HTTP routes of log-svc: translate requests into reads of the log, nothing more."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from contacts_shared.events import ImportSnapshot
from contacts_shared.web import AccountId, Problem
from log_svc.repository import AuditTrail, ImportLog, RefusedRows

router = APIRouter(prefix="/v1/logs", tags=["logs"])
STATUSES = (
    "queued",
    "validating",
    "running",
    "completed",
    "completed_with_errors",
    "failed",
    "cancelled",
)


class ImportLogOut(ImportSnapshot):
    rows_per_second: float | None

    @classmethod
    def of(cls, snapshot: ImportSnapshot) -> ImportLogOut:
        end, start = snapshot.finished_at, snapshot.started_at
        seconds = (end - start).total_seconds() if end and start else 0
        applied = snapshot.counts.get("applied", 0)
        rate = round(applied / seconds, 1) if seconds > 0 else None
        return cls.model_validate({**snapshot.model_dump(), "rows_per_second": rate})


class ImportLogPage(BaseModel):
    items: list[ImportLogOut]
    next_cursor: str | None


def _cursor(snapshot: ImportSnapshot) -> str:
    raw = json.dumps([snapshot.created_at.isoformat(), snapshot.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _position(token: str) -> tuple[datetime, str]:
    try:
        created, import_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return datetime.fromisoformat(created), str(import_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Problem(422, "Invalid cursor", "cursor: use next_cursor as given") from exc


def _log(request: Request) -> ImportLog:
    log: ImportLog = request.app.state.import_log
    return log


@router.get("/imports")
async def list_imports(
    account_id: AccountId,
    request: Request,
    profile_id: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[list[str] | None, Query(description="one or more statuses")] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ImportLogPage:
    """The account's imports, newest first, with their status and counts."""
    unknown = sorted(set(status or ()) - set(STATUSES))
    if unknown:
        raise Problem(
            422, "Invalid filter", f"status: {', '.join(unknown)} is not one of {STATUSES}"
        )
    items = await _log(request).page(
        account_id,
        profile_id=profile_id,
        statuses=status or (),
        since=since,
        until=until,
        before=_position(cursor) if cursor else None,
        limit=limit + 1,
    )
    more = len(items) > limit
    items = items[:limit]
    return ImportLogPage(
        items=[ImportLogOut.of(item) for item in items],
        next_cursor=_cursor(items[-1]) if more else None,
    )


async def _logged(request: Request, account_id: str, import_id: str) -> ImportSnapshot:
    snapshot = await _log(request).get(import_id)
    if snapshot is None or snapshot.account_id != account_id:
        raise Problem(404, "Not Found", f"import {import_id} is not in the log")
    return snapshot


@router.get("/imports/{import_id}")
async def get_import(import_id: str, account_id: AccountId, request: Request) -> ImportLogOut:
    """One import's log: status, counts, reference, file, times, rows/s."""
    return ImportLogOut.of(await _logged(request, account_id, import_id))


@router.get(
    "/imports/{import_id}/refused",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def refused_rows(import_id: str, account_id: AccountId, request: Request) -> Any:
    """The import's refused rows as CSV, streamed in line order: line, reasons, then the row's
    own columns as uploaded, so they can be fixed and imported again."""
    snapshot = await _logged(request, account_id, import_id)
    rows: RefusedRows = request.app.state.refused_rows

    async def lines() -> AsyncIterator[str]:
        yield _csv_line(["line", "problems", *snapshot.header])
        async for row in rows.of_import(import_id):
            reasons = "; ".join(
                f"{p['column']} '{p.get('value', '')}': {p['reason']}" for p in row.problems
            )
            yield _csv_line([str(row.line), reasons, *row.values])

    return StreamingResponse(lines(), media_type="text/csv")


def _csv_line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue()


class AuditEntry(BaseModel):
    version: int
    at: datetime
    change: str = Field(description="created, updated, status_changed or deleted")
    source: str | None = Field(description="api, webhook:<source>, import:<id>, ...")
    status: str
    fields: list[str] = Field(default_factory=list, description="the field keys it changed")
    previous_status: str | None = None
    status_reason: str | None = None
    import_id: str | None = None
    line: int | None = None


class AuditTrailPage(BaseModel):
    items: list[AuditEntry]
    next_after_version: int | None


@router.get("/contacts/{profile_id}/{key}")
async def contact_trail(
    profile_id: str,
    key: str,
    account_id: AccountId,
    request: Request,
    after_version: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditTrailPage:
    """What changed a contact, oldest first: when, how, and by which source."""
    trail: AuditTrail = request.app.state.audit_trail
    contact_id = f"{profile_id}:{key.strip().lower()}"
    entries = await trail.of_contact(contact_id, after_version, limit + 1)
    if entries and entries[0]["account_id"] != account_id:
        entries = []  # another account's contact: as if unknown
    more = len(entries) > limit
    items = [AuditEntry.model_validate(e) for e in entries[:limit]]
    return AuditTrailPage(items=items, next_after_version=items[-1].version if more else None)
