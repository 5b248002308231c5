"""What every page shares: the session from its cookie, sign-in required, CSRF checks on
state-changing requests, the templates with the person's language, and the seven sections."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates

from console import i18n
from console.backends import Api, Backends, Refused
from console.sessions import COOKIE, Session, SessionSeal
from console.settings import ConsoleSettings

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

# Profile types and field types as people read them (translated like any message).
TYPE_LABELS = {"regular": "Regular", "virtual": "Virtual", "mobile_only": "Mobile Only"}
FIELD_TYPES = ("text", "number", "date", "boolean", "email", "phone")

# The sections of Manage Contacts, with the seed's names, in the seed's order.
SECTIONS = [
    ("new-profile", "New Profile", "/profiles/new"),
    ("profiles", "List Profiles", "/profiles"),
    ("virtual-profile", "Virtual Profile", "/virtual-profiles"),
    ("new-contact", "New Contact", "/contacts/new"),
    ("contacts", "List Contacts", "/contacts"),
    ("import", "Import Contacts", "/imports/new"),
    ("logs", "Logs", "/logs"),
]


def section_of(path: str) -> str | None:
    """The section a page belongs to: the one at that address, else the one whose pages live
    under it (`/contacts/...` is List Contacts', `/imports/...` Import Contacts')."""
    exact = {address: key for key, _, address in SECTIONS}
    if path in exact:
        return exact[path]
    roots = {address.removesuffix("/new"): key for key, _, address in reversed(SECTIONS)}
    roots |= {address: key for key, _, address in SECTIONS if address in roots}
    for root, key in roots.items():
        if path.startswith(root + "/"):
            return key
    return None


class SignInNeeded(Exception):
    """The request needs a signed-in session: it goes to sign in, then back."""


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token."""


def session_of(request: Request) -> Session:
    """The request's session (its cookie opened), or a new anonymous one."""
    seal: SessionSeal = request.app.state.seal
    opened = seal.open(request.cookies.get(COOKIE))
    if opened is None:
        opened = Session.anonymous(_preferred_locale(request))
    return opened


def _preferred_locale(request: Request) -> str:
    languages = request.headers.get("accept-language", "")
    return "es" if languages.lower().startswith("es") else "en"


CurrentSession = Annotated[Session, Depends(session_of)]


def signed_in(request: Request, session: CurrentSession) -> Api:
    """The services as the signed-in person may call them."""
    if session.api_key is None:
        raise SignInNeeded()
    backends: Backends = request.app.state.backends
    return backends.as_key(session.api_key)


SignedIn = Annotated[Api, Depends(signed_in)]


async def csrf_checked(request: Request, session: CurrentSession) -> None:
    """State-changing requests carry the session's token, in the form or a header (htmx)."""
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    if not session.accepts(token):
        raise CsrfRefused()


CsrfChecked = Depends(csrf_checked)


def keep_session(response: Response, request: Request, session: Session) -> Response:
    """Set the (sealed) session cookie on `response`."""
    settings: ConsoleSettings = request.app.state.settings
    seal: SessionSeal = request.app.state.seal
    response.set_cookie(
        COOKIE,
        seal.seal(session),
        max_age=int(settings.console_session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=settings.console_secure_cookies,
        path="/",
    )
    return response


@dataclass(frozen=True)
class Page:
    """Renders pages for one request, in its session's language."""

    request: Request
    session: Session

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        locale = self.session.locale
        response = TEMPLATES.TemplateResponse(
            self.request,
            template,
            {
                "_": i18n.translator(locale),
                "locale": locale,
                "number": lambda value: i18n.number(value, locale),
                "when": lambda value: i18n.when(value, locale),
                "day_label": lambda value: i18n.day(value, locale),
                "session": self.session,
                "sections": SECTIONS,
                "current_section": section_of(self.request.url.path),
                "type_labels": TYPE_LABELS,
                "field_types": FIELD_TYPES,
                **context,
            },
            status_code=status_code,
        )
        keep_session(response, self.request, self.session)
        return response


def page_of(request: Request, session: CurrentSession) -> Page:
    return Page(request, session)


PageFor = Annotated[Page, Depends(page_of)]


def sign_in_redirect(request: Request) -> Response:
    target = "/sign-in?next=" + quote(request.url.path)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# A profile id is passed on in the services' paths: only what is safe in one path segment.
PROFILE_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


def profile_id_of(profile_id: str) -> str:
    """A profile id as the services make them; anything else is no profile, not a path to pass
    on to them."""
    if not PROFILE_ID.match(profile_id):
        raise Refused(404, f"profile {profile_id[:40]} does not exist")
    return profile_id


ProfileId = Annotated[str, Depends(profile_id_of)]


async def stream_through(
    api: Api, service: str, path: str, filename: str, **params: str
) -> StreamingResponse:
    """A service's CSV download passed on as it comes, chunk by chunk (never whole in memory).
    The service's answer is checked before the download starts, so a refusal or an outage is
    still a page; an outage in the middle can only cut the file short."""
    response = await api.stream(service, path, **params)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        finally:
            await response.aclose()

    return StreamingResponse(
        chunks(),
        media_type=response.headers.get("content-type", "text/csv; charset=utf-8"),
        headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
    )
