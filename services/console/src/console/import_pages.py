"""Import Contacts: the form (profile, origin, action, reference), the header check with the
mapping to confirm, the upload streamed through to import-svc, and its live progress."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from console import i18n
from console.backends import IMPORTS, PROFILES, Api, Refused, ServiceDown, side_by_side
from console.i18n import N_
from console.web import CsrfChecked, Page, PageFor, SignedIn

router = APIRouter()

# import-svc's plan reads a file's first 64 KiB (the bytes its import chooses the encoding
# from) and one byte more to tell the file goes on: the header check sends no more.
PLAN_BYTES = 64 * 1024
# The upload is read from the console's spooled copy and sent on in pieces of this size.
UPLOAD_CHUNK_BYTES = 1024 * 1024
# A large upload takes as long as import-svc needs to store each piece: a pause longer than
# this (per read or write, not in all) is a service gone quiet.
UPLOAD_TIMEOUT = httpx.Timeout(60.0)
# profile-svc's largest page: the profile picker shows this many, by name.
PICKER_LIMIT = 200
# The form's inputs a refusal may name, each said next to its input.
INPUTS = frozenset({"profile_id", "file", "text", "reference"})


# In the seed's order.
ACTION_LABELS = {
    "append": N_("Append"),
    "overwrite": N_("Overwrite"),
    "append_or_update": N_("Append or Update"),
    "unsubscribe": N_("Unsubscribe"),
}
ORIGINS = {"file": N_("CSV file"), "paste": N_("Copy - Paste")}
DATE_ORDERS = {
    "day_first": N_("Day first (31/12/1990)"),
    "month_first": N_("Month first (12/31/1990)"),
}
STATUS_LABELS = {
    "queued": N_("Queued"),
    "validating": N_("Checking the header"),
    "running": N_("Running"),
    "completed": N_("Completed"),
    "completed_with_errors": N_("Completed with errors"),
    "failed": N_("Failed"),
    "cancelled": N_("Cancelled"),
}
FINISHED = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})
# How the header check matched each column (import-svc's `match`).
MATCH_LABELS = {
    "exact": N_("matches a field by name"),
    "loose": N_("matches a field once case or accents are set aside"),
    "mapped": N_("mapped to a field"),
    "skipped": N_("skipped"),
    "unknown": N_("matches no field: skipped, unless you choose one"),
    "duplicate": N_("fills a field another column fills: skipped, unless you choose another"),
    "unnamed": N_("has no name in the header"),
}
DELIMITER_LABELS = {
    ",": N_("comma"),
    ";": N_("semicolon"),
    "\t": N_("tab"),
    "|": N_("vertical bar"),
}
# The outcomes import-svc counts, as shown once an import has ended.
COUNT_LABELS = {
    "read": N_("Rows read"),
    "applied": N_("Rows applied"),
    "created": N_("Contacts created"),
    "updated": N_("Contacts updated"),
    "unchanged": N_("Contacts unchanged"),
    "unsubscribed": N_("Contacts unsubscribed"),
    "duplicate": N_("Rows repeating an earlier one"),
    "not_found": N_("Contacts not found"),
    "deleted": N_("Contacts deleted"),
    "refused": N_("Rows refused"),
}
# import-svc's 413 says its limit in bytes; the page says it in a unit people read.
LIMIT_IN_DETAIL = re.compile(r"(\d+) bytes")


def size(value: int, locale: str) -> str:
    """A number of bytes as KB, MB or GB (powers of 1024), in the locale's digits."""
    amount, unit = float(value), "bytes"
    for bigger in ("KB", "MB", "GB", "TB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{format_decimal(round(amount, 1), locale=locale)} {unit}"


def duration(job: dict[str, Any], locale: str) -> str:
    """How long an import ran (so far, if it runs), as hours, minutes and seconds."""
    if not job.get("started_at"):
        return ""
    start = datetime.fromisoformat(job["started_at"])
    end = datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else None
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    hours, rest = divmod(int(seconds), 3600)
    minutes, whole = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {whole} s"
    return f"{format_decimal(round(seconds, 1), locale=locale)} s"


def labels() -> dict[str, Any]:
    """What the import and log templates name by key."""
    return {
        "action_labels": ACTION_LABELS,
        "status_labels": STATUS_LABELS,
        "count_labels": COUNT_LABELS,
        "finished": FINISHED,
    }


async def profile_names(
    api: Api, profile_ids: set[str]
) -> tuple[dict[str, str], list[ServiceDown]]:
    """The names of these profiles, in one call, and the outage if profile-svc is down. A
    profile gone since has no name."""
    if not profile_ids:
        return {}, []
    (listed,) = await side_by_side(
        api.get(PROFILES, "/v1/profiles", id=sorted(profile_ids), limit=len(profile_ids))
    )
    if isinstance(listed, ServiceDown):
        return {}, [listed]
    if isinstance(listed, Refused):
        return {}, []
    return {p["id"]: p["name"] for p in listed["items"]}, []


# -- the form -------------------------------------------------------------------------------------


def _text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value if isinstance(value, str) else default


@dataclass
class ImportDraft:
    """The Import Contacts form as the person filled it in."""

    profile_id: str = ""
    origin: str = "file"
    action: str = "append"
    reference: str = ""
    text: str = ""
    date_order: str = "day_first"
    # The confirmed mapping: each column of the header and the field it fills (None: skipped).
    mapping: list[tuple[str, str | None]] = field(default_factory=list)

    @classmethod
    def of(cls, form: FormData) -> ImportDraft:
        origin, action = _text(form, "origin", "file"), _text(form, "action", "append")
        date_order = _text(form, "date_order", "day_first")
        columns = [str(c) for c in form.getlist("column")]
        fields = [str(f) for f in form.getlist("field")]
        return cls(
            profile_id=_text(form, "profile_id").strip(),
            origin=origin if origin in ORIGINS else "file",
            action=action if action in ACTION_LABELS else "append",
            reference=_text(form, "reference").strip(),
            text=_text(form, "text"),
            date_order=date_order if date_order in DATE_ORDERS else "day_first",
            mapping=[(c, f or None) for c, f in zip(columns, fields, strict=False)],
        )

    def upload_in(self, form: FormData) -> UploadFile | None:
        """The file chosen, if the origin is a file (a form without one sends an empty part)."""
        value = form.get("file")
        if self.origin == "file" and isinstance(value, UploadFile) and value.filename:
            return value
        return None

    def problems(self, upload: UploadFile | None) -> dict[str, str]:
        """What the form lacks before any service is asked, by input."""
        found: dict[str, str] = {}
        if not self.profile_id:
            found["profile_id"] = N_("Choose a profile.")
        if self.origin == "file" and upload is None:
            found["file"] = N_("Choose a CSV file.")
        if self.origin == "paste" and not self.text.strip():
            found["text"] = N_("Paste the rows, the header first.")
        return found

    def mapping_of_columns(self) -> dict[str, str | None]:
        return dict(self.mapping)


@dataclass(frozen=True)
class MappingRow:
    """A column of the header: the field it fills (None: skipped), as the check found it."""

    column: str
    chosen: str | None
    match: str | None = None
    examples: list[str] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True)
