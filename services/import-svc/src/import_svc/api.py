"""HTTP routes of import-svc: translate requests into handler calls, nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field, ValidationError

from contacts_shared.commands import ImportAction
from contacts_shared.schema import FieldType
from contacts_shared.values import DateOrder
from contacts_shared.web import AccountId, Problem, validation_problem
from import_svc import handlers
from import_svc.domain import Completion, ImportJob, ImportStatus, ReadOptions, completion
from import_svc.header import Match
from import_svc.plan import PLAN_BYTES, DateOrderSeen, ImportPlan
from import_svc.repository import UPLOAD_CHUNK_BYTES, ImportStore

router = APIRouter(prefix="/v1/imports", tags=["imports"])
M = TypeVar("M", bound=BaseModel)
DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
MAPPING_DESCRIPTION = (
    'JSON {"column": "field", "other column": null}: the field each column fills, null to '
    "skip it, instead of the header's own names (as a plan suggests it, once confirmed); "
    "it must map a column to the field identifying contacts"
)


class ProgressOut(BaseModel):
    bytes_total: int = Field(description="the upload's size, known at once")
    bytes_read: int = Field(description="of the upload, read so far")
    rows_total: int | None = Field(description="rows after the header, once all are read")
    rows_done: int = Field(description="rows applied or refused")
    percent: float = Field(
        description="rows done of the rows expected: estimated from the bytes read until "
        "rows_total is known; 100 once completed"
    )

    @classmethod
    def of(cls, done: Completion) -> ProgressOut:
        return cls(
            bytes_total=done.bytes_total,
            bytes_read=done.bytes_read,
            rows_total=done.rows_total,
            rows_done=done.rows_done,
            percent=done.percent,
        )


class ImportOut(BaseModel):
    id: str
    profile_id: str
    action: ImportAction
    reference: str | None
    file_name: str | None
    size: int
    status: ImportStatus
    counts: dict[str, int]
    progress: ProgressOut
    rows_per_second: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    problems: list[dict[str, str]]
    notices: list[str]

    @classmethod
    def of(cls, job: ImportJob) -> ImportOut:
        end = job.finished_at or datetime.now(UTC)
        seconds = (end - job.started_at).total_seconds() if job.started_at else 0
        applied = job.progress.rows_counted
        return cls(
            id=job.id,
            profile_id=job.profile_id,
            action=job.action,
            reference=job.reference,
            file_name=job.file_name,
            size=job.size,
            status=job.status,
            counts=job.counts,
            progress=ProgressOut.of(completion(job)),
            rows_per_second=round(applied / seconds, 1) if seconds > 0 else None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            problems=list(job.problems),
            notices=[
                f"column '{column}' taken as field '{name}' (case or accents differ)"
                for column, name in job.loose_matches
            ],
        )


def _store(request: Request) -> ImportStore:
    store: ImportStore = request.app.state.store
    return store


def _mapping(text: str | None) -> dict[str, str | None]:
    """A mapping given as a form field's JSON text."""
    if not text:
        return {}
    try:
        columns = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Problem(422, "Invalid import", f"mapping: not JSON ({exc})") from exc
    if not isinstance(columns, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in columns.items()
    ):
        raise Problem(422, "Invalid import", 'mapping: a JSON object {"column": "field" or null}')
    return columns


def _options(
    delimiter: str | None,
    encoding: str | None,
    date_order: DateOrder,
    mapping: dict[str, str | None],
    ignore: list[str],
) -> ReadOptions:
    if delimiter is not None:
        delimiter = DELIMITER_WORDS.get(delimiter.lower(), delimiter)
        if len(delimiter) != 1:
            raise Problem(422, "Invalid import", "delimiter: one character, or tab")
    return ReadOptions(delimiter, encoding, date_order, mapping, tuple(ignore))


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(UPLOAD_CHUNK_BYTES):
        yield chunk


