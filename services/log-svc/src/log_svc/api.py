"""HTTP routes of log-svc: translate requests into reads of the log, nothing more."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from contacts_shared.events import ImportSnapshot
from contacts_shared.web import AccountId, Problem
from log_svc.audit import served_entries
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


class RowError(BaseModel):
    field: str = Field(description="the column (or field) at fault; `row` for the whole row")
    value: str = Field(description="what the column held")
    message: str


class RefusedRowOut(BaseModel):
    line: int = Field(description="its line in the file (1: the header)")
    errors: list[RowError]
    row: list[str] = Field(description="its cells as uploaded, in the header's order")


class RefusedRowsPage(BaseModel):
    header: list[str] = Field(description="the file's header, naming the cells of each row")
    items: list[RefusedRowOut]
    next_after_line: int | None = Field(description="give as after_line for the next page")


@router.get(
    "/imports/{import_id}/refused",
    response_class=StreamingResponse,
    responses={
        200: {
            "model": RefusedRowsPage,
            "description": "CSV, or JSON pages with format=json",
            "content": {"text/csv": {}},
        }
    },
)
async def refused_rows(
    import_id: str,
    account_id: AccountId,
    request: Request,
    format: Annotated[
        Literal["csv", "json"], Query(description="csv: the whole file; json: a page")
    ] = "csv",
    after_line: Annotated[int, Query(ge=0, description="json: rows after this line")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="json: rows in a page")] = 100,
) -> Any:
    """The import's refused rows in line order: as CSV, streamed (line, reasons, then the
    row's own columns as uploaded, so they can be fixed and imported again), or as JSON pages
    (line, each field's error, the row) with `format=json`."""
    snapshot = await _logged(request, account_id, import_id)
    rows: RefusedRows = request.app.state.refused_rows
    if format == "json":
        page = await rows.page_of_import(import_id, after_line=after_line, limit=limit + 1)
        items = [
            RefusedRowOut(
                line=row.line,
                errors=[
                    RowError(field=p["column"], value=p.get("value", ""), message=p["reason"])
                    for p in row.problems
                ],
                row=row.values,
            )
            for row in page[:limit]
        ]
        more = len(page) > limit
        return JSONResponse(
            RefusedRowsPage(
                header=snapshot.header,
                items=items,
                next_after_line=items[-1].line if more else None,
            ).model_dump(mode="json")
        )

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


class FieldChange(BaseModel):
    field: str = Field(description="the field's name (its key if deleted since)")
    old: Any = Field(default=None, description="the value before; null if none or not kept")
    new: Any = Field(default=None, description="the value after; null if cleared")


class AuditEntry(BaseModel):
    version: int
    at: datetime
    change: str = Field(description="created, updated, status_changed or deleted")
    source: str | None = Field(description="api, webhook:<source>, import:<id>, ...")
    status: str
    fields: list[str] = Field(default_factory=list, description="the field keys it changed")
    changes: list[FieldChange] = Field(
        default_factory=list, description="each field it changed, by name, old -> new"
    )
    previous_status: str | None = None
    status_reason: str | None = None
    import_id: str | None = None
    line: int | None = None


class AuditTrailPage(BaseModel):
    items: list[AuditEntry]
    next_after_version: int | None = Field(default=None, description="order=oldest's cursor")
    next_before_version: int | None = Field(default=None, description="order=newest's cursor")


@router.get("/contacts/{profile_id}/{key}")
async def contact_trail(
    profile_id: str,
    key: str,
    account_id: AccountId,
    request: Request,
    order: Annotated[Literal["oldest", "newest"], Query()] = "oldest",
    after_version: Annotated[int, Query(ge=0, description="order=oldest: from")] = 0,
    before_version: Annotated[int | None, Query(ge=1, description="order=newest: from")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditTrailPage:
    """What changed a contact, its fields old -> new, when, and by which source."""
    if order == "oldest" and before_version is not None:
        raise Problem(422, "Invalid cursor", "before_version: pages order=newest only")
    if order == "newest" and after_version:
        raise Problem(422, "Invalid cursor", "after_version: pages order=oldest only")
    trail: AuditTrail = request.app.state.audit_trail
    contact_id = f"{profile_id}:{key.strip().lower()}"
    previous: dict[str, Any] | None = None
    if order == "newest":
        # One entry more: whether there are more, and the last item's previous entry.
        entries = (await trail.newest_of_contact(contact_id, before_version, limit + 1))[::-1]
        more = len(entries) > limit
        if more:
            previous, entries = entries[0], entries[1:]
    else:
        entries = await trail.of_contact(contact_id, after_version, limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        if entries and after_version:
            before = await trail.newest_of_contact(contact_id, after_version + 1, 1)
            previous = before[0] if before else None
    if entries and entries[0]["account_id"] != account_id:
        return AuditTrailPage(items=[])  # another account's contact: as if unknown
    schema = await request.app.state.profile_schemas.get(profile_id)
    names = {spec.key: spec.name for spec in schema.fields} if schema else {}
    items = [AuditEntry.model_validate(e) for e in served_entries(entries, previous, names)]
    if order == "newest":
        items.reverse()
        return AuditTrailPage(items=items, next_before_version=items[-1].version if more else None)
    return AuditTrailPage(items=items, next_after_version=items[-1].version if more else None)
