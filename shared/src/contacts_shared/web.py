"""FastAPI app factory shared by the services: health, readiness, metrics, JSON logs with
request and account ids, RFC 9457 problem+json errors, bearer API keys, and API docs that
load nothing from outside the service."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import fastapi_standalone_docs
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, StringConstraints
from pymongo.errors import DuplicateKeyError, PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contacts_shared import tracing
from contacts_shared.faults import is_outage
from contacts_shared.kafka import EventPublisher
from contacts_shared.logs import account_id_var, configure_logging, request_id_var
from contacts_shared.mongo import Database, StaleDocument, round_trip
from contacts_shared.runtime import settle_heap
from contacts_shared.settings import ServiceSettings
from contacts_shared.topics.gate import TopicsNotReady

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Swagger UI, ReDoc and FastAPI's favicon as the pinned fastapi-standalone-docs ships them
# (swagger/, redoc/, fastapi/), served by each service under DOCS_ASSETS_URL.
DOCS_ASSETS = Path(fastapi_standalone_docs.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"

REQUESTS = Counter(
    "http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency", ["service", "method", "route"]
)


class Problem(HTTPException):
    """An RFC 9457 problem; raise it anywhere in a request to answer with it.

    An HTTPException, so FastAPI lets it through even from inside body parsing.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.status = status
        self.title = title
        self.errors = errors or []

    def response(self, instance: str | None = None) -> JSONResponse:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return JSONResponse(
            body, status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers
        )


class InFlightLimit:
    """At most `limit` requests of one kind at once in this process; the next is answered 429
    at once, so that a slow dependency makes clients back off instead of piling up requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.current >= self.limit:
            raise Problem(
                429,
                "Too Many Requests",
                f"{self.limit} such requests are already in progress; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.current += 1
        try:
            yield
        finally:
            self.current -= 1


def _field_path(loc: Sequence[int | str]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts)


def validation_problem(exc: RequestValidationError) -> Problem:
    if any(error["type"] == "json_invalid" for error in exc.errors()):
        position = exc.errors()[0]["loc"][-1]
        return Problem(
            400,
            "Malformed JSON",
            f"The request body is not valid JSON (at character {position})",
            [{"field": "body", "message": "JSON decode error"}],
        )
    errors = [
        {"field": _field_path(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    detail = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return Problem(422, "Invalid request", detail, errors)


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, whether or not they declare a length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = Problem(
            413, "Payload Too Large", f"The request body exceeds {self.max_bytes} bytes"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large.response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# Probes and scrapes, every few seconds, and the docs' assets: no trace of them.
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics", DOCS_ASSETS_URL)


def unavailable(detail: str, *, instance: str) -> Response:
    """503 for a request a server or broker could not serve in time: the client retries."""
    retry = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}
    return Problem(503, "Service Unavailable", detail, headers=retry).response(instance=instance)


class Deadline:
    """Answers every request by `seconds` after it arrived: a handler still waiting then for a
    server or broker is cancelled and the client gets 503 with `Retry-After`. The deadline
    ends once the response has started: a streamed export may run on."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        async with asyncio.timeout(self.seconds) as deadline:

            async def send_started(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    deadline.reschedule(None)
                await send(message)

            try:
                await self.app(scope, receive, send_started)
            except asyncio.CancelledError:
                if started or not deadline.expired():
                    raise
        if deadline.expired() and not started:
            log.warning("request deadline passed", extra={"deadline_seconds": self.seconds})
            late = unavailable(
                f"No answer within the request deadline of {self.seconds:g}s: a server or "
                "broker is slow or away; retry shortly",
                instance=scope["path"],
            )
            await late(scope, receive, send)


async def require_json(request: Request) -> None:
    """Routes with a JSON body refuse other content types with 415."""
    if request.method not in {"POST", "PUT", "PATCH"}:
        return
    if (
        request.headers.get("content-length", "0") == "0"
        and "transfer-encoding" not in request.headers
    ):
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(
            415,
            "Unsupported Media Type",
            f"Send the body as application/json, not {media_type or 'no content type'}",
        )


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route and its dependencies take, a query model's fields too."""
    names: set[str] = set()
    for param in dependant.query_params:
        model = param.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names |= {f.alias or name for name, f in model.model_fields.items()}
        else:
            names.add(param.alias)
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is refused with 422 naming it, not ignored:
    a misspelt filter would otherwise answer as if no filter were given."""
    dependant: Dependant | None = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _query_names(dependant))
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "not a parameter of this request",
                    "input": request.query_params[name],
                }
                for name in unknown
            ]
        )


def current_account(request: Request) -> str:
    """The account of the request's `Authorization: Bearer <api key>`; 401 otherwise."""
    settings: ServiceSettings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        for key, account in settings.api_keys.items():
            if hmac.compare_digest(key.encode(), token.strip().encode()):
                account_id_var.set(account)
                request.state.account_id = account
                return account
    raise Problem(401, "Unauthorized", "Send a valid API key as 'Authorization: Bearer <key>'")


AccountId = Annotated[str, Depends(current_account)]

MAX_BATCH_PROFILES = 100  # a console page of profiles
# The `profile_id` query parameter of the routes that answer for a page of profiles at once.
ProfileIds = Annotated[
    list[Annotated[str, StringConstraints(max_length=100)]],
    Query(
        min_length=1,
        max_length=MAX_BATCH_PROFILES,
        description=f"profile ids, repeated (at most {MAX_BATCH_PROFILES})",
    ),
]


def ready_when_reachable(app: FastAPI, database: Database, publisher: EventPublisher) -> None:
    """Readiness of an API: its database answers a document written and read back (a wedged
    server answers pings), and the topics of its publisher and consumers were found as
    declared once Kafka first answered (`topics.gate`). Not Kafka itself afterwards: every API
    serves reads, and writes kept in MongoDB with their events, while the broker is away (what
    must reach Kafka at once answers 503); its consumers and relays wait the outage out
    (`contacts_waiting_on_outage`, an alert), they do not take reads off the pod."""
    instance = f"{app.state.settings.service_name}:{socket.gethostname()}:{os.getpid()}"
    app.state.readiness_checks.update(
        mongodb=lambda: round_trip(database, instance), topics=publisher.topics.ensure
    )


def serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc, public like /openapi.json, with every script, style and
    image served by the service itself: they work where the network is closed."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/fastapi/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/fastapi/favicon.png",
            with_google_fonts=False,
        )

    # The package's ReDoc asks for its logo at the page's own path plus /logo-mini.svg
    # (upstream's asks Redocly's CDN).
    @app.get("/redoc/logo-mini.svg", include_in_schema=False)
    async def redoc_logo() -> FileResponse:
        return FileResponse(DOCS_ASSETS / "redoc" / "logo-mini.svg", media_type="image/svg+xml")


