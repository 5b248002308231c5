"""Every request is answered by its deadline, and readiness by its timeout: a server or broker
that does not answer shows as 503, never as a request that hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse

from contacts_shared.settings import ServiceSettings
from contacts_shared.web import create_service_app

router = APIRouter()
never = asyncio.Event()  # a server that does not answer


@router.get("/v1/hangs")
async def hangs() -> dict[str, str]:
    await never.wait()
    return {"status": "answered"}


@router.get("/v1/quick")
async def quick() -> dict[str, str]:
    return {"status": "answered"}


@router.get("/v1/streams")
async def streams() -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        for row in range(5):
            await asyncio.sleep(0.1)  # the whole stream outlasts the deadline
            yield f"{row}\n".encode()

    return StreamingResponse(rows(), media_type="text/csv")


def service(**settings: object) -> FastAPI:
    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        async def wedged() -> None:
            await never.wait()

        app.state.readiness_checks["mongodb"] = wedged
        yield

    return create_service_app(
        ServiceSettings.model_validate(settings),
        title="t",
        description="d",
        routers=[router],
        resources=resources,
    )


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


async def test_a_request_past_its_deadline_is_answered_503_with_retry_after() -> None:
    async with client(service(request_deadline_seconds=0.3)) as api:
        started = time.monotonic()
        late = await api.get("/v1/hangs")
        took = time.monotonic() - started
        assert late.status_code == 503
        assert late.headers["content-type"].startswith("application/problem+json")
        assert int(late.headers["retry-after"]) > 0
        assert "deadline" in late.json()["detail"]
        assert 0.3 <= took < 3
        assert (await api.get("/v1/quick")).json() == {"status": "answered"}


async def test_a_response_started_in_time_streams_past_the_deadline() -> None:
    async with client(service(request_deadline_seconds=0.2)) as api:
        streamed = await api.get("/v1/streams")
    assert streamed.status_code == 200
    assert streamed.text == "0\n1\n2\n3\n4\n"


async def test_readiness_fails_when_checks_do_not_answer_in_time_and_says_so_in_time() -> None:
    app = service(readiness_timeout_seconds=1.0)
    async with app.router.lifespan_context(app), client(app) as api:
        app.state.readiness_checks["kafka"] = app.state.readiness_checks["mongodb"]
        started = time.monotonic()
        ready = await api.get("/readyz")
        took = time.monotonic() - started
    assert ready.status_code == 503
    assert ready.json()["errors"] == [
        {"field": name, "message": "no answer within 1s"} for name in ("mongodb", "kafka")
    ]
    assert took < 1.9  # side by side: one timeout (1 s), not one per check (2 s)
