"""New Profile and List Profiles."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from console.backends import (
    CONTACTS,
    PROFILES,
    SEGMENTS,
    Api,
    Refused,
    ServiceDown,
    or_outage,
)
from console.web import (
    FIELD_TYPES,
    TYPE_LABELS,
    CsrfChecked,
    PageFor,
    ProfileId,
    SignedIn,
    stream_through,
)

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


# -- one profile: its statistics, edit, export and delete (linked from each row of the list) ------


@router.get("/profiles/{profile_id}", response_class=HTMLResponse)
async def profile_statistics(page: PageFor, api: SignedIn, profile_id: ProfileId) -> HTMLResponse:
    """A profile's contacts by status and as they were added, from the service that counts
    them (contact-svc; segment-svc for a virtual profile's members)."""
    profile = await api.get(PROFILES, f"/v1/profiles/{profile_id}")
    service = SEGMENTS if profile["type"] == "virtual" else CONTACTS
    try:
        stats = await or_outage(api.get(service, f"/v1/profiles/{profile_id}/stats"))
    except Refused:  # the service has not heard of the profile yet: nothing counted
        stats = None
    return page.render(
        "profile_detail_stats.html",
        profile=profile,
        stats=stats if isinstance(stats, dict) else None,
        down=stats if isinstance(stats, ServiceDown) else None,
    )


def _edit_page(
    page: PageFor,
    profile: dict[str, Any],
    *,
    status_code: int = 200,
    draft: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    new_field: tuple[str, str] = ("", "text"),
    field_errors: dict[str, str] | None = None,
    done: str | None = None,
) -> HTMLResponse:
    return page.render(
        "profile_detail_edit.html",
        status_code=status_code,
        profile=profile,
        draft=draft or {"name": profile["name"], "description": profile["description"]},
        errors=errors or {},
        new_field=new_field,
        field_errors=field_errors or {},
        done=done,
    )


@router.get("/profiles/{profile_id}/edit", response_class=HTMLResponse)
async def edit_profile(
    page: PageFor, api: SignedIn, profile_id: ProfileId, done: str = ""
) -> HTMLResponse:
    """Name, description and (not virtual profiles) fields of a profile."""
    profile = await api.get(PROFILES, f"/v1/profiles/{profile_id}")
    return _edit_page(page, profile, done=done if done in ("saved", "added", "removed") else None)


@router.post("/profiles/{profile_id}/edit", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def change_profile(
    request: Request, page: PageFor, api: SignedIn, profile_id: ProfileId
) -> Response:
    """Save a new name and description (profile-svc's refusal shown at the input it names)."""
    form = await request.form()
    draft = {key: str(form.get(key, "")).strip() for key in ("name", "description")}
    try:
        await api.call(PROFILES, "PATCH", f"/v1/profiles/{profile_id}", json=draft)
    except Refused as refused:
        profile = await api.get(PROFILES, f"/v1/profiles/{profile_id}")
        errors = refused.errors or {"": refused.detail}
        return _edit_page(page, profile, status_code=refused.status, draft=draft, errors=errors)
    return RedirectResponse(f"/profiles/{profile_id}/edit?done=saved", status_code=303)


@router.post(
    "/profiles/{profile_id}/fields", response_class=HTMLResponse, dependencies=[CsrfChecked]
)
async def add_profile_field(
    request: Request, page: PageFor, api: SignedIn, profile_id: ProfileId
) -> Response:
    """Add a field to a regular or mobile-only profile."""
    form = await request.form()
    name = str(form.get("field_name", "")).strip()
    chosen = str(form.get("field_type", "text"))
    field_type = chosen if chosen in FIELD_TYPES else "text"
    try:
        await api.post(
            PROFILES, f"/v1/profiles/{profile_id}/fields", {"name": name, "type": field_type}
        )
    except Refused as refused:
        profile = await api.get(PROFILES, f"/v1/profiles/{profile_id}")
        # Request validation names the body's `name`; profile-svc's own rules, `field.name`.
        errors = {key.removeprefix("field."): message for key, message in refused.errors.items()}
        return _edit_page(
            page,
            profile,
            status_code=refused.status,
            new_field=(name, field_type),
            field_errors=errors or {"": refused.detail},
        )
    return RedirectResponse(f"/profiles/{profile_id}/edit?done=added", status_code=303)


@router.get("/profiles/{profile_id}/fields/delete", response_class=HTMLResponse)
async def confirm_field_delete(
    page: PageFor, api: SignedIn, profile_id: ProfileId, name: str = ""
) -> HTMLResponse:
    """Ask before deleting a field: every contact's value of it goes with it."""
    profile = await api.get(PROFILES, f"/v1/profiles/{profile_id}")
    return page.render("profile_detail_delete.html", profile=profile, field_name=name, refused=None)


@router.post(
    "/profiles/{profile_id}/fields/delete", response_class=HTMLResponse, dependencies=[CsrfChecked]
)
async def delete_field(
    request: Request, page: PageFor, api: SignedIn, profile_id: ProfileId
) -> Response:
    """Delete a field (refused for the identity field and for fields rules read, by name)."""
    name = str((await request.form()).get("name", ""))
    try:
        await api.call(
            PROFILES, "DELETE", f"/v1/profiles/{profile_id}/fields/{quote(name, safe='')}"
        )
    except Refused as refused:
        profile = await api.get(PROFILES, f"/v1/profiles/{profile_id}")
        return page.render(
            "profile_detail_delete.html",
            status_code=refused.status,
            profile=profile,
            field_name=name,
            refused=refused,
        )
    return RedirectResponse(f"/profiles/{profile_id}/edit?done=removed", status_code=303)


@router.get("/profiles/{profile_id}/export")
async def export_contacts(api: SignedIn, profile_id: ProfileId) -> StreamingResponse:
    """The profile's contacts as CSV, streamed from contact-svc."""
    return await stream_through(
        api, CONTACTS, f"/v1/profiles/{profile_id}/contacts:export", f"contacts-{profile_id}.csv"
    )


@router.get("/profiles/{profile_id}/delete", response_class=HTMLResponse)
async def confirm_profile_delete(
    page: PageFor, api: SignedIn, profile_id: ProfileId
) -> HTMLResponse:
    """Ask before deleting a profile."""
    profile = await api.get(PROFILES, f"/v1/profiles/{profile_id}")
    return page.render("profile_detail_delete.html", profile=profile, field_name=None, refused=None)


@router.post(
    "/profiles/{profile_id}/delete", response_class=HTMLResponse, dependencies=[CsrfChecked]
)
async def delete_profile(page: PageFor, api: SignedIn, profile_id: ProfileId) -> Response:
    """Delete the profile; refused while virtual profiles stand on it, which the page names
    (profile-svc lists them by base profile)."""
    try:
        await api.call(PROFILES, "DELETE", f"/v1/profiles/{profile_id}")
    except Refused as refused:
        profile, dependents = await asyncio.gather(
            api.get(PROFILES, f"/v1/profiles/{profile_id}"),
            or_outage(
                api.get(
                    PROFILES,
                    "/v1/profiles",
                    base_profile_id=profile_id,
                    sort="name",
                    limit=PAGE_SIZE,
                )
            ),
        )
        return page.render(
            "profile_detail_delete.html",
            status_code=refused.status,
            profile=profile,
            field_name=None,
            refused=refused,
            dependents=dependents,
        )
    return RedirectResponse("/profiles", status_code=303)
