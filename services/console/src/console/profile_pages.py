"""New Profile and List Profiles."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.backends import CONTACTS, PROFILES, SEGMENTS, Api, Refused, ServiceDown
from console.web import TYPE_LABELS, CsrfChecked, PageFor, SignedIn

log = logging.getLogger(__name__)
router = APIRouter()

PAGE_SIZE = 50


async def _stats(api: Api, service: str, profile_ids: list[str]) -> dict[str, Any]:
    """The statistics of these profiles from one service, in one call (none: no call)."""
    if not profile_ids:
        return {}
    found: dict[str, Any] = (await api.get(service, "/v1/stats", profile_id=profile_ids))["stats"]
    return found


@router.get("/profiles", response_class=HTMLResponse)
async def list_profiles(
    page: PageFor, api: SignedIn, name: str | None = None, cursor: str | None = None
) -> HTMLResponse:
    """The account's profiles by name, 50 a page, each with its contacts by status: one call
    for the page, then one per service for the counts, side by side."""
    params: dict[str, Any] = {"limit": PAGE_SIZE, "sort": "name"}
    if name:
        params["name"] = name
    if cursor:
        params["cursor"] = cursor
    try:
        listed = await api.get(PROFILES, "/v1/profiles", **params)
    except ServiceDown as down:
        return page.render("profiles_list.html", down=down, name=name or "", rows=[], listed=None)
    items = listed["items"]
    regular = [p["id"] for p in items if p["type"] != "virtual"]
    virtual = [p["id"] for p in items if p["type"] == "virtual"]
    counted = await asyncio.gather(
        _stats(api, CONTACTS, regular), _stats(api, SEGMENTS, virtual), return_exceptions=True
    )
    stats: dict[str, Any] = {}
    unavailable: list[ServiceDown] = []
    for answer in counted:
        if isinstance(answer, ServiceDown):
            unavailable.append(answer)
        elif isinstance(answer, Refused):  # not expected: the rows say "not counted yet"
            log.warning("statistics refused", extra={"status": answer.status})
        elif isinstance(answer, BaseException):
            raise answer
        else:
            stats |= answer
    rows = [(profile, stats.get(profile["id"])) for profile in items]
    return page.render(
        "profiles_list.html",
        rows=rows,
        listed=listed,
        name=name or "",
        unavailable=unavailable,
        down=None,
    )


@dataclass
class ProfileDraft:
    """The New Profile form as the person left it: saved only by Save."""

    name: str = ""
    description: str = ""
    type: str = "regular"
    fields: list[tuple[str, str]] | None = None

    @classmethod
    async def of(cls, request: Request) -> ProfileDraft:
        form = await request.form()
        names = [str(v) for v in form.getlist("field_name")]
        types = [str(v) for v in form.getlist("field_type")]
        profile_type = str(form.get("type", "regular"))
        return cls(
            name=str(form.get("name", "")).strip(),
            description=str(form.get("description", "")).strip(),
            type=profile_type if profile_type in TYPE_LABELS else "regular",
            fields=list(zip(names, types, strict=False)),
        )

    @property
    def rows(self) -> list[tuple[str, str]]:
        return self.fields or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "fields": [{"name": n.strip(), "type": t} for n, t in self.rows],
        }
        return body | ({"description": self.description} if self.description else {})


@router.get("/profiles/new", response_class=HTMLResponse)
async def new_profile(page: PageFor, api: SignedIn) -> HTMLResponse:
    return page.render("profile_new.html", draft=ProfileDraft(), errors={}, detail=None)


@router.post("/profiles/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def change_new_profile(request: Request, page: PageFor, api: SignedIn) -> Response:
    """The form's buttons: Add a field row, remove one (trash), or Save."""
    draft = await ProfileDraft.of(request)
    action = str((await request.form()).get("action", "save"))
    if action == "add":
        draft.fields = [*draft.rows, ("", "text")]
    elif action.startswith("remove:"):
        index = int(action.removeprefix("remove:"))
        draft.fields = [row for i, row in enumerate(draft.rows) if i != index]
    elif draft.type == "virtual":
        query = urlencode({"name": draft.name, "description": draft.description})
        return RedirectResponse(f"/virtual-profiles/new?{query}", status_code=303)
    else:
        try:
            created = await api.post(PROFILES, "/v1/profiles", draft.body())
        except Refused as refused:
            return page.render(
                "profile_new.html",
                status_code=422,
                draft=draft,
                errors=refused.errors,
                detail=refused.detail,
            )
        except ServiceDown as down:
            return page.render(
                "profile_new.html", status_code=503, draft=draft, errors={}, detail=None, down=down
            )
        return RedirectResponse(f"/profiles?created={created['id']}", status_code=303)
    return page.render("profile_new.html", draft=draft, errors={}, detail=None)
