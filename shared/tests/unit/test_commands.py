"""Records of `contacts.commands`: one command, or a delivery's upserts of one partition."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from contacts_shared.commands import UpsertContact, UpsertContacts, commands_in


def upsert(key: str, **values: object) -> UpsertContact:
    return UpsertContact(
        command_id=key,
        account_id="a1",
        profile_id="p1",
        key=key,
        values={"email": key, **values},
        source="webhook:s1",
        received_at=datetime(2026, 11, 29, tzinfo=UTC),
    )


def test_a_batch_record_carries_its_upserts_in_order() -> None:
    upserts = (upsert("b@x.io", n=1), upsert("a@x.io"), upsert("b@x.io", n=2))
    record = UpsertContacts(upserts=upserts).model_dump_json().encode()
    assert commands_in(record) == upserts


def test_a_single_command_record_carries_itself() -> None:
    one = upsert("a@x.io")
    assert commands_in(one.model_dump_json().encode()) == (one,)


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValidationError):
        commands_in(b'{"type": "contacts.command.upsert_contacts", "upserts": []}')
