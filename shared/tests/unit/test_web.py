"""Web helpers and the app factory, without a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from contacts_shared.settings import ServiceSettings
from contacts_shared.web import AccountId, InFlightLimit, Problem, create_service_app


def test_requests_beyond_the_in_flight_limit_are_refused_until_one_ends() -> None:
    limit = InFlightLimit(2)
    with limit.slot(), limit.slot():
        with pytest.raises(Problem) as refused, limit.slot():
            pass
        assert refused.value.status == 429
        assert refused.value.headers == {"Retry-After": "1"}
    with limit.slot():
        assert limit.current == 1
    assert limit.current == 0


class _Links(HTMLParser):
    """The addresses a page loads: each `src` and `href`."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def _service_with_keys() -> FastAPI:
    """An app of the factory whose one route needs an API key."""

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        yield

    router = APIRouter()

    @router.get("/v1/things")
    async def things(account: AccountId, colour: str | None = None) -> dict[str, str]:
        return {"account": account, "colour": colour or "any"}

    return create_service_app(
        ServiceSettings(api_keys={"key": "acct"}),
        title="things-svc",
        description="Things.",
        routers=[router],
        resources=resources,
    )


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"text/javascript", "text/css", "image/png"}),
        ("/redoc", {"text/javascript", "image/png"}),
    ],
)
async def test_docs_pages_load_every_asset_from_the_service_itself_without_an_api_key(
    page: str, assets: set[str]
) -> None:
    transport = httpx.ASGITransport(app=_service_with_keys())
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/v1/things")).status_code == 401  # the API needs a key
        answer = await client.get(page)
        assert answer.status_code == 200
        assert "things-svc" in answer.text
        assert "/openapi.json" in answer.text  # the spec the page renders
        urls = _links(answer.text)
        assert urls, answer.text
        assert all(url.startswith("/docs-assets/") for url in urls), urls
        served = {}
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url
            served[url] = asset.headers["content-type"].split(";")[0]
        assert set(served.values()) == assets, served
        spec = await client.get("/openapi.json")
        assert "/v1/things" in spec.json()["paths"]
        assert page not in spec.json()["paths"]


async def test_redoc_takes_its_logo_from_the_service_not_redoclys_cdn() -> None:
    transport = httpx.ASGITransport(app=_service_with_keys())
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        bundle = await client.get("/docs-assets/redoc/redoc.standalone.js")
        logo = await client.get("/redoc/logo-mini.svg")
    assert bundle.status_code == 200
    assert "cdn.redoc.ly" not in bundle.text
    assert 'window.location.pathname+"/logo-mini.svg"' in bundle.text
    assert logo.status_code == 200
    assert logo.headers["content-type"] == "image/svg+xml"
    assert logo.text.lstrip().startswith("<svg")


async def test_a_query_parameter_the_route_does_not_take_is_refused_naming_it() -> None:
    transport = httpx.ASGITransport(app=_service_with_keys())
    headers = {"Authorization": "Bearer key"}
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=headers) as c:
        taken = await c.get("/v1/things", params={"colour": "red"})
        assert taken.json() == {"account": "acct", "colour": "red"}
        refused = await c.get("/v1/things", params={"colour": "red", "color": "red", "sise": 2})
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in refused.json()["errors"]] == ["color", "sise"]
        assert (await c.get("/healthz", params={"probe": 1})).status_code == 200
