"""Kafka entry points of import-svc: its projection of profile schemas, and contact-svc's
outcomes of import rows and purges."""

from __future__ import annotations

from collections.abc import Sequence

from contacts_shared.commands import IMPORT_RESULT
from contacts_shared.events import event_of
from contacts_shared.kafka import Record
from contacts_shared.profiles import SchemaStore, project_profile_event
from import_svc.handlers import fold_results
from import_svc.repository import ImportStore


async def follow_profiles(record: Record, *, schemas: SchemaStore) -> None:
    """Keep each profile's fields at their newest version (headers are checked against them)."""
    parsed = event_of(record.value)
    if parsed is not None:
        await project_profile_event(*parsed, schemas)


async def count_outcomes(records: Sequence[Record], *, store: ImportStore) -> None:
    """Fold a partition's batch of outcomes into the imports they belong to."""
    await fold_results(
        [IMPORT_RESULT.validate_json(record.value or b"") for record in records], store
    )
