"""profile-svc: profiles (audiences), their fields and virtual-profile rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from contacts_shared.kafka import EventPublisher
from contacts_shared.mongo import service_client
from contacts_shared.outbox import OutboxRelay
from contacts_shared.web import Problem, create_service_app, ready_when_reachable
from profile_svc.api import router, rules_router
from profile_svc.domain import ProfileConflict, ProfileError, ProfileInvalid, ProfileNotFound
from profile_svc.repository import MongoProfileRepository
from profile_svc.settings import ProfileSettings


def problem_of(exc: ProfileError) -> Problem:
    if isinstance(exc, ProfileInvalid):
        errors = [{"field": p.field, "message": p.message} for p in exc.problems]
        return Problem(422, "Invalid profile", str(exc), errors)
    if isinstance(exc, ProfileNotFound):
        return Problem(404, "Not Found", str(exc))
    if isinstance(exc, ProfileConflict):
        named = [{"field": exc.field, "message": str(exc)}] if exc.field else []
        return Problem(409, "Conflict", str(exc), named)
    raise TypeError(f"unmapped profile error {type(exc).__name__}")


def create_app(settings: ProfileSettings | None = None) -> FastAPI:
    settings = settings or ProfileSettings()

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        client = service_client(settings)
        publisher = EventPublisher.of_service(settings, [settings.topic_profiles_events])
        collection = client[settings.mongodb_database]["profiles"]
        relay = OutboxRelay(
            collection,
            publisher,
            batch_size=settings.outbox_batch_size,
            scan_seconds=settings.outbox_scan_seconds,
        )
        profiles = MongoProfileRepository(collection, settings, events_queued=relay.notify)
        await profiles.create_indexes()
        app.state.profiles = profiles
        # Ready without Kafka: reads and writes need MongoDB alone (events wait in the outbox).
        ready_when_reachable(app, client[settings.mongodb_database], publisher)
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        try:
            yield
        finally:
            relay.stop()
            await relay_task
            await publisher.close()
            await client.close()

    app = create_service_app(
        settings,
        title="profile-svc",
        description="Profiles (audiences): regular, virtual and mobile-only; fields; rules.",
        routers=[router, rules_router],
        resources=resources,
    )

    @app.exception_handler(ProfileError)
    async def handle_profile_error(request: Request, exc: ProfileError) -> Response:
        return problem_of(exc).response(instance=request.url.path)

    return app
