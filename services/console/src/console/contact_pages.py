"""New Contact, List Contacts (search, sort, pages, bulk actions) and a contact's page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.backends import CONTACTS, LOGS, PROFILES, SEGMENTS, Api, Refused, ServiceDown
from console.i18n import N_
from console.web import CsrfChecked, Page, PageFor, SignedIn

router = APIRouter()

PAGE_SIZE = 50
TRAIL_PAGE = 20
# profile-svc's largest page: the profile pickers show this many of each type, by name.
PICKER_LIMIT = 200
# The profile's fields (past its email or phone) shown as columns of the contact list.
LISTED_FIELDS = 3


# Statuses as written mid-sentence ("to unsubscribed"); capitalised where they stand alone.
STATUSES = (
    N_("active"),
    N_("unsubscribed"),
    N_("bounced"),
    N_("complained"),
    N_("blocked"),
)
# The orders contact-svc's listing offers (`sort=`) besides a field's, `<name>` or `-<name>`
# (a name it does not know it refuses, naming `sort`).
SORTS = {
    "key": N_("Email or phone"),
    "created_at": N_("Oldest first"),
    "-created_at": N_("Newest first"),
}
_FIELD_ORDER = re.compile(r"-?[^-].{0,99}")
# contact-svc's cursors are URL-safe base64; those of the pages before, kept in the address,
# are joined by a character base64 never writes.
CURSOR = re.compile(r"[A-Za-z0-9_-]{0,1000}")
CURSORS_APART = "."
BACK_KEPT = 20
CHANGE_LABELS = {
    "created": N_("Created"),
    "updated": N_("Updated"),
    "status_changed": N_("Status changed"),
    "deleted": N_("Deleted"),
}
BULK_ACTIONS = {"change_status": N_("Change status"), "delete": N_("Delete")}
BULK_STATES = {
    "queued": N_("Queued"),
    "sending": N_("Sending"),
    "applying": N_("Applying"),
    "completed": N_("Completed"),
    "failed": N_("Failed"),
}
BULK_OUTCOMES = {
    "changed": N_("Contacts changed"),
    "unchanged": N_("Already with that status"),
    "deleted": N_("Contacts deleted"),
    "not_found": N_("Not in the profile"),
}
FINISHED = ("completed", "failed")
# The field types contact-svc's `value_prefix` searches.
PREFIX_TYPES = ("text", "email", "phone")


@dataclass(frozen=True)
class Part:
    """One service's answer for a part of a page: its value, or why there is none."""

    value: Any = None
    down: ServiceDown | None = None
    refused: Refused | None = None

    @property
    def ok(self) -> bool:
        return self.down is None and self.refused is None


async def parts(*calls: Awaitable[Any]) -> list[Part]:
    """The calls side by side, each answer a Part: a service down or refusing spoils only its
    own part of the page (a key no longer accepted, or a bug, is raised)."""
    answers = await asyncio.gather(*calls, return_exceptions=True)
    found: list[Part] = []
    for answer in answers:
        if isinstance(answer, ServiceDown):
            found.append(Part(down=answer))
        elif isinstance(answer, Refused):
            found.append(Part(refused=answer))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            found.append(Part(answer))
    return found


def _at(*segments: str) -> str:
    """A path of the services' APIs with each segment quoted whole (a key holds `+`, `/`)."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


async def _pickable_profiles(api: Api) -> list[dict[str, Any]]:
    """The profiles contacts are added to (regular and mobile-only), by name."""
    regular, mobile = await asyncio.gather(
        *(
            api.get(PROFILES, "/v1/profiles", type=kind, sort="name", limit=PICKER_LIMIT)
            for kind in ("regular", "mobile_only")
        )
    )
    items: list[dict[str, Any]] = regular["items"] + mobile["items"]
    return items


async def _profile(api: Api, profile_id: str) -> dict[str, Any] | None:
    if not profile_id:
        return None
    found: dict[str, Any] = await api.get(PROFILES, _at("v1", "profiles", profile_id))
    return found


@dataclass(frozen=True)
class FieldInput:
    """One input of a contact's form, from one field of its profile."""

    name: str
    key: str
    type: str
    required: bool
    identity: bool
    value: str

    @property
    def input_id(self) -> str:
        return f"field_{self.key}"