class PlanView:
    """The header check as shown: import-svc's plan (None when the mapping is shown again from
    the form after a refusal), the mapping to confirm, and the profile's fields to choose."""

    rows: list[MappingRow]
    fields: list[dict[str, Any]]
    answer: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, answer: dict[str, Any], fields: list[dict[str, Any]]) -> PlanView:
        """The plan's problems are of the file as it is: a column the suggested mapping skips
        (unknown, a duplicate) says so by its match alone, and the missing identity column has
        a message of its own."""
        chosen = {
            c["column"]: answer["mapping"].get(c["column"], c["field"]) for c in answer["columns"]
        }
        by_column: dict[str, list[str]] = {}
        elsewhere: list[str] = []
        for problem in answer["problems"]:
            column = problem["column"]
            if column in chosen:
                if chosen[column] is not None:
                    by_column.setdefault(column, []).append(problem["reason"])
            elif column != answer["missing_identity"]:
                elsewhere.append(f"{column}: {problem['reason']}")
        rows = [
            MappingRow(
                column=c["column"],
                chosen=chosen[c["column"]],
                match=c["match"],
                examples=c["examples"],
                problem="; ".join(by_column.get(c["column"], [])) or None,
            )
            for c in answer["columns"]
        ]
        return cls(rows=rows, fields=fields, answer=answer, problems=elsewhere)

    @classmethod
    def of_draft(
        cls, draft: ImportDraft, fields: list[dict[str, Any]], errors: dict[str, str]
    ) -> PlanView:
        rows = [
            MappingRow(column=column, chosen=chosen, problem=errors.get(f"mapping.{column}"))
            for column, chosen in draft.mapping
        ]
        return cls(rows=rows, fields=fields)


