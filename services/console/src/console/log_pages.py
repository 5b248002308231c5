"""Logs: the imports newest first, live progress on running ones, cancelling one, and each
import's refused rows (paged, or downloaded as CSV)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from console.backends import IMPORTS, LOGS, Api, Refused, ServiceDown, side_by_side
from console.import_pages import duration, labels, profile_names
from console.web import CsrfChecked, Page, PageFor, SignedIn, stream_through

router = APIRouter()

PAGE_SIZE = 50
REFUSED_PAGE = 50


def _rows(page: Page, template: str, **context: Any) -> Response:
    return page.render(
        template,
        duration=lambda job: duration(job, page.session.locale),
        **context,
        **labels(),
    )


@router.get("/logs", response_class=HTMLResponse)
async def list_imports(page: PageFor, api: SignedIn, cursor: str | None = None) -> Response:
    """The account's imports, newest first, 50 a page (log-svc's import log), with their
    profiles' names; running ones poll their row."""
    params: dict[str, Any] = {"limit": PAGE_SIZE} | ({"cursor": cursor} if cursor else {})
    (listed,) = await side_by_side(api.get(LOGS, "/v1/logs/imports", **params))
    if isinstance(listed, Refused):
        raise listed
    if isinstance(listed, ServiceDown):
        return _rows(page, "logs_list.html", listed=None, down=listed, unavailable=[], names={})
    names, downs = await profile_names(api, {item["profile_id"] for item in listed["items"]})
    return _rows(page, "logs_list.html", listed=listed, down=None, unavailable=downs, names=names)


async def _live_row(page: Page, api: Api, import_id: str, name: str, note: str | None) -> Response:
    """One import's row as import-svc tells it now (log-svc's log follows it by events)."""
    (job,) = await side_by_side(api.get(IMPORTS, f"/v1/imports/{import_id}"))
    if isinstance(job, Refused):
        raise job
    return _rows(
        page,
        "logs_row.html",
        job=job if isinstance(job, dict) else {"id": import_id},
        down=job if isinstance(job, ServiceDown) else None,
        profile_name=name,
        note=note,
    )


@router.get("/logs/imports/{import_id}/row", response_class=HTMLResponse)
async def import_row(page: PageFor, api: SignedIn, import_id: str, profile: str = "") -> Response:
    """A running import's row of the log, which htmx polls until the import ends (`profile`:
    its profile's name, carried by the row rather than asked for each second)."""
    return await _live_row(page, api, import_id, profile, None)


@router.post(
    "/logs/imports/{import_id}/cancel", response_class=HTMLResponse, dependencies=[CsrfChecked]
)
async def cancel_import(request: Request, page: PageFor, api: SignedIn, import_id: str) -> Response:
    """Stop a running import where it is (rows applied stay): htmx gets its row back, a form
    without JavaScript the log again."""
    form = await request.form()
    profile = form.get("profile")
    in_place = "hx-request" in request.headers
    note: str | None = None
    try:
        await api.post(IMPORTS, f"/v1/imports/{import_id}:cancel", {})
    except (Refused, ServiceDown) as failed:
        if not in_place:
            raise
        # Said in the row: the refusal, or (asked again) the service down.
        note = failed.detail if isinstance(failed, Refused) else None
    if in_place:
        return await _live_row(page, api, import_id, str(profile or ""), note)
    return RedirectResponse("/logs", status_code=303)


@router.get("/logs/imports/{import_id}/refused", response_class=HTMLResponse)
async def refused_rows(
    page: PageFor, api: SignedIn, import_id: str, after_line: int = 0
) -> Response:
    """An import's refused rows, 50 a page in line order: the line, each error, the row."""
    rows, job = await side_by_side(
        api.get(
            LOGS,
            f"/v1/logs/imports/{import_id}/refused",
            format="json",
            after_line=after_line,
            limit=REFUSED_PAGE,
        ),
        api.get(LOGS, f"/v1/logs/imports/{import_id}"),
    )
    for answer in (rows, job):
        if isinstance(answer, Refused):
            raise answer
    return page.render(
        "logs_refused.html",
        import_id=import_id,
        rows=rows if isinstance(rows, dict) else None,
        job=job if isinstance(job, dict) else None,
        down=rows if isinstance(rows, ServiceDown) else None,
        after_line=after_line,
    )


@router.get("/logs/imports/{import_id}/refused.csv")
async def download_refused_rows(api: SignedIn, import_id: str) -> StreamingResponse:
    """The import's refused rows as CSV (line, problems, the row as uploaded), streamed from
    log-svc as it comes."""
    return await stream_through(
        api, LOGS, f"/v1/logs/imports/{import_id}/refused", f"refused-{import_id}.csv"
    )
