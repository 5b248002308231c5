"""segment-svc's HTTP API: virtual profiles' members, statistics and previews. The stream
worker (`segment_svc.worker`) keeps what it reads current."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contacts_shared.web import create_service_app, ready_when_reachable
from segment_svc.api import router
from segment_svc.resources import Resources
from segment_svc.settings import SegmentSettings


def create_app(settings: SegmentSettings | None = None) -> FastAPI:
    settings = settings or SegmentSettings()

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        opened = Resources.open(settings)
        app.state.resources = opened
        # Ready without Kafka: members, counts and previews are read from MongoDB.
        ready_when_reachable(app, opened.client[settings.mongodb_database], opened.publisher)
        try:
            yield
        finally:
            await opened.close()

    return create_service_app(
        settings,
        title="segment-svc",
        description="Virtual profiles (segments): members kept current from contact events.",
        routers=[router],
        resources=resources,
    )
