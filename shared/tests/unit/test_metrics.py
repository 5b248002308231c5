"""The lag and backlog gauges' arithmetic: lags of owned partitions only, a revoked partition's
series removed, the backlog of several sources summed, the age of the oldest event."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from contacts_shared.metrics import (
    Backlog,
    PartitionLags,
    measure_backlog,
    partition_lags,
    report_backlog,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def lag_of(group: str, topic: str, partition: int) -> float | None:
    labels = {"group": group, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("contacts_consumer_lag", labels)


def backlog_of(service: str) -> tuple[float | None, float | None]:
    labels = {"service": service}
    return (
        REGISTRY.get_sample_value("contacts_outbox_backlog", labels),
        REGISTRY.get_sample_value("contacts_outbox_oldest_age_seconds", labels),
    )


def test_lag_is_the_log_end_less_the_position_of_partitions_with_both_known() -> None:
    highwaters = {("t", 0): 10, ("t", 1): None, ("t", 2): 7, ("t", 3): 4}
    positions = {("t", 0): 4, ("t", 1): 3, ("t", 3): 5}  # 2 never handled; 3 past a stale end
    lags = partition_lags(highwaters, highwaters.get, positions)
    assert lags == {("t", 0): 6, ("t", 3): 0}


def test_a_partition_no_longer_owned_loses_its_series_and_a_stop_clears_them_all() -> None:
    group = f"group-{uuid.uuid4().hex}"
    lags = PartitionLags(group)
    lags.update([("t", 0), ("t", 1)], {("t", 0): 5, ("t", 1): 0})
    assert (lag_of(group, "t", 0), lag_of(group, "t", 1)) == (5, 0)

    lags.update([("t", 0)], {("t", 0): 2})  # t[1] revoked in a rebalance
    assert (lag_of(group, "t", 0), lag_of(group, "t", 1)) == (2, None)

    # A lag told for a partition not owned is not shown: it is another process's now.
    lags.update([("t", 0)], {("t", 0): 1, ("t", 2): 9})
    assert (lag_of(group, "t", 0), lag_of(group, "t", 2)) == (1, None)

    lags.clear()
    assert lag_of(group, "t", 0) is None


def test_backlogs_add_up_and_the_oldest_is_the_earliest_of_them() -> None:
    earlier, later = NOW - timedelta(seconds=90), NOW - timedelta(seconds=5)
    total = Backlog(2, later) + Backlog() + Backlog(3, earlier)
    assert total == Backlog(5, earlier)
    assert total.age_seconds(NOW) == 90
    assert Backlog().age_seconds(NOW) == 0
    # A client that is not tz-aware reads naive UTC datetimes.
    assert Backlog(1, earlier.replace(tzinfo=None)).age_seconds(NOW) == 90


def test_a_service_shows_the_sum_of_its_sources_and_zero_age_when_none_waits() -> None:
    service = f"svc-{uuid.uuid4().hex}"
    report_backlog(service, "outbox", Backlog(2, NOW - timedelta(seconds=30)), now=NOW)
    report_backlog(service, "journal", Backlog(5, NOW - timedelta(seconds=3)), now=NOW)
    assert backlog_of(service) == (7, 30)

    report_backlog(service, "outbox", Backlog(), now=NOW)
    assert backlog_of(service) == (5, 3)
    report_backlog(service, "journal", Backlog(), now=NOW)
    assert backlog_of(service) == (0, 0)


async def test_a_failed_count_keeps_the_last_figures_and_a_stopped_measure_forgets_them() -> None:
    service = f"svc-{uuid.uuid4().hex}"
    stopping = asyncio.Event()
    answers: list[Backlog | Exception] = [Backlog(4), ConnectionError("away"), Backlog(1)]
    shown: list[tuple[float | None, float | None]] = []

    async def measure() -> Backlog:
        shown.append(backlog_of(service))
        answer = answers.pop(0)
        if not answers:
            stopping.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    await asyncio.wait_for(measure_backlog(service, "s", measure, stopping, every=0.01), 5)
    assert shown == [(None, None), (4, 0), (4, 0)]
    # Its relay stopped, the process relays nothing of the service's: no series.
    assert backlog_of(service) == (None, None)
