"""import-svc: imports of CSV files and pasted text into profiles, exact and resumable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

from fastapi import FastAPI, Request, Response

from contacts_shared.kafka import EventPublisher, one_at_a_time, service_consumer
from contacts_shared.mongo import service_client
from contacts_shared.outbox import OutboxRelay
from contacts_shared.profiles import MongoSchemaStore, PatientSchemas
from contacts_shared.web import Problem, create_service_app, ready_when_reachable
from import_svc.api import router
from import_svc.consumers import count_outcomes, follow_profiles
from import_svc.handlers import ImportNotFound, ImportRefused, Worker
from import_svc.repository import ImportStore
from import_svc.settings import ImportSettings


def create_app(settings: ImportSettings | None = None) -> FastAPI:
    settings = settings or ImportSettings()

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        client = service_client(settings)
        database = client[settings.mongodb_database]
        publisher = EventPublisher.of_service(
            settings, [settings.topic_contacts_commands, settings.topic_imports_events]
        )
        relay = OutboxRelay(
            database["imports"],
            publisher,
            batch_size=settings.outbox_batch_size,
            scan_seconds=settings.outbox_scan_seconds,
        )
        store = ImportStore(database, settings, events_queued=relay.notify)
        schemas = MongoSchemaStore(database["profile_schemas"])
        await store.create_indexes()
        consumers = [
            service_consumer(
                settings,
                publisher,
                settings.profile_events_group,
                settings.topic_profiles_events,
                one_at_a_time(partial(follow_profiles, schemas=schemas)),
            ),
            service_consumer(
                settings,
                publisher,
                settings.results_group,
                settings.topic_imports_results,
                partial(count_outcomes, store=store),
            ),
        ]
        stopping = asyncio.Event()
        worker = Worker(
            store=store,
            schemas=schemas,
            publisher=publisher,
            commands_topic=settings.topic_contacts_commands,
            events_topic=settings.topic_imports_events,
            events_source=settings.event_source,
            region=settings.default_phone_region,
            rows_per_checkpoint=settings.rows_per_checkpoint,
            lease=timedelta(seconds=settings.lease_seconds),
            poll_seconds=settings.poll_seconds,
        )
        app.state.store = store
        app.state.schemas = PatientSchemas(schemas, wait=settings.profile_wait_seconds)
        # Ready without Kafka: uploads are queued and imports read from MongoDB; the worker
        # sends their rows once Kafka is back.
        ready_when_reachable(app, database, publisher)
        tasks = [
            asyncio.create_task(worker.run(stopping), name="import-worker"),
            asyncio.create_task(relay.run(), name="outbox-relay"),
        ] + [asyncio.create_task(c.run(), name="consumer") for c in consumers]
        try:
            yield
        finally:
            stopping.set()
            relay.stop()
            for c in consumers:
                c.stop()
            await asyncio.gather(*tasks)
            await publisher.close()
            await client.close()

    app = create_service_app(
        settings,
        title="import-svc",
        description="Imports of CSV files and pasted text into profiles: exact and resumable.",
        routers=[],
        upload_routers=[router],
        resources=resources,
    )

    @app.exception_handler(ImportRefused)
    async def handle_refused(request: Request, exc: ImportRefused) -> Response:
        errors = [{"field": p.field, "message": p.message} for p in exc.problems]
        return Problem(exc.status, "Import refused", str(exc), errors).response(request.url.path)

    @app.exception_handler(ImportNotFound)
    async def handle_not_found(request: Request, exc: ImportNotFound) -> Response:
        return Problem(404, "Not Found", str(exc)).response(request.url.path)

    return app
