"""The services' public APIs, as the console calls them: one httpx client per service, each
call made with the signed-in person's key and a deadline. What a service answers is told
apart: a refusal (4xx, its problem body), a key no longer accepted, a service down or slow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from console.settings import ConsoleSettings
from contacts_shared import tracing


class ServiceDown(Exception):
    """The service did not answer in time, or answered with a server error."""

    def __init__(self, service: str, slow: bool) -> None:
        super().__init__(service)
        self.service, self.slow = service, slow


class SignedOut(Exception):
    """The service no longer accepts the session's key."""


@dataclass
class Refused(Exception):
    """A 4xx answer: its problem's detail and the fields it names (`field` -> message)."""

    status: int
    detail: str
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, response: httpx.Response) -> Refused:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        errors = {
            str(e.get("field", "")): str(e.get("message", "")) for e in problem.get("errors", [])
        }
        return cls(response.status_code, str(problem.get("detail", response.reason_phrase)), errors)


# What each service is called in the messages people read.
PROFILES, CONTACTS, IMPORTS, SEGMENTS, LOGS = "profiles", "contacts", "imports", "segments", "logs"


class Backends:
    """The console's clients, one per service, shared by every request."""

    def __init__(
        self, settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None
    ):
        urls = {
            PROFILES: settings.profile_svc_url,
            CONTACTS: settings.contact_svc_url,
            IMPORTS: settings.import_svc_url,
            SEGMENTS: settings.segment_svc_url,
            LOGS: settings.log_svc_url,
        }
        timeout = httpx.Timeout(settings.console_api_timeout_seconds)
        self.clients = {
            name: httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport)
            for name, url in urls.items()
        }

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def as_key(self, api_key: str) -> Api:
        return Api(self, api_key)


@dataclass(frozen=True)
class Api:
    """The services, called with one person's key."""

    backends: Backends
    api_key: str

    async def call(self, service: str, method: str, path: str, **request: Any) -> httpx.Response:
        """The answer to a call, if the service took it (2xx); else what went wrong, raised."""
        return await self._send(service, method, path, stream=False, **request)

    async def stream(self, service: str, path: str, **params: Any) -> httpx.Response:
        """A GET whose body is still to be read (`aiter_bytes`, then `aclose`), checked as
        `call` checks an answer before any of the body is read."""
        return await self._send(service, "GET", path, stream=True, params=params)

    async def _send(
        self, service: str, method: str, path: str, *, stream: bool, **request: Any
    ) -> httpx.Response:
        client = self.backends.clients[service]
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            **tracing.current_context(),  # the page's trace goes on in the service
            **request.pop("headers", {}),
        }
        built = client.build_request(method, path, headers=headers, **request)
        try:
            response = await client.send(built, stream=stream)
        except httpx.TimeoutException as exc:
            raise ServiceDown(service, slow=True) from exc
        except httpx.TransportError as exc:
            raise ServiceDown(service, slow=False) from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
        if response.status_code == 401:
            raise SignedOut()
        if response.status_code >= 500:
            raise ServiceDown(service, slow=response.status_code == 503)
        if response.status_code >= 400:
            raise Refused.of(response)
        return response

    async def get(self, service: str, path: str, **params: Any) -> Any:
        return (await self.call(service, "GET", path, params=params)).json()

    async def post(self, service: str, path: str, body: Any) -> Any:
        return (await self.call(service, "POST", path, json=body)).json()


T = TypeVar("T")


async def or_outage(call: Awaitable[T]) -> T | ServiceDown:
    """The call's answer, or its service down: the page says so in the part it feeds."""
    try:
        return await call
    except ServiceDown as down:
        return down


async def side_by_side(*calls: Awaitable[Any]) -> list[Any]:
    """Each call's answer, made side by side, or the outage or refusal it met (a page shows
    those where the answer would be); a signed-out key or anything else is raised."""
    answers = await asyncio.gather(*calls, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, ServiceDown | Refused):
            raise answer
    return answers
