"""console: the web console for marketers (issue 22), a backend-for-frontend over the services'
public APIs. Run with `uvicorn --factory console.app:create_app` (port 8100 in `make run`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from console.backends import PROFILES, Backends, Refused, ServiceDown, SignedOut
from console.contact_pages import router as contact_router
from console.import_pages import router as import_router
from console.log_pages import router as log_router
from console.profile_pages import router as profile_router
from console.sessions import COOKIE, LOCALES, Session, SessionSeal
from console.settings import ConsoleSettings
from console.virtual_pages import router as virtual_router
from console.web import (
    CsrfChecked,
    CsrfRefused,
    CurrentSession,
    Page,
    PageFor,
    SignInNeeded,
    keep_session,
    session_of,
    sign_in_redirect,
)
from contacts_shared import tracing
from contacts_shared.logs import configure_logging


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never another host) to go back to after signing in."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/profiles"


def create_app(
    settings: ConsoleSettings | None = None, backends: Backends | None = None
) -> FastAPI:
    settings = settings or ConsoleSettings()
    if settings.environment in ("staging", "production") and not settings.console_session_key:
        raise ValueError("CONTACTS_CONSOLE_SESSION_KEY must be set outside local and test")
    configure_logging(settings.service_name, settings.log_level)
    tracing.configure(settings.service_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.backends.aclose()

    app = FastAPI(
        title="console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    # A page's server span: the services' own spans of the calls it makes are its children.
    app.add_middleware(tracing.ServerSpans, skip=("/healthz", "/readyz", "/static"))
    app.state.settings = settings
    app.state.backends = backends or Backends(settings)
    app.state.seal = SessionSeal(
        settings.console_session_key, max_age_seconds=int(settings.console_session_hours * 3600)
    )
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for router in (profile_router, virtual_router, contact_router, import_router, log_router):
        app.include_router(router)

    @app.exception_handler(SignInNeeded)
    async def needs_sign_in(request: Request, exc: SignInNeeded) -> Response:
        return sign_in_redirect(request)

    @app.exception_handler(SignedOut)
    async def key_refused(request: Request, exc: SignedOut) -> Response:
        response = sign_in_redirect(request)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return Page(request, session_of(request)).render("refused.html", status_code=403)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        page = Page(request, session_of(request))
        return page.render("refused_by_service.html", status_code=exc.status, refused=exc)

    @app.exception_handler(ServiceDown)
    async def service_down(request: Request, exc: ServiceDown) -> Response:
        return Page(request, session_of(request)).render(
            "unavailable.html", status_code=503, down=exc
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """An address that is no page, a method it does not take, a body that cannot be
        read: said in a page of the console, never as JSON."""
        page = Page(request, session_of(request))
        response = page.render("error.html", status_code=exc.status_code, status=exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def unusable_input(request: Request, exc: RequestValidationError) -> Response:
        """A value in the address or form that no page of the console makes (a link edited
        by hand): a page naming it."""
        named = sorted({str(error["loc"][-1]) for error in exc.errors() if error.get("loc")})
        page = Page(request, session_of(request))
        return page.render("error.html", status_code=422, status=422, named=named)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, str]:
        """Ready as soon as it serves: the console holds no state, and each page says in
        itself which service is away while the rest of it works (so a service down must not
        take the whole console out of its load balancer)."""
        return {"status": "ready"}

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/profiles", status_code=303)

    @app.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_form(page: PageFor, next: str | None = None) -> HTMLResponse:
        return page.render("sign_in.html", next=_safe_next(next), error=None)

    @app.post("/sign-in", response_class=HTMLResponse, dependencies=[CsrfChecked])
    async def sign_in(
        request: Request,
        session: CurrentSession,
        api_key: Annotated[str, Form(max_length=500)],
        next: Annotated[str, Form()] = "/profiles",
    ) -> Response:
        """Accept the key if profile-svc does (the account is the key's)."""
        key = api_key.strip()
        try:
            await request.app.state.backends.as_key(key).get(PROFILES, "/v1/profiles", limit=1)
        except (SignedOut, Refused):
            page = Page(request, session)
            return page.render("sign_in.html", status_code=401, next=next, error="refused")
        response = RedirectResponse(_safe_next(next), status_code=303)
        return keep_session(response, request, session.signed_in_with(key))

    @app.post("/sign-out", dependencies=[CsrfChecked])
    async def sign_out(request: Request, session: CurrentSession) -> Response:
        response = RedirectResponse("/sign-in", status_code=303)
        return keep_session(response, request, Session.anonymous(session.locale))

    @app.post("/locale", dependencies=[CsrfChecked])
    async def choose_locale(
        request: Request,
        session: CurrentSession,
        locale: Annotated[str, Form()],
        back: Annotated[str, Form()] = "/profiles",
    ) -> Response:
        chosen = locale if locale in LOCALES else "en"
        response = RedirectResponse(_safe_next(back), status_code=303)
        return keep_session(response, request, session.speaking(chosen))

    return app