def _as_text(value: Any) -> str:
    """A stored value as its input shows it (`true`/`false` for a yes/no select)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_inputs(profile: Mapping[str, Any], values: Mapping[str, Any]) -> list[FieldInput]:
    """The form's inputs for `profile`'s fields, holding `values` (by field name)."""
    return [
        FieldInput(
            name=spec["name"],
            key=spec["key"],
            type=spec["type"],
            required=bool(spec.get("required")),
            identity=bool(spec.get("identity")),
            value=_as_text(values.get(spec["name"])),
        )
        for spec in profile["fields"]
    ]


def _editable(profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields a contact's page edits: all but its email or phone, which is its key."""
    return [spec for spec in profile["fields"] if not spec.get("identity")]


async def _typed(request: Request, profile: Mapping[str, Any]) -> dict[str, str]:
    """The values the form holds, by field name (inputs are named by the fields' keys, which
    are letters, digits and `_`)."""
    form = await request.form()
    return {
        spec["name"]: str(form.get(f"field_{spec['key']}", "")).strip()
        for spec in profile["fields"]
    }


def _named_errors(refused: Refused, profile: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    """A refusal's errors by input key, for the fields the form shows, and what it says of
    anything else (shown above the form)."""
    keys = {spec["name"]: spec["key"] for spec in profile["fields"]}
    errors = {keys[name]: message for name, message in refused.errors.items() if name in keys}
    elsewhere = [
        f"{name}: {message}" for name, message in refused.errors.items() if name not in keys
    ]
    return errors, "; ".join(elsewhere) if refused.errors else refused.detail


# New Contact


async def _new_contact_page(
    page: Page,
    api: Api,
    profile_id: str,
    *,
    status_code: int = 200,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
    detail: str | None = None,
    down: ServiceDown | None = None,
    added: str | None = None,
) -> HTMLResponse:
    picker, chosen = await parts(_pickable_profiles(api), _profile(api, profile_id))
    profile = chosen.value
    return page.render(
        "contacts_new.html",
        status_code=status_code,
        picker=picker,
        profile_id=profile_id,
        chosen=chosen,
        inputs=field_inputs(profile, values or {}) if profile else [],
        errors=errors or {},
        detail=detail,
        down=down,
        added=added,
        added_url=_contact_url(profile_id, added) if added else None,
    )


@router.get("/contacts/new", response_class=HTMLResponse)
async def new_contact(
    page: PageFor, api: SignedIn, profile_id: str = "", added: str | None = None
) -> HTMLResponse:
    """Pick a profile, then its fields as a form of typed inputs."""
    return await _new_contact_page(page, api, profile_id, added=added)


@router.post("/contacts/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def add_contact(request: Request, page: PageFor, api: SignedIn) -> Response:
    """Save (then the contact's page) or Save and add another (then an empty form)."""
    form = await request.form()
    profile_id = str(form.get("profile_id", ""))
    try:
        profile = await api.get(PROFILES, _at("v1", "profiles", profile_id))
    except ServiceDown as down:
        return await _new_contact_page(page, api, profile_id, status_code=503, down=down)
    values = await _typed(request, profile)
    body = {"fields": {name: value for name, value in values.items() if value}}
    try:
        created = await api.post(CONTACTS, _at("v1", "profiles", profile_id, "contacts"), body)
    except Refused as refused:
        errors, detail = _named_errors(refused, profile)
        return await _new_contact_page(
            page,
            api,
            profile_id,
            status_code=refused.status,
            values=values,
            errors=errors,
            detail=detail or None,
        )
    except ServiceDown as down:
        return await _new_contact_page(
            page, api, profile_id, status_code=503, values=values, down=down
        )
    if form.get("action") == "another":
        query = urlencode({"profile_id": profile_id, "added": created["key"]})
        return RedirectResponse(f"/contacts/new?{query}", status_code=303)
    return RedirectResponse(f"{_contact_url(profile_id, created['key'])}?saved=added", 303)


# List Contacts


@dataclass(frozen=True)
class Listing:
    """What List Contacts shows: a profile's contacts with these filters, in this order, from
    this cursor."""

    profile_id: str = ""
    status: str = ""
    key_prefix: str = ""
    field: str = ""
    value_prefix: str = ""
    sort: str = "key"
    cursor: str = ""
    # The page's number, and the cursors of the pages before it (the first's is none), the
    # nearest last: contact-svc's cursors go forward only, so the way back is kept in the
    # address, BACK_KEPT pages deep.
    page: int = 1
    back: tuple[str, ...] = ()

    def filters(self) -> dict[str, str]:
        """The filters as contact-svc's listing, count and bulk actions take them."""
        chosen = {"status": self.status, "key_prefix": self.key_prefix}
        if self.field and self.value_prefix:
            chosen |= {"field": self.field, "value_prefix": self.value_prefix}
        return {name: value for name, value in chosen.items() if value}

    def url(self, **changes: Any) -> str:
        """This listing's address, with `changes`; from its first page when `cursor` is none."""
        moved = replace(self, **changes)
        params: dict[str, Any] = {
            "profile_id": moved.profile_id,
            **moved.filters(),
            "cursor": moved.cursor,
        }
        if moved.sort != "key":
            params["sort"] = moved.sort
        if moved.cursor and moved.page > 1:
            params |= {"page": moved.page, "back": CURSORS_APART.join(moved.back)}
        return "/contacts?" + urlencode({name: value for name, value in params.items() if value})

    def next_url(self, cursor: str) -> str:
        """The address of the page after this one, which starts at `cursor`."""
        back = (*self.back, self.cursor) if self.cursor else self.back
        return replace(self, page=self.page + 1, back=back[-BACK_KEPT:]).url(cursor=cursor)

    def previous_url(self) -> str | None:
        """The address of the page before this one; None on the first page, or past the
        pages kept (the first page's link is there)."""
        if self.back:
            before = replace(self, page=self.page - 1, back=self.back[:-1])
            return before.url(cursor=self.back[-1])
        return self.url(cursor="") if self.page == 2 else None


def _listing_of(values: Mapping[str, Any], prefix: str = "") -> Listing:
    """A listing from a query or a form's fields (those of the filter named `<prefix><name>`);
    an unknown status or order is left out rather than sent to be refused."""
    found = {
        name: str(values.get(prefix + name, "")).strip()
        for name in ("status", "key_prefix", "field", "value_prefix")
    }
    sort = str(values.get("sort", "key"))
    return Listing(
        profile_id=str(values.get("profile_id", "")),
        status=found["status"] if found["status"] in STATUSES else "",
        key_prefix=found["key_prefix"],
        field=found["field"],
        value_prefix=found["value_prefix"],
        sort=sort if sort in SORTS or _FIELD_ORDER.fullmatch(sort) else "key",
        cursor=cursor if CURSOR.fullmatch(cursor := str(values.get("cursor", ""))) else "",
        page=int(page) if (page := str(values.get("page", ""))).isdigit() and page != "0" else 1,
        back=tuple(
            c for c in str(values.get("back", "")).split(CURSORS_APART) if CURSOR.fullmatch(c) and c
        )[-BACK_KEPT:],
    )


async def _contacts_page(api: Api, listing: Listing) -> dict[str, Any] | None:
    if not listing.profile_id:
        return None
    params: dict[str, Any] = {"limit": PAGE_SIZE, "sort": listing.sort, **listing.filters()}
    if listing.cursor:
        params["cursor"] = listing.cursor
    path = _at("v1", "profiles", listing.profile_id, "contacts")
    found: dict[str, Any] = await api.get(CONTACTS, path, **params)
    return found


@dataclass(frozen=True)
class Total:
    """How many contacts a listing holds; not `exact`: contact-svc's estimate from the
    profile's sample (a filter matching more than a few thousand)."""

    count: int
    exact: bool


async def _total(api: Api, listing: Listing) -> Total | None:
    if not listing.profile_id:
        return None
    path = _at("v1", "profiles", listing.profile_id, "contacts:count")
    counted = await api.get(CONTACTS, path, **listing.filters())
    return Total(int(counted["count"]), bool(counted.get("exact", True)))


@router.get("/contacts", response_class=HTMLResponse)
async def list_contacts(request: Request, page: PageFor, api: SignedIn) -> HTMLResponse:
    """A profile's contacts, searched, filtered and sorted, 50 a page by cursor, with their
    total; rows (or all matching) chosen for a bulk action. One call per part, side by side."""
    listing = _listing_of(request.query_params)
    picker, chosen, listed, counted = await parts(
        _pickable_profiles(api),
        _profile(api, listing.profile_id),
        _contacts_page(api, listing),
        _total(api, listing),
    )
    shown = _editable(chosen.value) if chosen.ok and chosen.value else []
    return page.render(
        "contacts_list.html",
        listing=listing,
        picker=picker,
        chosen=chosen,
        listed=listed,
        counted=counted,
        columns=shown[:LISTED_FIELDS],
        searchable=[spec for spec in shown if spec["type"] in PREFIX_TYPES],
        search_errors=listed.refused.errors if listed.refused else {},
        statuses=STATUSES,
        sorts=SORTS,
        sortable=shown,
        bulk_actions=BULK_ACTIONS,
        contact_url=_contact_url,
    )


# Bulk actions


@dataclass(frozen=True)
class BulkChoice:
    """A bulk action as the list's form asks it: the rows chosen, or all the listing matches."""

    listing: Listing
    action: str
    status: str
    reason: str
    every_match: bool
    keys: list[str] = field(default_factory=list)

    @classmethod
    async def of(cls, request: Request) -> BulkChoice:
        form = await request.form()
        action = str(form.get("action", ""))
        status = str(form.get("new_status", ""))
        return cls(
            listing=_listing_of(form, prefix="filter_"),
            action=action if action in BULK_ACTIONS else "change_status",
            status=status if status in STATUSES else "",
            reason=str(form.get("reason", "")).strip(),
            every_match=form.get("selection") == "all",
            keys=list(dict.fromkeys(str(key) for key in form.getlist("key"))),
        )

    def body(self) -> dict[str, Any]:
        """contact-svc's bulk action request."""
        body: dict[str, Any] = {"action": self.action}
        if self.action == "change_status":
            body["status"] = self.status
            if self.reason:
                body["reason"] = self.reason
        if self.every_match:
            body["filter"] = self.listing.filters()
        else:
            body["keys"] = self.keys
        return body


@router.post("/contacts/bulk", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def bulk_action(request: Request, page: PageFor, api: SignedIn) -> Response:
    """First a confirmation naming how many contacts; once confirmed, the action is started
    at contact-svc and its progress followed."""
    choice = await BulkChoice.of(request)
    profile_id = choice.listing.profile_id
    problem, down = None, None
    if not choice.every_match and not choice.keys:
        problem = "no-rows"
    elif choice.action == "change_status" and not choice.status:
        problem = "no-status"
    elif (await request.form()).get("confirmed") == "yes":
        path = _at("v1", "profiles", profile_id, "contacts:bulk")
        try:
            started = await api.call(CONTACTS, "POST", path, json=choice.body())
        except Refused as refused:
            problem = refused.detail
        except ServiceDown as exc:
            down = exc
        else:
            return RedirectResponse(f"/contacts/bulk/{quote(started.json()['id'])}", 303)
    count: int | None = len(choice.keys)
    if choice.every_match and down is None:
        try:
            total = await _total(api, choice.listing)
            count = total.count if total else None
        except ServiceDown as exc:
            count, down = None, exc
        except Refused as refused:
            count, problem = None, refused.detail
    return page.render(
        "contacts_bulk_confirm.html",
        status_code=422 if problem else 503 if down else 200,
        choice=choice,
        count=count,
        problem=problem,
        down=down,
    )


@router.get("/contacts/bulk/{job_id}", response_class=HTMLResponse)
async def bulk_progress(request: Request, page: PageFor, api: SignedIn, job_id: str) -> Response:
    """A bulk action's state and counts; htmx asks again every second until it ends."""
    (job,) = await parts(api.get(CONTACTS, _at("v1", "bulk-actions", job_id)))
    template = (
        "contacts_bulk_progress.html" if request.headers.get("hx-request") else "contacts_bulk.html"
    )
    return page.render(
        template,
        job_id=job_id,
        job=job,
        finished=FINISHED,
        states=BULK_STATES,
        outcomes=BULK_OUTCOMES,
    )


# A contact's page (after the bulk routes: `/contacts/bulk/<id>` is not a contact)


def _contact_url(profile_id: str, key: str) -> str:
    return f"/contacts/{quote(profile_id, safe='')}/{quote(key, safe='@')}"


async def _trail(api: Api, profile_id: str, key: str, before: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"order": "newest", "limit": TRAIL_PAGE}
    if before:
        params["before_version"] = before
    found: dict[str, Any] = await api.get(
        LOGS, _at("v1", "logs", "contacts", profile_id, key), **params
    )
    return found


async def _segments(api: Api, profile_id: str, key: str) -> list[dict[str, Any]]:
    """The virtual profiles the contact is in (none known to segment-svc yet: none)."""
    try:
        found = await api.get(SEGMENTS, _at("v1", "contacts", profile_id, key, "segments"))
    except Refused as refused:
        if refused.status == 404:
            return []
        raise
    segments: list[dict[str, Any]] = found["segments"]
    return segments


@dataclass(frozen=True)
class ContactForms:
    """What the contact page's two forms hold when shown again after a refusal."""

    values: Mapping[str, Any] | None = None
    errors: Mapping[str, str] = field(default_factory=dict)
    detail: str | None = None
    status: str | None = None
    reason: str = ""
    status_errors: Mapping[str, str] = field(default_factory=dict)
    down: ServiceDown | None = None


async def _contact_page(
    page: Page,
    api: Api,
    profile_id: str,
    key: str,
    *,
    before: int | None = None,
    saved: str | None = None,
    forms: ContactForms | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    forms = forms or ContactForms()
    chosen, contact, trail, segments = await parts(
        _profile(api, profile_id),
        api.get(CONTACTS, _at("v1", "profiles", profile_id, "contacts", key)),
        _trail(api, profile_id, key, before),
        _segments(api, profile_id, key),
    )
    if contact.refused and contact.refused.status == 404:
        status_code = 404
    inputs: list[FieldInput] = []
    if chosen.ok and contact.ok:
        values = forms.values if forms.values is not None else contact.value["fields"]
        inputs = field_inputs({"fields": _editable(chosen.value)}, values)
    return page.render(
        "contacts_contact.html",
        status_code=status_code,
        profile_id=profile_id,
        key=key,
        url=_contact_url(profile_id, key),
        list_url=Listing(profile_id=profile_id).url(),
        chosen=chosen,
        contact=contact,
        trail=trail,
        segments=segments,
        inputs=inputs,
        forms=forms,
        saved=saved,
        statuses=STATUSES,
        changes=CHANGE_LABELS,
    )


@router.get("/contacts/{profile_id}/{key:path}", response_class=HTMLResponse)
async def show_contact(
    page: PageFor,
    api: SignedIn,
    profile_id: str,
    key: str,
    before: Annotated[int | None, Query(ge=1)] = None,
    saved: str | None = None,
) -> HTMLResponse:
    """A contact: its fields and status to edit, its audit trail newest first (paged), and
    the virtual profiles it is in."""
    return await _contact_page(page, api, profile_id, key, before=before, saved=saved)


@router.post(
    "/contacts/{profile_id}/{key:path}", response_class=HTMLResponse, dependencies=[CsrfChecked]
)
async def change_contact(
    request: Request, page: PageFor, api: SignedIn, profile_id: str, key: str
) -> Response:
    """Save the fields (an empty input clears its field), or change the status with a
    reason."""
    form = await request.form()
    profile: dict[str, Any] | None = None  # the fields' types and names: for the fields only
    if form.get("action") == "status":
        status, reason = str(form.get("status", "")), str(form.get("reason", "")).strip()
        body: dict[str, Any] = {"status": status} | ({"status_reason": reason} if reason else {})
        forms = ContactForms(status=status, reason=reason)
    else:
        try:
            profile = await api.get(PROFILES, _at("v1", "profiles", profile_id))
        except ServiceDown as down:
            forms = ContactForms(down=down)
            return await _contact_page(page, api, profile_id, key, forms=forms, status_code=503)
        values = await _typed(request, profile)
        body = {"fields": {spec["name"]: values[spec["name"]] for spec in _editable(profile)}}
        forms = ContactForms(values=values)
    try:
        await api.call(
            CONTACTS, "PATCH", _at("v1", "profiles", profile_id, "contacts", key), json=body
        )
    except Refused as refused:
        if profile is None:
            forms = replace(forms, status_errors=refused.errors or {"status": refused.detail})
        else:
            named, detail = _named_errors(refused, profile)
            forms = replace(forms, errors=named, detail=detail or None)
        return await _contact_page(
            page, api, profile_id, key, forms=forms, status_code=refused.status
        )
    except ServiceDown as down:
        forms = replace(forms, down=down)
        return await _contact_page(page, api, profile_id, key, forms=forms, status_code=503)
    saved = "fields" if profile is not None else "status"
    return RedirectResponse(f"{_contact_url(profile_id, key)}?saved={saved}", status_code=303)
