"""Settings parsing and the event envelope contract."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from contacts_shared.catalogue import render
from contacts_shared.events import (
    EVENT_TYPES,
    EventEnvelope,
    ProfileDeleted,
    UnknownEventType,
    parse_event,
    to_envelope,
)
from contacts_shared.schema import ProfileType
from contacts_shared.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[3]


def test_api_keys_are_parsed_from_key_equals_account_pairs() -> None:
    settings = ServiceSettings(api_keys=" k1=acct-1, k2 = acct-2 ,")  # type: ignore[arg-type]
    assert settings.api_keys == {"k1": "acct-1", "k2": "acct-2"}


def test_malformed_api_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="key=account_id"):
        ServiceSettings(api_keys="just-a-key")  # type: ignore[arg-type]


def test_production_refuses_local_keys_and_no_keys() -> None:
    with pytest.raises(ValidationError, match="local use only"):
        ServiceSettings(environment="production", api_keys={"local-dev-key": "a"})
    with pytest.raises(ValidationError, match="must be set"):
        ServiceSettings(environment="production")
    assert ServiceSettings(environment="production", api_keys={"s3cr3t-long": "a"}).api_keys


def test_settings_come_from_contacts_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTACTS_KAFKA_BOOTSTRAP_SERVERS", "kafka:29092")
    monkeypatch.setenv("CONTACTS_API_KEYS", "abc=acct")
    settings = ServiceSettings()
    assert settings.kafka_bootstrap_servers == "kafka:29092"
    assert settings.api_keys == {"abc": "acct"}


def test_envelope_round_trips_through_json() -> None:
    event = ProfileDeleted(profile_id="p1", type=ProfileType.REGULAR, version=4)
    envelope = to_envelope(event, account_id="acct", source="/profile-svc")
    assert envelope.subject == "p1"
    assert envelope.type == "contacts.profile.deleted"
    assert envelope.time.tzinfo is not None and envelope.time <= datetime.now(UTC)
    again = EventEnvelope.model_validate_json(envelope.model_dump_json())
    assert again == envelope
    assert parse_event(again) == event


def test_unknown_event_types_are_refused() -> None:
    envelope = EventEnvelope(
        id="1",
        source="/x",
        type="contacts.nope",
        time=datetime.now(UTC),
        subject="s",
        accountid="a",
        dataversion="1",
        data={},
    )
    with pytest.raises(UnknownEventType):
        parse_event(envelope)


def test_every_event_type_is_past_tense_and_documented() -> None:
    for event_type, cls in EVENT_TYPES.items():
        assert event_type.startswith("contacts.")
        assert cls.__doc__, cls.__name__
        assert cls.__name__.endswith(
            (
                "Created",
                "Updated",
                "Deleted",
                "Added",
                "Removed",
                "Changed",
                "Imported",
                "Queued",
                "Started",
                "Progressed",
                "Completed",
                "Failed",
                "Cancelled",
                "Refused",
                "Rebuilt",
                # The names the design gives membership events: the verb sits mid-name.
                "EnteredSegment",
                "LeftSegment",
            )
        )


def test_the_event_catalogue_in_docs_is_up_to_date() -> None:
    assert (REPO / "docs" / "events.md").read_text() == render(), "run `make catalogue`"