async def _text(text: str) -> AsyncIterator[bytes]:
    data = text.encode()
    for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
        yield data[start : start + UPLOAD_CHUNK_BYTES]


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def create_import(
    account_id: AccountId,
    request: Request,
    profile_id: Annotated[str, Form(max_length=100)],
    action: Annotated[ImportAction, Form()],
    reference: Annotated[str | None, Form(max_length=500)] = None,
    file: Annotated[UploadFile | None, File(description="a CSV file")] = None,
    text: Annotated[str | None, Form(description="pasted rows, the header first")] = None,
    delimiter: Annotated[str | None, Form(max_length=10)] = None,
    encoding: Annotated[str | None, Form(max_length=40)] = None,
    date_order: Annotated[DateOrder, Form()] = DateOrder.DAY_FIRST,
    mapping: Annotated[str | None, Form(description=MAPPING_DESCRIPTION)] = None,
    ignore: Annotated[list[str] | None, Form(description="columns to skip")] = None,
) -> ImportOut:
    """Queue an import of a CSV file or pasted text; answers once the upload is stored."""
    if (file is None) == (text is None):
        raise Problem(422, "Invalid import", "give either file or text")
    options = _options(delimiter, encoding, date_order, _mapping(mapping), ignore or [])
    if text is not None:
        options = replace(options, encoding="utf-8")  # pasted text arrives as Unicode
    job = await handlers.accept_import(
        account_id=account_id,
        profile_id=profile_id,
        action=action,
        reference=reference,
        file_name=file.filename if file is not None else None,
        upload=_chunks(file) if file is not None else _text(text or ""),
        options=options,
        schemas=request.app.state.schemas,
        store=_store(request),
    )
    return ImportOut.of(job)


@router.get("/{import_id}")
async def get_import(import_id: str, account_id: AccountId, request: Request) -> ImportOut:
    """An import's status and counts so far."""
    return ImportOut.of(await handlers.owned_import(_store(request), account_id, import_id))


class ProgressEvent(BaseModel):
    """An import's progress as told on its stream (`event: progress`, and `event: end`
    once it has finished)."""

    id: str
    status: ImportStatus
    progress: ProgressOut
    counts: dict[str, int]


async def _owned_job(import_id: str, account_id: AccountId, request: Request) -> ImportJob:
    """The account's import, or 404 before any stream starts."""
    return await handlers.owned_import(_store(request), account_id, import_id)


@router.get("/{import_id}/progress", response_class=EventSourceResponse)
async def stream_progress(
    job: Annotated[ImportJob, Depends(_owned_job)], request: Request
) -> AsyncIterable[ServerSentEvent]:
    """An import's progress as Server-Sent Events: `progress` once a second while it runs,
    then `end` when it has finished, and the stream closes (also after a maximum duration:
    reconnect then)."""
    settings = request.app.state.settings
    async for seen, done in handlers.watch_import(
        _store(request),
        job,
        every=settings.progress_every_seconds,
        for_at_most=settings.progress_stream_seconds,
    ):
        told = ProgressEvent(
            id=seen.id, status=seen.status, progress=ProgressOut.of(done), counts=seen.counts
        )
        yield ServerSentEvent(data=told, event="end" if seen.status.finished else "progress")


@router.post("/{import_id}:cancel")
async def cancel_import(import_id: str, account_id: AccountId, request: Request) -> ImportOut:
    """Stop an import where it is; rows already applied stay."""
    return ImportOut.of(await handlers.cancel_import(_store(request), account_id, import_id))


class PlanText(BaseModel):
    """A plan of pasted text, as JSON."""

    profile_id: str = Field(min_length=1, max_length=100)
    text: str = Field(
        description=f"pasted rows, the header first; the first {PLAN_BYTES} bytes read"
    )
    delimiter: str | None = Field(None, max_length=10, description="found in the header otherwise")
    mapping: dict[str, str | None] | None = Field(None, description=MAPPING_DESCRIPTION)


class PlanForm(BaseModel):
    """A plan of a file or pasted text, as a multipart form (`file` or `text`)."""

    profile_id: str = Field(min_length=1, max_length=100)
    file: bytes | None = Field(
        None, description=f"the CSV file, or its start: the first {PLAN_BYTES} bytes are read"
    )
    text: str | None = Field(None, description="pasted rows, the header first")
    delimiter: str | None = Field(None, max_length=10, description="found in the header otherwise")
    encoding: str | None = Field(None, max_length=40, description="found in the file otherwise")
    mapping: str | None = Field(None, description=MAPPING_DESCRIPTION)


class PlannedColumn(BaseModel):
    column: str = Field(description="its name in the header, surrounding spaces dropped")
    match: Match = Field(description="how it matched a field, or why it fills none")
    field: str | None = Field(description="the field it fills (a duplicate: would fill again)")
    type: FieldType | None
    examples: list[str] = Field(description="its first non-empty values in the sample")


class DatesSeen(BaseModel):
    day_first: int = Field(description="dates read day first only, as 31/12/1990")
    month_first: int = Field(description="dates read month first only, as 12/31/1990")
    ambiguous: int = Field(description="dates read both ways as different days, as 03/04/1990")


