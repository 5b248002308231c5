"""Contact identity, typed values, statuses and events, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contact_svc.domain import Contact
from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactStatusChanged,
    ContactUpdated,
)
from contacts_shared.profiles import ProfileNotWritable, ProfileSchema
from contacts_shared.schema import ContactStatus, FieldSpec, FieldType, ProfileType
from contacts_shared.values import ValuesInvalid

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
REGULAR = ProfileSchema(
    profile_id="p1",
    account_id="acct",
    type=ProfileType.REGULAR,
    fields=(
        FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
        FieldSpec(name="Ciudad", key="ciudad", type=FieldType.TEXT),
        FieldSpec(name="Edad", key="edad", type=FieldType.NUMBER),
        FieldSpec(name="Fecha de Nacimiento", key="fecha_de_nacimiento", type=FieldType.DATE),
        FieldSpec(name="VIP", key="vip", type=FieldType.BOOLEAN),
        FieldSpec(name="Nombre", key="nombre", type=FieldType.TEXT, required=True),
    ),
    version=3,
)


def test_values_are_converted_by_field_type_and_matched_by_name_ignoring_case() -> None:
    values = REGULAR.values(
        {
            "ciudad": " Santiago ",
            "EDAD": "42",
            "Fecha de Nacimiento": "31/12/1990",
            "vip": "sí",
            "Nombre": "Ana",
        },
        default_region="CL",
        partial=False,
    )
    assert values == {
        "ciudad": "Santiago",
        "edad": 42,
        "fecha_de_nacimiento": "1990-12-31",
        "vip": True,
        "nombre": "Ana",
    }
    assert REGULAR.values({"Edad": "3,5"}, default_region="CL", partial=True) == {"edad": 3.5}
    assert REGULAR.values(
        {"Fecha de Nacimiento": "1990-12-31T10:00:00"}, default_region="CL", partial=True
    ) == {"fecha_de_nacimiento": "1990-12-31"}


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(ValuesInvalid) as caught:
        REGULAR.values(
            {"Edad": "old", "VIP": "maybe", "Fecha de Nacimiento": "31/02/2020", "Color": "red"},
            default_region="CL",
            partial=False,
        )
    named = {p.field for p in caught.value.problems}
    assert named == {"Edad", "VIP", "Fecha de Nacimiento", "Color", "Nombre"}


def test_partial_values_need_no_required_fields_but_cannot_clear_them() -> None:
    assert REGULAR.values({"Ciudad": None}, default_region="CL", partial=True) == {"ciudad": None}
    with pytest.raises(ValuesInvalid):
        REGULAR.values({"Nombre": ""}, default_region="CL", partial=True)


def test_virtual_profiles_hold_no_contacts() -> None:
    virtual = ProfileSchema("v", "acct", ProfileType.VIRTUAL, (), 1)
    with pytest.raises(ProfileNotWritable):
        virtual.identity_key("a@b.co", "CL")


def make_contact() -> Contact:
    key = REGULAR.identity_key("Ana@Example.com", "CL")
    values = REGULAR.values({"Nombre": "Ana", "Ciudad": "Lima"}, default_region="CL", partial=False)
    return Contact.create(schema=REGULAR, key=key, values=values, source="api", now=NOW)


def test_a_new_contact_carries_its_identity_and_one_event() -> None:
    contact = make_contact()
    assert contact.id == "p1:ana@example.com"
    assert contact.fields == {"email": "ana@example.com", "nombre": "Ana", "ciudad": "Lima"}
    [event] = contact.take_events()
    assert isinstance(event, ContactCreated) and event.contact.version == 1
    assert event.subject() == "p1:ana@example.com"


def test_updates_record_the_changed_keys_and_skip_no_ops() -> None:
    contact = make_contact()
    contact.take_events()
    assert (
        contact.set_values(
            {"ciudad": "Lima"}, schema=REGULAR, replace_all=False, source="api", now=LATER
        )
        == ()
    )
    assert contact.take_events() == [] and contact.version == 1
    changed = contact.set_values(
        {"ciudad": None, "edad": 30},
        schema=REGULAR,
        replace_all=False,
        source="webhook:s1",
        now=LATER,
    )
    assert changed == ("ciudad", "edad")
    [event] = contact.take_events()
    assert isinstance(event, ContactUpdated) and event.contact.fields["edad"] == 30
    assert event.contact.source == "webhook:s1" and contact.version == 2
    replaced = contact.set_values(
        {"nombre": "Ana"}, schema=REGULAR, replace_all=True, source="api", now=LATER
    )
    assert replaced == ("edad",) and contact.fields == {"email": "ana@example.com", "nombre": "Ana"}


def test_status_changes_are_stamped_and_evented() -> None:
    contact = make_contact()
    contact.take_events()
    assert not contact.change_status(ContactStatus.ACTIVE, reason=None, source="api", now=LATER)
    assert contact.change_status(
        ContactStatus.UNSUBSCRIBED, reason="clicked unsubscribe", source="api", now=LATER
    )
    [event] = contact.take_events()
    assert isinstance(event, ContactStatusChanged)
    assert event.previous_status is ContactStatus.ACTIVE
    assert (contact.status_reason, contact.status_changed_at) == ("clicked unsubscribe", LATER)


def test_deletion_is_evented_with_the_next_version() -> None:
    contact = make_contact()
    contact.take_events()
    contact.delete(source="api", now=LATER)
    [event] = contact.take_events()
    assert isinstance(event, ContactDeleted) and event.version == 2
    assert not event.erased and contact.fields["ciudad"] == "Lima"


def test_an_erasure_keeps_nothing_but_the_key_and_says_so() -> None:
    contact = make_contact()
    contact.change_status(
        ContactStatus.UNSUBSCRIBED, reason="told us by phone", source="api", now=NOW
    )
    contact.take_events()
    contact.delete(source="webhook:s1", now=LATER, erase=True)
    [event] = contact.take_events()
    assert isinstance(event, ContactDeleted) and event.erased and event.version == 3
    assert contact.fields == {"email": contact.key}
    assert (contact.deleted, contact.erased, contact.status_reason) == (True, True, None)