ReadinessCheck = Callable[[], Awaitable[None]]
Resources = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    resources: Resources,
    upload_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """A FastAPI app with the platform's cross-cutting behaviour; `resources` opens and closes
    the service's clients and registers readiness checks in `app.state.readiness_checks`.
    Bodies are JSON, except on `upload_routers` (multipart forms, checked by their routes)."""
    configure_logging(settings.service_name, settings.log_level)
    tracing.configure(settings.service_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources(app):
            settle_heap()
            log.info("service started")
            yield
        log.info("service stopped")

    # FastAPI's own /docs and /redoc load their scripts from a CDN: serve_docs adds ours.
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    # Whatever the service registers (`ready_when_reachable`).
    app.state.readiness_checks = {}

    @app.exception_handler(Problem)
    async def handle_problem(request: Request, exc: Problem) -> Response:
        return exc.response(instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def handle_validation(request: Request, exc: RequestValidationError) -> Response:
        return validation_problem(exc).response(instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http(request: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        return Problem(exc.status_code, title, str(exc.detail)).response(request.url.path)

    @app.exception_handler(DuplicateKeyError)
    async def handle_duplicate(request: Request, exc: DuplicateKeyError) -> Response:
        # Services name the value where they can; this answers any unique index they missed.
        problem = Problem(409, "Conflict", "A record with the same unique value already exists")
        return problem.response(instance=request.url.path)

    @app.exception_handler(StaleDocument)
    async def handle_stale(request: Request, exc: StaleDocument) -> Response:
        problem = Problem(409, "Conflict", "The record kept changing under this request; retry")
        return problem.response(instance=request.url.path)

    @app.exception_handler(PyMongoError)
    @app.exception_handler(KafkaError)
    async def handle_server_error(request: Request, exc: Exception) -> Response:
        if is_outage(exc):
            log.warning("a backing server is unavailable", extra={"error": repr(exc)})
            server = "Kafka" if isinstance(exc, KafkaError) else "MongoDB"
            detail = f"{server} is unreachable; retry shortly"
            if isinstance(exc, TopicsNotReady):  # the log and /readyz say which
                detail = "Kafka's topics are not ready; retry shortly"
            return unavailable(detail, instance=request.url.path)
        return await handle_unexpected(request, exc)

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        problem = Problem(500, "Internal Server Error", "An unexpected error occurred")
        return problem.response(instance=request.url.path)

    # Inside the request-context middleware: its task group would wrap our 413 in a group;
    # the deadline innermost, so the 503 it answers is logged and counted like any answer.
    app.add_middleware(Deadline, seconds=settings.request_deadline_seconds)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request_id_var.set(request_id)
        account_id_var.set(None)
        started = time.perf_counter()
        response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = getattr(request.scope.get("route"), "path", "unmatched")
        REQUESTS.labels(settings.service_name, request.method, route, response.status_code).inc()
        LATENCY.labels(settings.service_name, request.method, route).observe(elapsed)
        response.headers["x-request-id"] = request_id
        log.info(
            "request",
            extra={
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
                "account_id": getattr(request.state, "account_id", None),
            },
        )
        return response

    # Outermost: the request's server span holds everything above, its log line too.
    app.add_middleware(tracing.ServerSpans, skip=UNTRACED_PATHS)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        """What the service cannot serve without answers in time: a real round trip to each
        (its database; its topics, verified once). The checks run side by side, so the answer
        comes within the readiness timeout whatever is away."""
        checks = app.state.readiness_checks
        outcomes = await asyncio.gather(*(_failure(check) for check in checks.values()))
        failed = {name: reason for name, reason in zip(checks, outcomes, strict=True) if reason}
        if failed:
            errors = [{"field": name, "message": reason} for name, reason in failed.items()]
            return Problem(503, "Not Ready", f"Failing: {', '.join(failed)}", errors).response()
        return JSONResponse({"status": "ready", "checks": list(checks)})

    async def _failure(check: ReadinessCheck) -> str | None:
        """Why the check failed, or None."""
        try:
            async with asyncio.timeout(settings.readiness_timeout_seconds):
                await check()
        except TimeoutError:
            return f"no answer within {settings.readiness_timeout_seconds:g}s"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return repr(exc)
        return None

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    serve_docs(app)
    for router in routers:
        app.include_router(
            router, dependencies=[Depends(require_json), Depends(refuse_unknown_query)]
        )
    for router in upload_routers:
        app.include_router(router)
    return app
