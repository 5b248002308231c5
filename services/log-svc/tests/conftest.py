"""log-svc fixtures shared by its integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

Answered = Callable[[httpx.AsyncClient, str, Callable[[Any], bool]], Awaitable[dict[str, Any]]]


@pytest.fixture
def eventually() -> Answered:
    """GETs `url` until it answers 200 with a body `check` accepts (within 30 s): the body."""

    async def answered(
        api: httpx.AsyncClient, url: str, check: Callable[[Any], bool]
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            response = await api.get(url)
            if response.status_code == 200 and check(body := response.json()):
                return dict(body)
            assert asyncio.get_running_loop().time() < deadline, response.text
            await asyncio.sleep(0.1)

    return answered
