"""Kafka entry points of log-svc: import events into the import log and its refused rows,
contact events into the audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from contacts_shared.events import ImportEvent, ImportRowsRefused, event_of
from contacts_shared.kafka import Record
from log_svc.audit import audit_entry
from log_svc.repository import AuditTrail, ImportLog, RefusedRows


async def record_import_event(record: Record, *, log: ImportLog, refused: RefusedRows) -> None:
    """Keep each import's newest snapshot and its refused rows; older or repeated events change
    nothing."""
    parsed = event_of(record.value)
    event = parsed[1] if parsed is not None else None
    if isinstance(event, ImportEvent):
        await log.record(event.job)
    elif isinstance(event, ImportRowsRefused):
        await refused.record(event.import_id, event.rows)


async def record_contact_events(records: Sequence[Record], *, trail: AuditTrail) -> None:
    """Add a partition's batch of contact events to the contacts' audit trails."""
    entries = []
    for record in records:
        parsed = event_of(record.value)
        if parsed is not None and (entry := audit_entry(parsed[1], parsed[0].time)):
            entries.append(entry)
    if entries:
        await trail.record(entries)
