"""Audit-trail entries from contact events, and erasures at the person's request."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from contacts_shared.commands import ImportAction
from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactImported,
    ContactStatusChanged,
    ContactUpdated,
    ProfileDeleted,
)
from contacts_shared.schema import ContactSnapshot, ContactStatus, ProfileType
from log_svc.audit import (
    audit_entry,
    erased_range,
    served_entries,
    stored_document,
    stored_entry,
    trail_changes,
    trail_range,
)

AT = datetime(2026, 5, 1, tzinfo=UTC)


def snapshot(
    version: int,
    status: ContactStatus = ContactStatus.ACTIVE,
    source: str = "api",
    key: str = "ana@x.cl",
    **values: Any,
) -> ContactSnapshot:
    return ContactSnapshot(
        id=f"p1:{key}",
        account_id="a1",
        profile_id="p1",
        key=key,
        fields={"email": key, "nombre": "Ana"} | values,
        status=status,
        status_reason="asked by mail" if status is not ContactStatus.ACTIVE else None,
        status_source=source,
        status_changed_at=AT,
        source=source,
        version=version,
        created_at=AT,
        updated_at=AT,
    )


def deleted(
    version: int, *, erased: bool = False, status: ContactStatus = ContactStatus.ACTIVE
) -> ContactDeleted:
    return ContactDeleted(
        contact_id="p1:ana@x.cl",
        account_id="a1",
        profile_id="p1",
        key="ana@x.cl",
        version=version,
        status=status,
        created_at=AT,
        source="import:i2",
        erased=erased,
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
        audit_entry(deleted(4, status=ContactStatus.UNSUBSCRIBED), AT),
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


def test_an_erasure_leaves_nothing_of_the_contact_up_to_it() -> None:
    updated = ContactUpdated(contact=snapshot(2), changed=("nombre",))
    changes = trail_changes(
        (event, AT)
        for event in [
            ContactCreated(contact=snapshot(1)),
            ContactCreated(contact=snapshot(1, key="ana@x.cl.other")),
            updated,
            deleted(3, erased=True),
            ContactCreated(contact=snapshot(4)),  # added again, and erased again
            deleted(5, erased=True),
            ContactCreated(contact=snapshot(6)),
            updated,  # copies the relay published again, late
            deleted(3, erased=True),
        ]
    )
    assert audit_entry(deleted(3, erased=True), AT) is None
    assert [(e["contact_id"], e["version"]) for e in changes.entries] == [
        ("p1:ana@x.cl.other", 1),
        ("p1:ana@x.cl", 6),
    ]
    assert changes.erased == {"p1:ana@x.cl": 5}
    window = erased_range("p1:ana@x.cl", 5)
    ids = ["p1:ana@x.cl\x1f000000000001", "p1:ana@x.cl\x1f000000000005"]
    assert all(window["$gt"] < i <= window["$lte"] for i in ids)
    # Neither the contact added again nor another contact whose key starts the same.
    for kept in ["p1:ana@x.cl\x1f000000000006", "p1:ana@x.cl.other\x1f000000000001"]:
        assert not window["$gt"] < kept <= window["$lte"]


NAMES = {"email": "Email", "nombre": "Nombre", "nacimiento": "Fecha de nacimiento"}


def served(*events: Any) -> list[dict[str, Any]]:
    entries = [audit_entry(event, AT) for event in events]
    return served_entries([e for e in entries if e is not None], None, NAMES)


def test_each_entry_tells_its_fields_by_name_old_to_new() -> None:
    trail = served(
        ContactCreated(contact=snapshot(1, nacimiento=date(1990, 2, 3))),
        ContactUpdated(contact=snapshot(2, nombre="Anita", nacimiento=None), changed=("nombre",)),
        ContactImported(
            contact=snapshot(3, source="import:i1", nombre="Ana María", color="rojo"),
            import_id="i1",
            action=ImportAction.APPEND_OR_UPDATE,
            line=4,
            created=False,
            changed=("nombre", "color", "nacimiento"),
            previous_status=None,
        ),
    )
    assert [e["changes"] for e in trail] == [
        [
            {"field": "Email", "old": None, "new": "ana@x.cl"},
            {"field": "Fecha de nacimiento", "old": None, "new": "1990-02-03"},
            {"field": "Nombre", "old": None, "new": "Ana"},
        ],
        [{"field": "Nombre", "old": "Ana", "new": "Anita"}],
        [
            {"field": "Nombre", "old": "Anita", "new": "Ana María"},
            # A field deleted from the profile since keeps its key as name.
            {"field": "color", "old": None, "new": "rojo"},
            # Cleared at version 2 (None), still none.
            {"field": "Fecha de nacimiento", "old": None, "new": None},
        ],
    ]
    assert (trail[2]["import_id"], trail[2]["line"], trail[2]["source"]) == ("i1", 4, "import:i1")


def test_a_status_change_is_told_with_its_reason_not_as_a_field() -> None:
    imported = ContactImported(
        contact=snapshot(3, ContactStatus.UNSUBSCRIBED, source="import:i1", nombre="Ana M"),
        import_id="i1",
        action=ImportAction.APPEND_OR_UPDATE,
        line=9,
        created=False,
        changed=("nombre", "status"),
        previous_status=ContactStatus.BOUNCED,
    )
    trail = served(
        ContactCreated(contact=snapshot(1)),
        ContactStatusChanged(
            contact=snapshot(2, ContactStatus.BOUNCED), previous_status=ContactStatus.ACTIVE
        ),
        imported,
        deleted(4, status=ContactStatus.UNSUBSCRIBED),
    )
    told = [(e["previous_status"], e["status"], e["status_reason"]) for e in trail[1:3]]
    assert told == [
        ("active", "bounced", "asked by mail"),
        ("bounced", "unsubscribed", "asked by mail"),
    ]
    assert trail[1]["changes"] == []
    assert trail[2]["changes"] == [{"field": "Nombre", "old": "Ana", "new": "Ana M"}]
    assert (trail[3]["change"], trail[3]["changes"]) == ("deleted", [])


def test_the_first_entry_of_a_page_takes_its_old_values_from_the_entry_before() -> None:
    first = audit_entry(ContactCreated(contact=snapshot(1)), AT)
    second = audit_entry(ContactUpdated(contact=snapshot(2, nombre="Bea"), changed=("nombre",)), AT)
    assert first is not None and second is not None
    (alone,) = served_entries([second], first, {})
    assert alone["changes"] == [{"field": "nombre", "old": "Ana", "new": "Bea"}]
    # Without the entry before (erased, or older than kept values): the old value is unknown.
    (unknown,) = served_entries([second], None, {})
    assert unknown["changes"] == [{"field": "nombre", "old": None, "new": "Bea"}]
    # A contact added again after a deletion starts afresh.
    again = audit_entry(ContactCreated(contact=snapshot(4)), AT)
    assert again is not None
    (created,) = served_entries([again], second, {})
    assert all(change["old"] is None for change in created["changes"])
    assert served_entries([], first, {}) == []


def test_an_entry_is_stored_without_what_its_id_and_values_tell() -> None:
    born = date(1990, 2, 3)
    created = audit_entry(
        ContactCreated(contact=snapshot(1, "active", "webhook:s1", nacimiento=born)), AT
    )
    assert created is not None
    document = stored_document(created)
    # The values once, as JSON, and not the rest of the snapshot; no contact id or version (the
    # `_id` holds them), no field names (the values' keys), no attribute without a value.
    assert document == {
        "_id": "p1:ana@x.cl\x1f000000000001",
        "at": AT,
        "account_id": "a1",
        "change": "created",
        "source": "webhook:s1",
        "status": "active",
        "values": {"email": "ana@x.cl", "nombre": "Ana", "nacimiento": "1990-02-03"},
    }
    assert stored_entry(document) == created
    updated = audit_entry(
        ContactUpdated(contact=snapshot(2, nombre="Bea"), changed=("nombre",)), AT
    )
    assert updated is not None
    assert sorted(stored_document(updated)) == [
        "_id",
        "account_id",
        "at",
        "change",
        "fields",
        "source",
        "status",
        "values",
    ]
    # Served, a creation names its fields; one stored naming them (before) is served the same.
    (served_now,) = served_entries([stored_entry(document)], None, {})
    (served_before,) = served_entries(
        [{**created, "fields": ["email", "nacimiento", "nombre"]}], None, {}
    )
    assert served_now == served_before
    assert served_now["fields"] == ["email", "nacimiento", "nombre"]
