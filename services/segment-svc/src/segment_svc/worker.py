"""segment-svc's stream worker: a faust-streaming app whose agents consume profile and contact
events and keep every virtual profile's membership current; its timers run rebuilds, the
daily re-evaluation of relative-date rules, and the relay of events a crash left behind.

Run it with `segment-worker` (one process per replica; replicas share the partitions)."""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import generate_latest

from contacts_shared import tracing
from contacts_shared.faults import OUTAGES, ServersAway
from contacts_shared.kafka import BatchHandler, GuardedHandler, Record, one_at_a_time
from contacts_shared.logs import configure_logging
from contacts_shared.metrics import measure_backlog
from contacts_shared.mongo import bson_now
from contacts_shared.runtime import settle_heap
from contacts_shared.topics.gate import TopicGate
from segment_svc.handlers import MemberCounter, ProfileProjector, Rebuilder, Segmenter
from segment_svc.monitoring import LAG_SECONDS, JsonLoggingWorker, WorkerLag, prometheus_monitor
from segment_svc.resources import Resources
from segment_svc.sample_backfill import SampleBackfill
from segment_svc.settings import SegmentSettings

log = logging.getLogger(__name__)


def record_of(event: Any) -> Record:
    """A faust event's message as the shared handlers take records (aiokafka's)."""
    message = event.message
    headers = message.headers or ()
    if isinstance(headers, dict):
        headers = headers.items()
    return ConsumerRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=int(message.timestamp * 1000),
        timestamp_type=message.timestamp_type,
        key=message.key,
        value=message.value,
        checksum=None,
        serialized_key_size=message.serialized_key_size,
        serialized_value_size=message.serialized_value_size,
        headers=tuple(headers),
    )