async def _profiles(api: Api, name: str) -> dict[str, Any]:
    """A page of the profiles one can import into (regular and mobile-only), by name."""
    params: dict[str, Any] = {"sort": "name", "limit": PICKER_LIMIT} | (
        {"name": name} if name else {}
    )
    listed: dict[str, Any] = await api.get(PROFILES, "/v1/profiles", **params)
    return listed | {"items": [p for p in listed["items"] if p["type"] != "virtual"]}


async def _fields(api: Api, profile_id: str) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = (await api.get(PROFILES, f"/v1/profiles/{profile_id}"))["fields"]
    return fields


async def _nothing() -> None:
    return None


@dataclass
class FormPage:
    """Renders the Import Contacts form, with whatever the services answered."""

    page: Page
    draft: ImportDraft
    errors: dict[str, str] = field(default_factory=dict)
    detail: str | None = None
    plan: PlanView | None = None
    unavailable: list[ServiceDown] = field(default_factory=list)
    name: str = ""

    def render(self, listed: Any, *, fragment: bool = False, status_code: int = 200) -> Response:
        """The whole form, or (`fragment`) the header check alone, whose inputs stay in the
        page: what is said next to an input is not said again above it."""
        unavailable = [*self.unavailable, *([listed] if isinstance(listed, ServiceDown) else [])]
        placed = set() if fragment else set(self.errors) & INPUTS
        if self.plan is not None:
            placed |= {name for name in self.errors if name.startswith("mapping.")}
        unplaced = [message for name, message in self.errors.items() if name not in placed]
        return self.page.render(
            "imports_plan.html" if fragment else "imports_new.html",
            status_code=status_code,
            draft=self.draft,
            errors=self.errors,
            detail=self.detail if unplaced or not self.errors else None,
            unplaced=unplaced,
            plan=self.plan,
            fragment=fragment,
            unavailable=unavailable,
            listed=listed if isinstance(listed, dict) else None,
            name=self.name,
            origins=ORIGINS,
            date_orders=DATE_ORDERS,
            match_labels=MATCH_LABELS,
            delimiter_labels=DELIMITER_LABELS,
            plan_bytes=PLAN_BYTES,
            **labels(),
        )


def _refusal(refused: Refused, locale: str) -> str:
    """What a refusal of import-svc says to the person: a profile it has not learnt of yet and
    an upload over its limit in words of the console's, the rest as import-svc put it."""
    _ = i18n.translator(locale)
    if refused.status == 404:
        return _("This profile is not ready for imports yet; try again in a moment.")
    if refused.status == 413:
        limit = LIMIT_IN_DETAIL.search(refused.detail)
        if limit:
            return _(
                "The file is larger than imports accept: at most {limit}.",
                limit=size(int(limit.group(1)), locale),
            )
        return _("The file is larger than imports accept.")
    return refused.detail


@router.get("/imports/new", response_class=HTMLResponse)
async def new_import(
    page: PageFor, api: SignedIn, profile_id: str = "", name: str = ""
) -> Response:
    """The Import Contacts form (a profile chosen already, given `profile_id`)."""
    (listed,) = await side_by_side(_profiles(api, name))
    if isinstance(listed, Refused):
        raise listed
    return FormPage(page, ImportDraft(profile_id=profile_id), name=name).render(listed)


