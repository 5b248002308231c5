"""Kafka entry points of log-svc."""

from __future__ import annotations

from contacts_shared.events import ImportEvent, event_of
from contacts_shared.kafka import Record
from log_svc.repository import ImportLog


async def record_import_event(record: Record, *, log: ImportLog) -> None:
    """Keep each import's newest snapshot; older or repeated events change nothing."""
    parsed = event_of(record.value)
    if parsed is not None and isinstance(parsed[1], ImportEvent):
        await log.record(parsed[1].job)
