"""segment-worker's monitoring without a broker: its partitions' lag from what its agents
handled, a revoked partition's series removed, and faust's logging setup leaving JSON lines
(a process of its own, as faust takes over the root logger and stdout)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from typing import Any

from aiokafka import ConsumerRecord
from faust.types import TP
from prometheus_client import REGISTRY

from segment_svc.monitoring import WorkerLag, faust_metrics, prometheus_monitor


class FakeConsumer:
    """What the lag reads of a faust consumer: its assignment and the highwaters its fetches
    told."""

    def __init__(self, highwaters: dict[TP, int | None]) -> None:
        self.highwaters = highwaters

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        assert tp in self.highwaters, "Partition is not assigned"  # as aiokafka's
        return self.highwaters[tp]


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


def record(topic: str, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def lag(group: str, topic: str, partition: int) -> float | None:
    labels = {"group": group, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("contacts_consumer_lag", labels)


async def test_lag_is_shown_for_partitions_handled_and_forgotten_when_revoked() -> None:
    group = f"worker-{uuid.uuid4().hex}"
    consumer = FakeConsumer({TP("c", 0): 10, TP("c", 1): 4, TP("c", 2): 7})
    worker_lag = WorkerLag(FakeApp(consumer), group)  # type: ignore[arg-type]
    worker_lag.handled([record("c", 0, 2), record("c", 1, 0), record("c", 0, 3), record("c", 1, 3)])
    await worker_lag.show()
    # c[2]: nothing of it handled here yet, so no position to tell its lag from.
    assert [lag(group, "c", p) for p in range(3)] == [6, 0, None]

    await worker_lag.revoked(object(), {TP("c", 1)}, signal=None)
    del consumer.highwaters[TP("c", 1)]
    assert lag(group, "c", 1) is None
    await worker_lag.show()
    assert [lag(group, "c", p) for p in range(3)] == [6, None, None]


def test_fausts_sensor_is_made_once_a_process_and_named_faust() -> None:
    assert faust_metrics() is faust_metrics()
    assert prometheus_monitor() is not prometheus_monitor()  # one per app, same metrics
    names = {metric.name for metric in REGISTRY.collect()}
    assert {"faust_messages_received", "faust_topic_partition_end_offset"} <= names


SETUP = textwrap.dedent(
    """
    import asyncio, logging, sys
    import faust
    from segment_svc.monitoring import JsonLoggingWorker

    app = faust.App("logging-test", autodiscover=False, web_enabled=False)
    worker = JsonLoggingWorker(app, service="segment-svc", loglevel="INFO")
    # What faust does first when the worker starts: its logging, then stdout redirected.
    asyncio.run(worker.default_on_first_start())
    logging.getLogger("faust.worker").info("[^Worker]: Starting...")
    logging.getLogger("aiokafka.consumer").warning("Heartbeat failed")
    logging.getLogger("segment_svc.worker").info("ours", extra={"partition": 3})
    print("printed by a library")
    sys.stderr.write("written to stderr\\n")
    """
)


def test_every_line_the_worker_prints_after_faust_set_up_logging_is_json() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SETUP], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    parsed: list[dict[str, Any]] = [json.loads(line) for line in lines]  # fails on plain text
    assert done.stderr == ""
    assert {entry["service"] for entry in parsed} == {"segment-svc"}
    messages = {entry["message"]: entry for entry in parsed}
    assert {
        "[^Worker]: Starting...",
        "Heartbeat failed",
        "ours",
        "printed by a library",
        "written to stderr",
    } <= set(messages)
    assert messages["ours"]["partition"] == 3
