"""One contact's import rows applied, without I/O: outcomes per action, duplicates in a file,
redelivered rows repeating their outcomes, and one ContactImported per change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contact_svc.domain import Contact, import_rows
from contacts_shared.commands import ImportAction, ImportContact, RowOutcome
from contacts_shared.events import ContactImported
from contacts_shared.profiles import ProfileSchema
from contacts_shared.schema import ContactStatus, FieldSpec, FieldType, ProfileType

NOW = datetime(2026, 5, 1, tzinfo=UTC)
SCHEMA = ProfileSchema(
    "p1",
    "acct",
    ProfileType.REGULAR,
    (
        FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
        FieldSpec(name="Nombre", key="nombre", type=FieldType.TEXT),
        FieldSpec(name="Ciudad", key="ciudad", type=FieldType.TEXT),
    ),
    1,
)


def row(
    line: int, action: ImportAction = ImportAction.APPEND_OR_UPDATE, **values: Any
) -> ImportContact:
    return ImportContact(
        import_id="imp1",
        account_id="acct",
        profile_id="p1",
        key="ana@x.co",
        values=values,
        action=action,
        line=line,
        sequence=line,
    )


def new_contact(r: ImportContact) -> Contact:
    return Contact.create(schema=SCHEMA, key=r.key, values=dict(r.values), source=r.source, now=NOW)


def existing() -> Contact:
    contact = Contact.create(
        schema=SCHEMA, key="ana@x.co", values={"nombre": "Ana"}, source="api", now=NOW
    )
    contact.take_events()
    return contact


def apply(
    contact: Contact | None, *rows: ImportContact
) -> tuple[Contact | None, list[RowOutcome], bool]:
    return import_rows(contact, rows, schema=SCHEMA, new_contact=new_contact, now=NOW)


def test_a_new_contact_is_created_and_told_once_as_imported() -> None:
    contact, outcomes, write = apply(None, row(2, nombre="Ana"))
    assert outcomes == [RowOutcome.CREATED] and write
    assert contact is not None and contact.imported is not None
    [event] = contact.take_events()
    assert isinstance(event, ContactImported)
    assert (event.import_id, event.line, event.created) == ("imp1", 2, True)
    assert event.changed == ("email", "nombre")


def test_each_action_on_an_existing_contact() -> None:
    cases = [
        (ImportAction.APPEND, {"nombre": "Bea"}, RowOutcome.UNCHANGED, "Ana", False),
        (ImportAction.APPEND_OR_UPDATE, {"ciudad": "Lima"}, RowOutcome.UPDATED, "Ana", True),
        (ImportAction.APPEND_OR_UPDATE, {"nombre": "Ana"}, RowOutcome.UNCHANGED, "Ana", False),
        (ImportAction.OVERWRITE, {"nombre": "Ana"}, RowOutcome.UNCHANGED, "Ana", True),
        (ImportAction.UNSUBSCRIBE, {}, RowOutcome.UNSUBSCRIBED, "Ana", True),
    ]
    for action, values, outcome, name, write in cases:
        contact, outcomes, written = apply(existing(), row(3, action, **values))
        assert (outcomes, written) == ([outcome], write), action
        assert contact is not None and contact.fields["nombre"] == name
        assert (contact.imported is not None) == write, action
        if outcome is RowOutcome.UNSUBSCRIBED:
            assert contact.status is ContactStatus.UNSUBSCRIBED
            assert contact.status_source == "import:imp1"
            [event] = contact.take_events()
            assert isinstance(event, ContactImported)
            assert event.previous_status is ContactStatus.ACTIVE and event.changed == ("status",)


def test_unsubscribing_an_absent_contact_creates_nothing() -> None:
    assert apply(None, row(2, ImportAction.UNSUBSCRIBE)) == (None, [RowOutcome.NOT_FOUND], False)


def test_a_repeated_key_is_a_duplicate_and_the_last_row_wins() -> None:
    contact, outcomes, _ = apply(None, row(2, nombre="Ana"), row(5, nombre="Ana B"))
    assert outcomes == [RowOutcome.CREATED, RowOutcome.DUPLICATE]
    assert contact is not None and contact.fields["nombre"] == "Ana B"
    [event] = contact.take_events()
    assert isinstance(event, ContactImported) and event.line == 5 and event.created


def test_redelivered_rows_repeat_their_outcomes_however_the_batches_are_cut() -> None:
    first = [row(2, nombre="Ana"), row(5, nombre="Ana B"), row(9, nombre="Ana C")]
    contact, outcomes, _ = apply(None, *first)
    assert outcomes == [RowOutcome.CREATED, RowOutcome.DUPLICATE, RowOutcome.DUPLICATE]
    assert contact is not None
    contact.take_events()
    version = contact.version
    for cut in ([first[0]], first[:2], first, first[1:], [first[2]]):
        again, repeated, write = apply(contact, *cut)
        assert repeated == outcomes[first.index(cut[0]) :][: len(cut)]
        assert not write and again is not None and again.version == version
        assert again.fields["nombre"] == "Ana C" and not again.take_events()


def test_an_earlier_unchanged_row_is_not_applied_again_over_a_later_one() -> None:
    contact, outcomes, _ = apply(existing(), row(2, nombre="Ana"), row(4, nombre="Bea"))
    assert outcomes == [RowOutcome.UNCHANGED, RowOutcome.DUPLICATE]
    assert contact is not None
    again, repeated, write = apply(contact, row(2, nombre="Ana"))
    assert repeated == [RowOutcome.UNCHANGED] and not write
    assert again is not None and again.fields["nombre"] == "Bea"