def create_worker(settings: SegmentSettings | None = None) -> faust.App:
    settings = settings or SegmentSettings()
    # faust wants a data folder even with no local tables; keep it out of the work tree.
    datadir = Path(tempfile.gettempdir()) / "segment-worker" / settings.segment_worker_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.segment_worker_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        autodiscover=False,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        # Its topics are declared in contacts_shared.topics and verified before it starts
        # (`prepare`): faust creates none (it would, with one replica).
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        # A worker that died without leaving its group holds its partitions this long.
        broker_session_timeout=settings.segment_session_timeout_seconds,
        broker_heartbeat_interval=settings.segment_session_timeout_seconds / 4,
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.segment_worker_host,
        web_host=settings.segment_worker_host,
        web_port=settings.segment_worker_port,
        datadir=datadir,
    )
    # faust's own sensor; its metrics are served with ours at /metrics.
    app.monitor = prometheus_monitor()
    lag = WorkerLag(app, settings.segment_worker_id)
    app.on_partitions_revoked.connect(lag.revoked)
    resources = Resources.open(settings)
    resources.publisher.topics.need(worker_topics(settings))
    topic = settings.topic_segments_events
    segmenter = Segmenter(resources.segments, resources.projection, resources.relay, topic=topic)
    projector = ProfileProjector(resources.schemas, resources.segments)
    rebuilder = Rebuilder(
        resources.segments,
        resources.projection,
        resources.relay,
        resources.publisher,
        topic=topic,
        owner=f"{socket.gethostname()}:{id(app)}",
        pages_in_flight=settings.rebuild_pages_in_flight,
    )

    def consume(source: str, handler: BatchHandler, batch: int, within: float) -> None:
        """An agent of the topic `source` feeding takes of up to `batch` records, gathered for
        at most `within` seconds, to `handler`.

        Concurrency 1: the agent handles its records in order, and acknowledges a take (so its
        offsets may be committed) only once it is handled: faust's `take_events` acks after
        the loop body returns. The guard never lets an error escape (that would ack the take
        unhandled): it retries, waits out outages, and dead-letters a poison record. Takes mix
        partitions, each partition's records in offset order: the handlers fold contacts by
        version and counts per partition, in one set of round trips per take."""
        guard = GuardedHandler(
            resources.publisher,
            handler,
            dead_letter_suffix=settings.dead_letter_suffix,
        )

        async def agent(stream: Any) -> AsyncIterator[None]:
            async for events in stream.take_events(batch, within=within):
                records = [record_of(event) for event in events]
                await guard.handle(records)
                lag.handled(records)
                yield None

        name = f"{settings.segment_worker_id}.{source}"
        app.agent(app.topic(source), name=name, concurrency=1)(agent)

    consume(
        settings.topic_contacts_events,
        segmenter.apply_contact_records,
        settings.segment_batch_events,
        settings.segment_batch_seconds,
    )
    # Counts may lag a little (as the other projections, `projection_fetch_wait_ms`): larger
    # takes cost fewer round trips per membership event.
    consume(
        settings.topic_segments_events,
        MemberCounter(resources.counts).apply_records,
        2000,
        settings.projection_fetch_wait_ms / 1000,
    )
    consume(
        settings.topic_profiles_events,
        one_at_a_time(projector.apply_record),
        100,
        settings.segment_batch_seconds,
    )

    async def metrics(view: Any, request: Any) -> Any:
        """Prometheus metrics: ours (lag, backlog, evaluation, dead letters) and faust's."""
        return view.bytes(generate_latest(), content_type="text/plain; version=0.0.4")

    app.page("/metrics")(metrics)

    async def readyz(view: Any, request: Any) -> Any:
        """Not ready (503) while an agent waits for MongoDB or Kafka to return, or while Kafka
        does not answer: unlike the APIs, the worker can do nothing without it."""
        try:
            async with asyncio.timeout(settings.readiness_timeout_seconds):
                await OUTAGES.check()
                await resources.publisher.check()  # its topics too, verified once
        except (ServersAway, KafkaError) as away:
            detail = str(away) or repr(away)
        except TimeoutError:
            detail = f"Kafka did not answer within {settings.readiness_timeout_seconds:g}s"
        else:
            return view.json({"status": "ready"})
        return view.json({"status": "not ready", "detail": detail}, status=503)

    app.page("/readyz")(readyz)

    async def rebuilds() -> None:
        await _logged(
            resources.segments.request_new_day_rebuilds(bson_now().date().isoformat()),
            "new day",
        )
        while await _logged(rebuilder.run_one(), "rebuild"):
            pass

    async def left_behind() -> None:
        # Journals past their lease: their writer died before publishing them.
        while await _logged(resources.relay.sweep(), "journal sweep"):
            pass
        await _logged(resources.members.forget_tombstones(), "tombstones")

    async def backlog() -> None:
        # What the journal holds unpublished (its writers' rounds, and what dead ones left),
        # from the start and then every BACKLOG_SECONDS, until the worker stops (cancelled).
        await measure_backlog(
            settings.service_name, "membership_journal", resources.journal.backlog, asyncio.Event()
        )

    database = resources.client[settings.mongodb_database]
    sample_backfill = SampleBackfill(
        database["contacts"],
        database["backfills"],
        batch_size=settings.sample_backfill_batch_size,
        lease=timedelta(seconds=settings.sample_backfill_lease_seconds),
        pause_seconds=settings.sample_backfill_pause_seconds,
    )

    async def backfill_samples() -> None:
        # Until a pass is recorded done (then one read at each start), or the worker stops
        # (cancelled: the lease is released on the way out, the checkpoint kept).
        await sample_backfill.run(asyncio.Event())

    app.timer(interval=settings.rebuild_poll_seconds)(rebuilds)
    app.timer(interval=settings.outbox_scan_seconds)(left_behind)
    app.timer(interval=LAG_SECONDS)(lag.show)
    app.task(backlog)
    app.task(backfill_samples)

    return app


async def _logged(work: Any, what: str) -> Any:
    """A timer's work: an error is logged and tried again at the next tick, never fatal."""
    try:
        return await work
    except Exception:  # noqa: BLE001 - the next tick retries; a timer must not stop the worker
        log.exception("%s failed; retrying at the next tick", what)
        return False


def worker_topics(settings: SegmentSettings) -> list[str]:
    """The topics the worker consumes (segments.events it also publishes), and their
    dead-letter topics."""
    consumed = [
        settings.topic_profiles_events,
        settings.topic_contacts_events,
        settings.topic_segments_events,
    ]
    return consumed + [topic + settings.dead_letter_suffix for topic in consumed]


async def prepare(settings: SegmentSettings) -> None:
    """Topics and indexes, before the worker subscribes. Its topics are created in local and
    test; elsewhere it waits until they are there as declared, its log saying which are not
    (once each) and how to fix them: the worker never starts on topics not as declared."""
    gate = TopicGate.of_service(settings)
    gate.need(worker_topics(settings))
    await gate.wait()
    resources = Resources.open(settings)
    try:
        await resources.create_indexes()
    finally:
        await resources.close()


def main() -> None:
    settings = SegmentSettings()
    configure_logging(settings.service_name, settings.log_level)
    # Its own name in traces: the worker's spans are not the API's.
    tracing.configure("segment-worker")
    asyncio.run(prepare(settings))
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = JsonLoggingWorker(
        create_worker(settings), service=settings.service_name, loglevel=settings.log_level
    )
    settle_heap()
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
