"""Audit-trail entries from contact events."""

from __future__ import annotations

from datetime import UTC, datetime

from contacts_shared.commands import ImportAction
from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactImported,
    ContactStatusChanged,
    ProfileDeleted,
)
from contacts_shared.schema import ContactSnapshot, ContactStatus, ProfileType
from log_svc.audit import audit_entry, trail_range

AT = datetime(2026, 5, 1, tzinfo=UTC)


def snapshot(
    version: int, status: ContactStatus = ContactStatus.ACTIVE, source: str = "api"
) -> ContactSnapshot:
    return ContactSnapshot(
        id="p1:ana@x.cl",
        account_id="a1",
        profile_id="p1",
        key="ana@x.cl",
        fields={"email": "ana@x.cl", "nombre": "Ana"},
        status=status,
        status_source=source,
        status_changed_at=AT,
        source=source,
        version=version,
        created_at=AT,
        updated_at=AT,
    )


def test_each_change_becomes_one_entry_with_its_source() -> None:
    entries = [
        audit_entry(ContactCreated(contact=snapshot(1, source="webhook:s1")), AT),
        audit_entry(
            ContactImported(
                contact=snapshot(2, source="import:i1"),
                import_id="i1",
                action=ImportAction.APPEND_OR_UPDATE,
                line=7,
                created=False,
                changed=("nombre",),
                previous_status=None,
            ),
            AT,
        ),
        audit_entry(
            ContactStatusChanged(
                contact=snapshot(3, ContactStatus.UNSUBSCRIBED),
                previous_status=ContactStatus.ACTIVE,
            ),
            AT,
        ),
        audit_entry(
            ContactDeleted(
                contact_id="p1:ana@x.cl",
                account_id="a1",
                profile_id="p1",
                key="ana@x.cl",
                version=4,
                status=ContactStatus.UNSUBSCRIBED,
                created_at=AT,
                source="import:i2",
            ),
            AT,
        ),
    ]
    assert [e["change"] for e in entries if e] == [
        "created",
        "updated",
        "status_changed",
        "deleted",
    ]
    assert [e["source"] for e in entries if e] == ["webhook:s1", "import:i1", "api", "import:i2"]
    assert entries[1] is not None and (entries[1]["import_id"], entries[1]["line"]) == ("i1", 7)
    ids = [e["_id"] for e in entries if e]
    assert ids == sorted(ids)  # version order is `_id` order
    window = trail_range("p1:ana@x.cl", 2)
    assert [i for i in ids if window["$gt"] < i < window["$lt"]] == ids[2:]
    # Another contact whose key starts the same is outside the range.
    assert not window["$gt"] < "p1:ana@x.cl.other\x1f000000000001" < window["$lt"]


def test_other_events_leave_no_entry() -> None:
    gone = ProfileDeleted(profile_id="p1", type=ProfileType.REGULAR, version=3)
    assert audit_entry(gone, AT) is None