@router.post("/imports/plan", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def check_header(request: Request, page: PageFor, api: SignedIn) -> Response:
    """The header check: import-svc's plan of the file's first bytes (or of the pasted
    text), shown with the mapping to confirm. The page's script asks for the plan alone, as
    htmx would (the file chosen stays in the page); without JavaScript the whole form comes
    back with it."""
    form = await request.form()
    draft = ImportDraft.of(form)
    upload = draft.upload_in(form)
    fragment = "hx-request" in request.headers
    # "mapping": check the mapping as the person set it; else the header alone, afresh.
    with_mapping = _text(form, "check") == "mapping"
    shown = FormPage(page, draft, errors=draft.problems(upload))
    if shown.errors:
        listed = None if fragment else (await side_by_side(_profiles(api, "")))[0]
        return shown.render(listed, fragment=fragment, status_code=422)
    planned, fields, listed = await side_by_side(
        _plan(api, draft, upload, with_mapping),
        _fields(api, draft.profile_id),
        _nothing() if fragment else _profiles(api, ""),
    )
    if isinstance(planned, Refused):
        shown.errors = planned.errors
        shown.detail = _refusal(planned, page.session.locale)
        return shown.render(listed, fragment=fragment, status_code=422)
    if isinstance(planned, ServiceDown):
        shown.unavailable.append(planned)
        return shown.render(listed, fragment=fragment, status_code=503)
    if isinstance(fields, ServiceDown | Refused):
        # The fields the plan found: enough to confirm the mapping it suggests.
        shown.unavailable += [fields] if isinstance(fields, ServiceDown) else []
        fields = [{"name": c["field"], "type": c["type"]} for c in planned["columns"] if c["field"]]
    if planned["date_order"] in DATE_ORDERS:
        draft.date_order = planned["date_order"]
    shown.plan = PlanView.of(planned, fields)
    return shown.render(listed, fragment=fragment)


async def _plan(
    api: Api, draft: ImportDraft, upload: UploadFile | None, with_mapping: bool
) -> dict[str, Any]:
    """import-svc's plan of the file's first bytes, or of the pasted text's."""
    mapping = draft.mapping_of_columns() if with_mapping else {}
    if upload is not None:
        await upload.seek(0)
        head = await upload.read(PLAN_BYTES + 1)
        data = {"profile_id": draft.profile_id}
        if mapping:
            data["mapping"] = json.dumps(mapping)
        files = {"file": (upload.filename or "file.csv", head, "text/csv")}
        answer = await api.call(IMPORTS, "POST", "/v1/imports:plan", data=data, files=files)
        planned: dict[str, Any] = answer.json()
        return planned
    # Characters are at least a byte each: the plan's bytes are within these.
    body: dict[str, Any] = {"profile_id": draft.profile_id, "text": draft.text[: PLAN_BYTES + 1]}
    if mapping:
        body["mapping"] = mapping
    planned = await api.post(IMPORTS, "/v1/imports:plan", body)
    return planned


# -- the upload -----------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    """A form field's or file's name inside its part's header, as browsers write it."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass(frozen=True)
class StreamedForm:
    """A multipart/form-data body of text fields and one file, the file read in pieces as it
    is sent (never whole in memory), its length told in advance: import-svc refuses an upload
    over its limit on the length alone, before any of it is sent."""

    fields: dict[str, str]
    upload: UploadFile
    boundary: str = field(default_factory=lambda: secrets.token_hex(16))

    def _head(self) -> bytes:
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in self.fields.items()
        ]
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quoted(self.upload.filename or "file.csv")}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        )
        return "".join(parts).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self.upload.size is not None:
            length = len(self._head()) + self.upload.size + len(self._tail())
            headers["Content-Length"] = str(length)
        return headers

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._head()
        await self.upload.seek(0)
        while chunk := await self.upload.read(UPLOAD_CHUNK_BYTES):
            yield chunk
        yield self._tail()


