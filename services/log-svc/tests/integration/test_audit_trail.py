"""The audit trail's store against the real server: entries told twice (a redelivery, an event
published twice, both in one batch) are kept once; a contact erased at the person's request
loses its entries up to its erasure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactUpdated,
    DomainEvent,
    to_envelope,
)
from contacts_shared.kafka import Record
from contacts_shared.mongo import Collection, connect
from contacts_shared.schema import ContactSnapshot, ContactStatus
from log_svc.consumers import record_contact_events
from log_svc.repository import AuditTrail

pytestmark = pytest.mark.integration


def entry(version: int, change: str) -> dict[str, Any]:
    return {"_id": f"p1:a@x.io\x1f{version:012d}", "version": version, "change": change}


@pytest.fixture
async def collection(infrastructure: Any, unique: str) -> AsyncIterator[Collection]:
    client = connect(infrastructure.mongodb_url, app_name="test")
    yield client[f"audit_{unique}"]["audit_trail"]
    await client.close()


@pytest.fixture
def trail(collection: Collection) -> AuditTrail:
    return AuditTrail(collection)


async def test_entries_told_twice_are_kept_once(trail: AuditTrail) -> None:
    await trail.record([entry(1, "created"), entry(2, "updated")])
    await trail.record([entry(2, "updated"), entry(3, "status"), entry(3, "status")])
    listed = await trail.of_contact("p1:a@x.io", after_version=0, limit=10)
    assert [(e["version"], e["change"]) for e in listed] == [
        (1, "created"),
        (2, "updated"),
        (3, "status"),
    ]


AT = datetime(2026, 5, 1, tzinfo=UTC)


def snapshot(key: str, version: int) -> ContactSnapshot:
    return ContactSnapshot(
        id=f"p1:{key}",
        account_id="a1",
        profile_id="p1",
        key=key,
        fields={"email": key},
        status=ContactStatus.ACTIVE,
        status_source="api",
        status_changed_at=AT,
        source="api",
        version=version,
        created_at=AT,
        updated_at=AT,
    )


def created(key: str, version: int = 1) -> ContactCreated:
    return ContactCreated(contact=snapshot(key, version))


def updated(key: str, version: int) -> ContactUpdated:
    return ContactUpdated(contact=snapshot(key, version), changed=("email",))


def erased(key: str, version: int) -> ContactDeleted:
    return ContactDeleted(
        contact_id=f"p1:{key}",
        account_id="a1",
        profile_id="p1",
        key=key,
        version=version,
        status=ContactStatus.ACTIVE,
        created_at=AT,
        source="webhook:s1",
        erased=True,
    )


def records(*events: DomainEvent) -> list[Record]:
    return [
        ConsumerRecord(
            topic="contacts.events",
            partition=0,
            offset=offset,
            timestamp=0,
            timestamp_type=0,
            key=event.subject().encode(),
            value=to_envelope(event, account_id="a1", source="test").model_dump_json().encode(),
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=0,
            headers=(),
        )
        for offset, event in enumerate(events)
    ]


async def test_an_erased_contact_keeps_no_entry_up_to_its_erasure(trail: AuditTrail) -> None:
    await record_contact_events(
        records(created("a@x.io"), updated("a@x.io", 2), created("a@x.io.b")), trail=trail
    )
    # Erased with a change of the same batch before it, then added again.
    erasure = records(updated("a@x.io", 3), erased("a@x.io", 4), created("a@x.io", 5))
    for _ in range(2):  # delivered again
        await record_contact_events(erasure, trail=trail)
        kept = await trail.of_contact("p1:a@x.io", after_version=0, limit=10)
        assert [(e["version"], e["change"]) for e in kept] == [(5, "created")]
    # Another contact whose key starts the same keeps its trail.
    other = await trail.of_contact("p1:a@x.io.b", after_version=0, limit=10)
    assert [e["version"] for e in other] == [1]


async def test_an_entry_is_one_small_document_under_the_id_index_alone(
    trail: AuditTrail, collection: Collection
) -> None:
    await record_contact_events(records(created("a@x.io"), updated("a@x.io", 2)), trail=trail)
    # Stored without the contact id and version its `_id` holds; a creation without the field
    # names its values tell.
    documents = [d async for d in collection.find().sort("_id", 1)]
    assert [sorted(d) for d in documents] == [
        ["_id", "account_id", "at", "change", "source", "status", "values"],
        ["_id", "account_id", "at", "change", "fields", "source", "status", "values"],
    ]
    listed = await trail.of_contact("p1:a@x.io", after_version=0, limit=10)
    assert [(e["contact_id"], e["version"], e["values"]) for e in listed] == [
        ("p1:a@x.io", 1, {"email": "a@x.io"}),
        ("p1:a@x.io", 2, {"email": "a@x.io"}),
    ]
    assert [index["name"] async for index in await collection.list_indexes()] == ["_id_"]
