"""A started service stops walking its startup heap and collects young garbage less often."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI

from contacts_shared.runtime import YOUNG_GENERATION_THRESHOLD
from contacts_shared.settings import ServiceSettings
from contacts_shared.web import create_service_app


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@asynccontextmanager
async def no_resources(app: FastAPI) -> AsyncIterator[None]:
    yield


async def test_a_started_service_freezes_its_startup_heap(collector_restored: None) -> None:
    gc.unfreeze()
    app = create_service_app(
        ServiceSettings(), title="t", description="d", routers=[], resources=no_resources
    )
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
