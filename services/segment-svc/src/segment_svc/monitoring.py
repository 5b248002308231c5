"""What segment-worker tells operators: faust's own Prometheus sensor and the platform's metrics
(consumer lag, the membership journal's backlog) at its /metrics, and JSON log lines like every
service's."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import REGISTRY

from contacts_shared.kafka import Record
from contacts_shared.logs import configure_logging
from contacts_shared.metrics import Partition, PartitionLags, partition_lags

# faust's metrics are named `faust_*` whatever the app's id (its consumer group), so that a
# dashboard reads them across deployments.
FAUST_METRICS_PREFIX = "faust"
# How often the worker shows its partitions' lag.
LAG_SECONDS = 5.0


@functools.cache
def faust_metrics() -> FaustMetrics:
    """The metrics of faust's Prometheus sensor, in the default registry (served at /metrics
    beside ours): created once a process, as a registry refuses a name twice."""
    return FaustMetrics.create(REGISTRY, FAUST_METRICS_PREFIX)


def prometheus_monitor() -> PrometheusMonitor:
    """faust's Prometheus sensor, to set as an app's `monitor` before it starts."""
    return PrometheusMonitor(metrics=faust_metrics())


class WorkerLag:
    """`contacts_consumer_lag` of a faust app's partitions: each one's log end, as the
    consumer's last fetch response told it, less the offset after the last record its agent
    handled (`handled`). A partition whose records this process has not handled yet is not
    shown until it has."""

    def __init__(self, app: faust.App, group: str) -> None:
        self._app = app
        self._lags = PartitionLags(group)
        self._next: dict[Partition, int] = {}

    def handled(self, records: Iterable[Record]) -> None:
        """Records an agent has handled (each partition's in offset order)."""
        for record in records:
            self._next[(record.topic, record.partition)] = record.offset + 1

    def _highwater(self, partition: Partition) -> int | None:
        try:
            highwater: int | None = self._app.consumer.highwater(TP(*partition))
        except (AssertionError, ConsumerNotStarted):  # revoked meanwhile, or not started yet
            return None
        return highwater

    async def show(self) -> None:
        """Show each owned partition's lag (a timer's work)."""
        try:
            owned = self._app.consumer.assignment()
        except ConsumerNotStarted:
            return
        self._lags.update(owned, partition_lags(owned, self._highwater, self._next))

    async def revoked(self, app: Any, /, *args: Any, **kwargs: Any) -> None:
        """Receives the app's `on_partitions_revoked` signal (`args`: the partitions revoked):
        another process shows their lag now."""
        revoked: set[TP] = args[0]
        for tp in revoked:
            self._next.pop((tp.topic, tp.partition), None)
        self._lags.forget(revoked)


class JsonLoggingWorker(faust.Worker):
    """faust's worker, logging JSON lines like the services. At start faust replaces the root
    logger's handlers with its plain-text one and then calls `on_setup_root_logger`: the JSON
    handler goes back there, before faust redirects stdout and stderr to logging, so that
    whatever the process prints is a JSON line too. faust's progress spinner (plain text on
    stdout) stays off; its "Ready" is then logged."""

    def __init__(self, app: faust.App, *, service: str, loglevel: str, **kwargs: Any) -> None:
        super().__init__(app, loglevel=loglevel.lower(), **kwargs)
        self._service = service
        self._level = loglevel

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        configure_logging(self._service, self._level)