class ImportPlanOut(BaseModel):
    profile_id: str
    encoding: str = Field(description="as the import reads it: utf-8, utf-8-sig (a BOM), ...")
    delimiter: str
    date_order: DateOrderSeen = Field(description="of the sample's dates in date fields")
    dates: DatesSeen
    rows_sampled: int = Field(description="complete rows read after the header")
    columns: list[PlannedColumn]
    unknown_columns: list[str]
    duplicate_columns: list[str]
    missing_identity: str | None = Field(description="the identity field, if no column fills it")
    problems: list[dict[str, str]] = Field(
        description="what an import of the file as it is would fail on: column and reason"
    )
    mapping: dict[str, str | None] = Field(
        description="suggested: each column's field, null to skip it; confirm it to the import"
    )
    ready: bool = Field(description="an import given the suggested mapping passes its header")

    @classmethod
    def of(cls, profile_id: str, plan: ImportPlan) -> ImportPlanOut:
        check = plan.header
        return cls(
            profile_id=profile_id,
            encoding=plan.encoding,
            delimiter=plan.delimiter,
            date_order=plan.dates.order,
            dates=DatesSeen(
                day_first=plan.dates.day_first,
                month_first=plan.dates.month_first,
                ambiguous=plan.dates.ambiguous,
            ),
            rows_sampled=plan.rows,
            columns=[
                PlannedColumn(
                    column=column.name,
                    match=column.match,
                    field=column.field.name if column.field else None,
                    type=column.field.type if column.field else None,
                    examples=list(examples),
                )
                for column, examples in zip(check.columns, plan.examples, strict=True)
            ],
            unknown_columns=[c.name for c in check.columns if c.match is Match.UNKNOWN],
            duplicate_columns=[c.name for c in check.columns if c.match is Match.DUPLICATE],
            missing_identity=check.identity.name if check.identity_missing else None,
            problems=[{"column": p.field, "reason": p.message} for p in check.problems],
            mapping=plan.mapping,
            ready=plan.ready,
        )


def _validated(model: type[M], given: Any) -> M:
    """`given` as `model`, or the 422 naming what is wrong, as FastAPI's own."""
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise validation_problem(RequestValidationError(errors)) from exc


async def _plan_request(request: Request) -> tuple[str, bytes, str, ReadOptions]:
    """The profile, the first bytes to plan (one more than read, to tell the file goes on),
    the parameter they came in, and how to read them: from JSON or a multipart form."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            body = await request.json()
        except ValueError as exc:
            raise Problem(400, "Malformed JSON", "The request body is not valid JSON") from exc
        pasted = _validated(PlanText, body)
        options = _options(pasted.delimiter, "utf-8", DateOrder.DAY_FIRST, pasted.mapping or {}, [])
        return pasted.profile_id, pasted.text.encode()[: PLAN_BYTES + 1], "text", options
    async with request.form(max_files=1) as form:
        upload = form.get("file")
        given = _validated(PlanForm, {k: v for k, v in form.items() if k != "file"})
        if isinstance(upload, str) or (upload is None) == (given.text is None):
            raise Problem(422, "Invalid plan", "give either file (a file) or text")
        mapping = _mapping(given.mapping)
        if upload is None:  # pasted text arrives as Unicode
            options = _options(given.delimiter, "utf-8", DateOrder.DAY_FIRST, mapping, [])
            return given.profile_id, (given.text or "").encode()[: PLAN_BYTES + 1], "text", options
        options = _options(given.delimiter, given.encoding, DateOrder.DAY_FIRST, mapping, [])
        return given.profile_id, await upload.read(PLAN_BYTES + 1), "file", options


PLAN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": PlanForm.model_json_schema()},
            "application/json": {"schema": PlanText.model_json_schema()},
        },
    }
}


@router.post(":plan", openapi_extra=PLAN_BODY)
async def plan_import(account_id: AccountId, request: Request) -> ImportPlanOut:
    """Check a file's header before the upload: encoding, delimiter, date order, each column's
    field, what an import would fail on, and a mapping to confirm; nothing is stored."""
    profile_id, data, given_as, options = await _plan_request(request)
    plan = await handlers.plan_import(
        account_id=account_id,
        profile_id=profile_id,
        data=data,
        given_as=given_as,
        options=options,
        region=request.app.state.settings.default_phone_region,
        schemas=request.app.state.schemas,
    )
    return ImportPlanOut.of(profile_id, plan)
