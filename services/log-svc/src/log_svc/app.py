"""log-svc: the import log (and, to come, the audit trail), kept from the events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from contacts_shared.kafka import EventPublisher, one_at_a_time, service_consumer
from contacts_shared.mongo import connect, ping
from contacts_shared.web import create_service_app
from log_svc.api import router
from log_svc.consumers import record_import_event
from log_svc.repository import ImportLog
from log_svc.settings import LogSettings


def create_app(settings: LogSettings | None = None) -> FastAPI:
    settings = settings or LogSettings()

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        client = connect(settings.mongodb_url, app_name=settings.service_name)
        # Publishes only dead letters of the records it cannot handle.
        publisher = EventPublisher(
            settings.kafka_bootstrap_servers,
            client_id=settings.service_name,
            topics=[settings.topic_imports_events],
            partitions=settings.topic_partitions,
        )
        import_log = ImportLog(client[settings.mongodb_database]["import_logs"])
        await import_log.create_indexes()
        consumer = service_consumer(
            settings,
            publisher,
            settings.imports_events_group,
            settings.topic_imports_events,
            one_at_a_time(partial(record_import_event, log=import_log)),
        )
        app.state.import_log = import_log
        app.state.readiness_checks.update(mongodb=lambda: ping(client), kafka=publisher.check)
        task = asyncio.create_task(consumer.run(), name="import-events")
        try:
            yield
        finally:
            consumer.stop()
            await task
            await publisher.close()
            await client.close()

    return create_service_app(
        settings,
        title="log-svc",
        description="Import logs: status, counts, timing of every import.",
        routers=[router],
        resources=resources,
    )
