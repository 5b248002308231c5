"""HTTP routes of import-svc: translate requests into handler calls, nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from pydantic import BaseModel

from contacts_shared.commands import ImportAction
from contacts_shared.values import DateOrder
from contacts_shared.web import AccountId, Problem
from import_svc import handlers
from import_svc.domain import ImportJob, ImportStatus, ReadOptions
from import_svc.repository import UPLOAD_CHUNK_BYTES, ImportStore

router = APIRouter(prefix="/v1/imports", tags=["imports"])
DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


class ImportOut(BaseModel):
    id: str
    profile_id: str
    action: ImportAction
    reference: str | None
    file_name: str | None
    size: int
    status: ImportStatus
    counts: dict[str, int]
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


def _options(
    delimiter: str | None,
    encoding: str | None,
    date_order: DateOrder,
    mapping: str | None,
    ignore: list[str],
) -> ReadOptions:
    if delimiter is not None:
        delimiter = DELIMITER_WORDS.get(delimiter.lower(), delimiter)
        if len(delimiter) != 1:
            raise Problem(422, "Invalid import", "delimiter: one character, or tab")
    columns: dict[str, str] = {}
    if mapping:
        try:
            columns = json.loads(mapping)
        except json.JSONDecodeError as exc:
            raise Problem(422, "Invalid import", f"mapping: not JSON ({exc})") from exc
        if not isinstance(columns, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
        ):
            raise Problem(422, "Invalid import", 'mapping: a JSON object {"column": "field"}')
    return ReadOptions(delimiter, encoding, date_order, columns, tuple(ignore))


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
    mapping: Annotated[str | None, Form(description='JSON {"column": "field"}')] = None,
    ignore: Annotated[list[str] | None, Form(description="columns to skip")] = None,
) -> ImportOut:
    """Queue an import of a CSV file or pasted text; answers once the upload is stored."""
    if (file is None) == (text is None):
        raise Problem(422, "Invalid import", "give either file or text")
    options = _options(delimiter, encoding, date_order, mapping, ignore or [])
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


@router.post("/{import_id}:cancel")
async def cancel_import(import_id: str, account_id: AccountId, request: Request) -> ImportOut:
    """Stop an import where it is; rows already applied stay."""
    return ImportOut.of(await handlers.cancel_import(_store(request), account_id, import_id))
