"""segment-worker run as operators run it (`python -m segment_svc.worker`, a process of its
own on the real servers): every line it prints is JSON, faust's included, and its /metrics
serves faust's sensor beside ours, its partitions' lag among them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from contacts_devstack.processes import free_port
from contacts_shared.events import EventEnvelope
from contacts_shared.kafka import EventPublisher, event_message

pytestmark = pytest.mark.integration


def metrics_showing(url: str, wanted: list[str], process: subprocess.Popen[bytes]) -> str:
    """The worker's /metrics once it shows every name in `wanted` (or what it showed last)."""
    exposed = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            exposed = httpx.get(url, timeout=2).text
        except httpx.TransportError:
            pass
        if all(name in exposed for name in wanted):
            break
        time.sleep(0.2)
    return exposed


async def test_the_worker_logs_json_lines_and_serves_fausts_metrics_with_ours(
    infrastructure: Any, unique: str, tmp_path: Path
) -> None:
    port, group = free_port(), f"segment-svc-{unique}"
    profiles = f"profiles.events.{unique}"
    env = {
        **os.environ,
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap_servers,
        "CONTACTS_MONGODB_URL": infrastructure.mongodb_url,
        "CONTACTS_MONGODB_DATABASE": f"segment_svc_{unique}",
        "CONTACTS_SEGMENT_WORKER_ID": group,
        "CONTACTS_SEGMENT_WORKER_PORT": str(port),
        "CONTACTS_TOPIC_PROFILES_EVENTS": profiles,
        "CONTACTS_TOPIC_CONTACTS_EVENTS": f"contacts.events.{unique}",
        "CONTACTS_TOPIC_SEGMENTS_EVENTS": f"segments.events.{unique}",
        "CONTACTS_TOPIC_PARTITIONS": "2",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "segment_svc.worker"], env=env, stdout=log, stderr=log
        )
    try:
        # An event of a type this version does not know: handled (ignored), so its partition's
        # position is known and its lag shown.
        envelope = EventEnvelope(
            id=uuid.uuid4().hex,
            source="/test",
            type="test.SomethingNew",
            time=datetime.now(UTC),
            subject="p1",
            accountid="a1",
            dataversion="1",
            data={},
        )
        publisher = EventPublisher(
            infrastructure.kafka_bootstrap_servers,
            client_id="test",
            topics=[profiles],
            partitions=2,
        )
        await publisher.publish(
            [event_message(profiles, "p1", envelope.model_dump_json().encode())]
        )
        await publisher.close()
        wanted = [
            "faust_messages_received_total",  # faust's own sensor
            "faust_topic_partition_end_offset",
            f'contacts_consumer_lag{{group="{group}",partition="',
            f'topic="{profiles}"}} 0.0',
            'contacts_outbox_backlog{service="segment-svc"} 0.0',
            'contacts_outbox_oldest_age_seconds{service="segment-svc"} 0.0',
            "contacts_segment_evaluation_seconds",
            "contacts_dead_lettered_records_total",
        ]
        exposed = metrics_showing(f"http://127.0.0.1:{port}/metrics", wanted, process)
        assert [name for name in wanted if name not in exposed] == [], log_path.read_text()[-3000:]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    plain = [line for line in lines if not line.startswith("{")]
    assert plain == []
    parsed = [json.loads(line) for line in lines]
    assert {entry["service"] for entry in parsed} == {"segment-svc"}
    loggers = {entry["logger"] for entry in parsed}
    # faust's and mode's own lines (start, rebalance, stop) are JSON like ours.
    assert any(name.startswith("faust") for name in loggers), loggers
    assert any(entry["message"].endswith("Ready") for entry in parsed)
