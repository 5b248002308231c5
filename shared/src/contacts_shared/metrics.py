"""The platform's own Prometheus metrics reported by more than one process: consumer lag per
partition and the backlog of events stored but not yet published (docs/operations.md,
"Metrics"). Served at each process's /metrics with the rest of the default registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Gauge

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "contacts_consumer_lag",
    "Records behind the log end, for each partition a consumer of this process owns",
    ["group", "topic", "partition"],
)
OUTBOX_BACKLOG = Gauge(
    "contacts_outbox_backlog",
    "Events stored with their changes (outbox or journal) and not yet published",
    ["service"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "contacts_outbox_oldest_age_seconds",
    "Age of the oldest event stored and not yet published; 0 when there is none",
    ["service"],
)

# How often a relay counts what waits to be published: one index-served read per source.
BACKLOG_SECONDS = 15.0

# A partition as aiokafka (TopicPartition) and faust (TP) name it: a (topic, partition) tuple.
Partition = tuple[str, int]


def partition_lags(
    owned: Iterable[Partition],
    highwater: Callable[[Partition], int | None],
    position: Mapping[Partition, int],
) -> dict[Partition, int]:
    """Each owned partition's lag: its log end (`highwater`, as the last fetch response told
    it) less the next offset to handle (`position`); partitions with either unknown left out."""
    lags = {}
    for partition in owned:
        end = highwater(partition)
        if end is not None and partition in position:
            lags[partition] = max(0, end - position[partition])
    return lags


class PartitionLags:
    """`contacts_consumer_lag` of one consumer group in this process: set for the partitions it
    owns, removed for those it no longer owns (revoked in a rebalance, or the consumer
    stopped), so a partition another process took over is not shown twice."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._shown: set[Partition] = set()

    def update(self, owned: Iterable[Partition], lags: Mapping[Partition, int]) -> None:
        """Show `lags` of the partitions in `owned`; forget those shown and no longer owned."""
        owned = {(topic, partition) for topic, partition in owned}
        self.forget(self._shown - owned)
        for (topic, partition), lag in lags.items():
            if (topic, partition) in owned:
                CONSUMER_LAG.labels(self.group, topic, str(partition)).set(lag)
                self._shown.add((topic, partition))

    def forget(self, partitions: Iterable[Partition]) -> None:
        for topic, partition in list(partitions):
            if (topic, partition) in self._shown:
                self._shown.discard((topic, partition))
                CONSUMER_LAG.remove(self.group, topic, str(partition))

    def clear(self) -> None:
        self.forget(self._shown)


@dataclass(frozen=True)
class Backlog:
    """Events stored and not yet published, and when the oldest of them was stored."""

    events: int = 0
    oldest: datetime | None = None

    def __post_init__(self) -> None:
        if self.oldest is not None and self.oldest.tzinfo is None:  # a client not tz-aware
            object.__setattr__(self, "oldest", self.oldest.replace(tzinfo=UTC))

    def __add__(self, other: Backlog) -> Backlog:
        times = [t for t in (self.oldest, other.oldest) if t is not None]
        return Backlog(self.events + other.events, min(times) if times else None)

    def age_seconds(self, now: datetime) -> float:
        """How long the oldest has waited; 0 when none waits."""
        if self.oldest is None or not self.events:
            return 0.0
        return max(0.0, (now - self.oldest).total_seconds())


# The last backlog each source (a collection's outbox, a journal) told, by service: a process
# with several relays shows their sum.
_backlogs: dict[str, dict[str, Backlog]] = {}


def report_backlog(
    service: str, source: str, backlog: Backlog, *, now: datetime | None = None
) -> None:
    """Record what `source` holds unpublished, and show the service's total and oldest."""
    _backlogs.setdefault(service, {})[source] = backlog
    _show_backlog(service, now or datetime.now(UTC))


def forget_backlog(service: str, source: str) -> None:
    """`source` is no longer relayed by this process (its relay stopped)."""
    _backlogs.get(service, {}).pop(source, None)
    _show_backlog(service, datetime.now(UTC))


def _show_backlog(service: str, now: datetime) -> None:
    sources = _backlogs.get(service)
    if not sources:  # no relay of the service's left in this process: no series either
        _backlogs.pop(service, None)
        for gauge in (OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE):
            with contextlib.suppress(KeyError):
                gauge.remove(service)
        return
    total = sum(sources.values(), Backlog())
    OUTBOX_BACKLOG.labels(service).set(total.events)
    OUTBOX_OLDEST_AGE.labels(service).set(total.age_seconds(now))


async def measure_backlog(
    service: str,
    source: str,
    measure: Callable[[], Awaitable[Backlog]],
    stopping: asyncio.Event,
    *,
    every: float = BACKLOG_SECONDS,
) -> None:
    """Report `measure()` every `every` seconds until `stopping` is set, then forget the
    source. While the database is away the last figures stay (readiness tells the outage)."""
    try:
        while not stopping.is_set():
            try:
                report_backlog(service, source, await measure())
            except Exception as exc:  # noqa: BLE001 - a metric must never stop its relay
                log.warning(
                    "could not measure the backlog of unpublished events",
                    extra={"source": source, "error": repr(exc)},
                )
            try:
                await asyncio.wait_for(stopping.wait(), timeout=every)
            except TimeoutError:
                pass
    finally:
        forget_backlog(service, source)
