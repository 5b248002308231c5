"""Kafka entry points of log-svc: import events into the import log, contact events into the
audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from contacts_shared.events import ImportEvent, event_of
from contacts_shared.kafka import Record
from log_svc.audit import audit_entry
from log_svc.repository import AuditTrail, ImportLog


async def record_import_event(record: Record, *, log: ImportLog) -> None:
    """Keep each import's newest snapshot; older or repeated events change nothing."""
    parsed = event_of(record.value)
    if parsed is not None and isinstance(parsed[1], ImportEvent):
        await log.record(parsed[1].job)


async def record_contact_events(records: Sequence[Record], *, trail: AuditTrail) -> None:
    """Add a partition's batch of contact events to the contacts' audit trails."""
    entries = []
    for record in records:
        parsed = event_of(record.value)
        if parsed is not None and (entry := audit_entry(parsed[1], parsed[0].time)):
            entries.append(entry)
    if entries:
        await trail.record(entries)
