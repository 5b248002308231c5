"""console fixtures: the app served in-process, the services replaced at the HTTP boundary."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from console.app import create_app
from console.backends import Backends
from console.settings import ConsoleSettings

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeServices:
    """Answers the console's calls by (service port, method, path): a response, or an
    exception to raise (a service down). Unlisted calls answer 404. Each call is recorded."""

    routes: dict[tuple[int, str, str], httpx.Response | Exception | Handler] = field(
        default_factory=dict
    )
    calls: list[httpx.Request] = field(default_factory=list)

    def on(self, port: int, method: str, path: str, answer: Any) -> None:
        self.routes[(port, method, path)] = answer

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        assert request.url.port is not None
        answer = self.routes.get((request.url.port, request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"detail": "not found"})
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def console(services: FakeServices) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the console (cookies kept, redirects not followed)."""
    settings = ConsoleSettings(environment="test")
    backends = Backends(settings, transport=httpx.MockTransport(services.handle))
    app = create_app(settings, backends)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield client


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture
def csrf() -> Callable[[str], str]:
    """The CSRF token a page's forms carry."""
    return csrf_of


@pytest.fixture
def signed_in(console: httpx.AsyncClient, services: FakeServices) -> Callable[..., Any]:
    """Signs the console's client in with a key profile-svc accepts; the page's CSRF token."""

    async def sign_in(key: str = "good-key") -> str:
        services.on(8101, "GET", "/v1/profiles", httpx.Response(200, json=PROFILE_PAGE))
        form = await console.get("/sign-in")
        answer = await console.post(
            "/sign-in", data={"api_key": key, "next": "/profiles", "csrf_token": csrf_of(form.text)}
        )
        assert answer.status_code == 303, answer.text
        return csrf_of((await console.get("/profiles/new")).text)

    return sign_in


PROFILE_PAGE: dict[str, Any] = {
    "items": [
        {
            "id": "p1",
            "name": "Clientes",
            "description": "Tienda",
            "type": "regular",
            "created_at": "2026-11-02T10:00:00+00:00",
        },
        {
            "id": "v1",
            "name": "Santiago",
            "description": None,
            "type": "virtual",
            "created_at": "2026-11-03T10:00:00+00:00",
        },
    ],
    "total": 2,
    "next_cursor": None,
}
