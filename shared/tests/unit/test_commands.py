"""Records of `contacts.commands`: one command, or a delivery's upserts of one partition."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from contacts_shared.commands import UpsertContact, UpsertContacts, commands_in, upserts_records


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


def test_upserts_go_in_records_of_bounded_size_in_order() -> None:
    upserts = [upsert(f"c{i}@x.io", note="n" * 300) for i in range(40)]
    records = list(upserts_records(upserts, max_bytes=4096))
    assert len(records) > 1
    assert all(len(record) <= 4096 for record in records)
    assert [c for record in records for c in commands_in(record)] == upserts
    [whole] = upserts_records(upserts)
    assert commands_in(whole) == tuple(upserts)
    big = upsert("big@x.io", note="n" * 5000)  # alone over the bound: a record of its own
    assert [commands_in(r) for r in upserts_records([big], max_bytes=4096)] == [(big,)]


def test_a_single_command_record_carries_itself() -> None:
    one = upsert("a@x.io")
    assert commands_in(one.model_dump_json().encode()) == (one,)


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValidationError):
        commands_in(b'{"type": "contacts.command.upsert_contacts", "upserts": []}')
