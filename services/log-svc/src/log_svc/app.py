"""log-svc: the import log and the contacts' audit trail, kept from the events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from contacts_shared.kafka import EventPublisher, one_at_a_time, service_consumer
from contacts_shared.mongo import service_client
from contacts_shared.profiles import MongoSchemaStore
from contacts_shared.web import create_service_app, ready_when_reachable
from log_svc.api import router
from log_svc.consumers import record_contact_events, record_import_event, record_profile_event
from log_svc.repository import AuditTrail, ImportLog, RefusedRows
from log_svc.settings import LogSettings


def create_app(settings: LogSettings | None = None) -> FastAPI:
    settings = settings or LogSettings()

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        client = service_client(settings)
        # Publishes only dead letters of the records it cannot handle.
        publisher = EventPublisher.of_service(
            settings,
            [
                settings.topic_imports_events,
                settings.topic_contacts_events,
                settings.topic_profiles_events,
            ],
        )
        database = client[settings.mongodb_database]
        import_log = ImportLog(database["import_logs"])
        refused_rows = RefusedRows(database["refused_rows"])
        audit_trail = AuditTrail(database["audit_trail"])
        schemas = MongoSchemaStore(database["profile_schemas"])
        await import_log.create_indexes()
        await schemas.create_indexes()
        consumers = [
            service_consumer(
                settings,
                publisher,
                settings.imports_events_group,
                settings.topic_imports_events,
                one_at_a_time(partial(record_import_event, log=import_log, refused=refused_rows)),
            ),
            service_consumer(
                settings,
                publisher,
                settings.contacts_events_group,
                settings.topic_contacts_events,
                partial(record_contact_events, trail=audit_trail),
                projection=True,
            ),
            service_consumer(
                settings,
                publisher,
                settings.profile_events_group,
                settings.topic_profiles_events,
                one_at_a_time(partial(record_profile_event, schemas=schemas)),
            ),
        ]
        app.state.import_log, app.state.audit_trail = import_log, audit_trail
        app.state.refused_rows, app.state.profile_schemas = refused_rows, schemas
        # Ready without Kafka: the logs and trails are read from MongoDB (they lag meanwhile).
        ready_when_reachable(app, database, publisher)
        tasks = [asyncio.create_task(c.run(), name="consumer") for c in consumers]
        try:
            yield
        finally:
            for c in consumers:
                c.stop()
            await asyncio.gather(*tasks)
            await publisher.close()
            await client.close()

    return create_service_app(
        settings,
        title="log-svc",
        description="Import logs (status, counts, timing, refused rows) and each contact's "
        "audit trail.",
        routers=[router],
        resources=resources,
    )
