"""contact-svc: contacts of regular and mobile-only profiles, their statuses and events."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

from fastapi import FastAPI, Request, Response

from contact_svc.api import router, stats_router
from contact_svc.bulk_api import router as bulk_router
from contact_svc.bulk_handlers import BulkJobNotFound, BulkSender
from contact_svc.bulk_repository import MongoBulkJobStore
from contact_svc.consumers import (
    apply_contact_commands,
    apply_profile_event,
    project_contact_events,
)
from contact_svc.contact_repository import MongoContactRepository
from contact_svc.deliveries import WebhookRejected
from contact_svc.domain import ContactError, ContactExists, ContactNotFound, ProfileUnknown
from contact_svc.settings import ContactSettings
from contact_svc.shape_backfill import ShapeBackfill
from contact_svc.stats_repository import MongoStatsStore
from contact_svc.suppression_handlers import enforce_suppressions
from contact_svc.suppression_repository import MongoSuppressionStore
from contact_svc.webhook_api import delivery_router, webhook_router
from contact_svc.webhook_handlers import SecretChanged, WebhookIntake, WebhookSourceNotFound
from contact_svc.webhook_repository import (
    MongoDeliveryStore,
    MongoStoreCustomerStore,
    MongoWebhookSourceStore,
)
from contact_svc.webhooks import RecentSources, SourceRateLimits
from contacts_shared.journal import EventJournal
from contacts_shared.kafka import EventPublisher, one_at_a_time, service_consumer
from contacts_shared.mongo import service_client
from contacts_shared.outbox import OutboxRelay
from contacts_shared.profiles import MongoSchemaStore, PatientSchemas, ProfileNotWritable
from contacts_shared.values import ValuesInvalid
from contacts_shared.web import InFlightLimit, Problem, create_service_app, ready_when_reachable

# The refusals of the contact rules and of the shared value and profile rules they apply.
REFUSALS = (ContactError, ValuesInvalid, ProfileNotWritable, BulkJobNotFound)


def problem_of(exc: Exception) -> Problem:
    if isinstance(exc, ValuesInvalid):
        errors = [{"field": p.field, "message": p.message} for p in exc.problems]
        return Problem(422, "Invalid contact", str(exc), errors)
    if isinstance(exc, WebhookRejected):
        if exc.retry_after is not None:
            retry = {"Retry-After": str(math.ceil(exc.retry_after))}
            return Problem(exc.status, "Too Many Requests", str(exc), headers=retry)
        return Problem(exc.status, "Unusable webhook request", str(exc))
    if isinstance(exc, ContactNotFound | ProfileUnknown | WebhookSourceNotFound | BulkJobNotFound):
        return Problem(404, "Not Found", str(exc))
    if isinstance(exc, ContactExists):
        return Problem(409, "Conflict", str(exc), [{"field": exc.field, "message": str(exc)}])
    if isinstance(exc, ProfileNotWritable | SecretChanged):
        return Problem(409, "Conflict", str(exc))
    raise TypeError(f"unmapped contact error {type(exc).__name__}")


def create_app(settings: ContactSettings | None = None) -> FastAPI:
    settings = settings or ContactSettings()

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        client = service_client(settings)
        database = client[settings.mongodb_database]
        publisher = EventPublisher.of_service(
            settings, [settings.topic_contacts_events, settings.topic_imports_results]
        )
        journal = EventJournal(
            database["contacts_journal"],
            database["contacts"],
            lease_seconds=settings.journal_lease_seconds,
        )
        relay = OutboxRelay(
            database["contacts"],
            publisher,
            batch_size=settings.outbox_batch_size,
            scan_seconds=settings.outbox_scan_seconds,
            journal=journal,
        )
        suppressions = MongoSuppressionStore(database["suppressions"])
        contacts = MongoContactRepository(
            database["contacts"],
            settings,
            suppressions=suppressions,
            events_queued=relay.notify,
            journal=journal,
        )
        schemas = MongoSchemaStore(database["profile_schemas"])
        stats = MongoStatsStore(
            database["profile_stats"], database["stats_marks"], partitions=settings.topic_partitions
        )
        bulk_jobs = MongoBulkJobStore(database["bulk_jobs"])
        await contacts.create_indexes()
        await schemas.create_indexes()
        await bulk_jobs.create_indexes()

        consumer = partial(service_consumer, settings, publisher)
        consumers = {
            "profile-schemas": consumer(
                settings.profile_events_group,
                settings.topic_profiles_events,
                one_at_a_time(partial(apply_profile_event, schemas=schemas, contacts=contacts)),
            ),
            "contact-commands": consumer(
                settings.contact_commands_group,
                settings.topic_contacts_commands,
                partial(
                    apply_contact_commands,
                    schemas=schemas,
                    contacts=contacts,
                    relay=relay,
                    publisher=publisher,
                    results_topic=settings.topic_imports_results,
                    bulk_jobs=bulk_jobs,
                ),
            ),
            "contact-events": consumer(
                settings.contact_events_group,
                settings.topic_contacts_events,
                partial(
                    project_contact_events,
                    stats=stats,
                    enforce=partial(
                        enforce_suppressions,
                        profiles_of=schemas.holding_contacts,
                        contacts=contacts,
                    ),
                ),
                projection=True,
            ),
        }
        app.state.contacts, app.state.stats, app.state.relay = contacts, stats, relay
        app.state.schemas = PatientSchemas(schemas, wait=settings.profile_wait_seconds)
        app.state.profiles_of = schemas.holding_contacts
        app.state.publisher = publisher
        app.state.bulk_jobs = bulk_jobs
        app.state.bulk_sender = BulkSender(
            jobs=bulk_jobs,
            schemas=schemas,
            contacts=contacts,
            publisher=publisher,
            topic=settings.topic_contacts_commands,
            region=settings.default_phone_region,
            lease=timedelta(seconds=settings.bulk_lease_seconds),
            poll_seconds=settings.bulk_poll_seconds,
        )
        app.state.webhook_sources = MongoWebhookSourceStore(database["webhook_sources"])
        kept = timedelta(days=settings.webhook_delivery_ids_days)
        store_customers = MongoStoreCustomerStore(database["webhook_store_customers"], kept)
        deliveries = MongoDeliveryStore(database["webhook_deliveries"], kept)
        await store_customers.create_indexes()
        await deliveries.create_indexes()
        app.state.webhook_intake = WebhookIntake(
            sources=app.state.webhook_sources,
            customers=store_customers,
            deliveries=deliveries,
            schemas=app.state.schemas,
            publisher=publisher,
            limits=SourceRateLimits(
                settings.webhook_records_per_second, settings.webhook_burst_records
            ),
            recent=RecentSources(settings.webhook_source_cache_seconds),
            topic=settings.topic_contacts_commands,
            region=settings.default_phone_region,
        )
        app.state.webhooks_in_flight = InFlightLimit(settings.webhook_max_in_flight)
        # Ready without Kafka: reads, and writes whose events wait in the outbox or journal,
        # need MongoDB alone; webhooks, batches and bulk actions answer 503 while it is away.
        ready_when_reachable(app, database, publisher)
        stopping = asyncio.Event()
        backfill = ShapeBackfill(
            database["contacts"],
            database["document_shapes"],
            batch_size=settings.shape_backfill_batch_size,
            lease=timedelta(seconds=settings.shape_backfill_lease_seconds),
            pause_seconds=settings.shape_backfill_pause_seconds,
        )
        tasks = [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(app.state.bulk_sender.run(stopping), name="bulk-sender"),
            asyncio.create_task(backfill.run(stopping), name="shape-backfill"),
        ] + [asyncio.create_task(c.run(), name=name) for name, c in consumers.items()]
        try:
            yield
        finally:
            stopping.set()
            relay.stop()
            for c in consumers.values():
                c.stop()
            await asyncio.gather(*tasks)
            await publisher.close()
            await client.close()

    app = create_service_app(
        settings,
        title="contact-svc",
        description="Contacts of regular and mobile-only profiles: values, statuses, events.",
        routers=[router, stats_router, webhook_router, bulk_router],
        upload_routers=[delivery_router],
        resources=resources,
    )

    async def handle_refusal(request: Request, exc: Exception) -> Response:
        return problem_of(exc).response(instance=request.url.path)

    for refusal in REFUSALS:
        app.add_exception_handler(refusal, handle_refusal)

    return app
