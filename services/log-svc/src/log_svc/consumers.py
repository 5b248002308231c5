"""Kafka entry points of log-svc: import events into the import log and its refused rows,
contact events into the audit trail (erasures out of it), profile events into the profiles'
schemas (the names of the trail's fields)."""

from __future__ import annotations

from collections.abc import Sequence

from contacts_shared.events import ImportEvent, ImportRowsRefused, event_of
from contacts_shared.kafka import Record
from contacts_shared.profiles import SchemaStore, project_profile_event
from log_svc.audit import trail_changes
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
    """Add a partition's batch of contact events to the contacts' audit trails, and erase the
    trails of contacts erased at the person's request. Both are idempotent: a batch handled
    again changes nothing."""
    changes = trail_changes(
        (parsed[1], parsed[0].time)
        for record in records
        if (parsed := event_of(record.value)) is not None
    )
    await trail.record(changes.entries)
    await trail.erase(changes.erased)


async def record_profile_event(record: Record, *, schemas: SchemaStore) -> None:
    """Keep each profile's schema at its newest version: the trail's fields are served by their
    names. Older or repeated events change nothing."""
    parsed = event_of(record.value)
    if parsed is not None:
        await project_profile_event(*parsed, schemas)