async def _upload(api: Api, draft: ImportDraft, upload: UploadFile | None) -> dict[str, Any]:
    """Queues the import with import-svc: the file streamed through, or the pasted text."""
    fields = {
        "profile_id": draft.profile_id,
        "action": draft.action,
        "date_order": draft.date_order,
    }
    if draft.reference:
        fields["reference"] = draft.reference
    if draft.mapping:
        fields["mapping"] = json.dumps(draft.mapping_of_columns())
    if upload is None:
        answer = await api.call(IMPORTS, "POST", "/v1/imports", data=fields | {"text": draft.text})
    else:
        body = StreamedForm(fields, upload)
        answer = await api.call(
            IMPORTS,
            "POST",
            "/v1/imports",
            content=body.chunks(),
            headers=body.headers(),
            timeout=UPLOAD_TIMEOUT,
        )
    job: dict[str, Any] = answer.json()
    return job


@router.post("/imports", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def start_import(request: Request, page: PageFor, api: SignedIn) -> Response:
    """Import: the upload (received spooled to disk, sent on in pieces) with the confirmed
    mapping; then its progress. A refusal comes back to the form, next to what it names."""
    form = await request.form()
    draft = ImportDraft.of(form)
    upload = draft.upload_in(form)
    shown = FormPage(page, draft, errors=draft.problems(upload))
    status_code = 422
    if not shown.errors:
        try:
            job = await _upload(api, draft, upload)
        except Refused as refused:
            shown.errors = refused.errors
            shown.detail = _refusal(refused, page.session.locale)
            status_code = 413 if refused.status == 413 else 422
        except ServiceDown as down:
            shown.unavailable.append(down)
            status_code = 503
        else:
            return RedirectResponse(f"/imports/{job['id']}", status_code=303)
    listed, fields = await side_by_side(
        _profiles(api, ""), _fields(api, draft.profile_id) if draft.mapping else _nothing()
    )
    if draft.mapping:
        # The mapping as confirmed, shown again with what the refusal says of its columns;
        # without the profile's fields (profile-svc down), the fields chosen stay choosable.
        if not isinstance(fields, list):
            shown.unavailable += [fields] if isinstance(fields, ServiceDown) else []
            chosen = dict.fromkeys(field for _, field in draft.mapping if field)
            fields = [{"name": name} for name in chosen]
        shown.plan = PlanView.of_draft(draft, fields, shown.errors)
    return shown.render(listed, status_code=status_code)


# -- progress -------------------------------------------------------------------------------------


def _progress(page: Page, template: str, import_id: str, job: Any, **context: Any) -> Response:
    return page.render(
        template,
        import_id=import_id,
        job=job if isinstance(job, dict) else None,
        down=job if isinstance(job, ServiceDown) else None,
        **context,
        **labels(),
    )


@router.get("/imports/{import_id}", response_class=HTMLResponse)
async def import_progress(page: PageFor, api: SignedIn, import_id: str) -> Response:
    """An import as it runs: its progress, polled every second until it ends."""
    (job,) = await side_by_side(api.get(IMPORTS, f"/v1/imports/{import_id}"))
    if isinstance(job, Refused):
        raise job
    names, downs = await profile_names(api, {job["profile_id"]} if isinstance(job, dict) else set())
    return _progress(
        page,
        "imports_progress.html",
        import_id,
        job,
        profile_names=names,
        unavailable=downs,
        size=lambda value: size(value, page.session.locale),
    )


@router.get("/imports/{import_id}/progress", response_class=HTMLResponse)
async def progress_part(page: PageFor, api: SignedIn, import_id: str) -> Response:
    """The progress part of an import's page, which htmx polls until the import ends."""
    (job,) = await side_by_side(api.get(IMPORTS, f"/v1/imports/{import_id}"))
    if isinstance(job, Refused):
        raise job
    return _progress(page, "imports_progress_part.html", import_id, job)
