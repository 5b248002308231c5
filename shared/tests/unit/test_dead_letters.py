"""The pure parts of dead letters: what a parked record says, the headers it is replayed with,
which records a selection takes, and its marks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord
from cloudevents.core.bindings.common import CONTENT_TYPE_HEADER
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from contacts_shared.dead_letters import (
    REPLAYED_FROM_HEADER,
    DeadLetter,
    Position,
    Selection,
    Topics,
    dead_letter,
    mark_message,
    parse_position,
    parse_selection,
    parse_since,
    replay_headers,
    replay_message,
    topics_of,
)
from contacts_shared.events import ProfileDeleted, to_envelope
from contacts_shared.kafka import event_message
from contacts_shared.schema import ProfileType

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)

# As GuardedHandler._dead_letter writes them: the record's own headers, then its four.
PARKED_HEADERS = (
    ("event-type", b"contact.upserted"),
    ("traceparent", b"00-abc-def-01"),
    ("dlq-error", b"ValueError('no such field: edad')"),
    ("dlq-original-topic", b"contacts.commands"),
    ("dlq-original-partition", b"4"),
    ("dlq-original-offset", b"1042"),
)


def record(
    *,
    partition: int = 2,
    offset: int = 7,
    key: bytes | None = b"contact-1",
    value: bytes | None = b'{"id": 1}',
    headers: tuple[tuple[str, bytes], ...] = PARKED_HEADERS,
    timestamp: datetime = NOW,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="contacts.commands.dlq",
        partition=partition,
        offset=offset,
        timestamp=int(timestamp.timestamp() * 1000),
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=list(headers),
    )


TOPICS = Topics("contacts.commands", "contacts.commands.dlq")


def letter(**fields: object) -> DeadLetter:
    return dead_letter(record(**fields), TOPICS)  # type: ignore[arg-type]


def test_a_topic_is_named_either_as_the_original_or_as_its_dead_letter_topic() -> None:
    assert topics_of("contacts.commands") == TOPICS
    assert topics_of("contacts.commands.dlq") == TOPICS
    assert topics_of("contacts.commands.dlq").marks == "contacts.commands.dlq.replayed"
    assert topics_of("imports.events", "-parked") == Topics(
        "imports.events", "imports.events-parked"
    )
    assert topics_of(".dlq") == Topics(".dlq", ".dlq.dlq")  # nothing before the suffix
    with pytest.raises(ValueError):
        topics_of("contacts.commands", "")


def test_positions_read_as_list_shows_them() -> None:
    assert parse_position("3:1042") == Position(3, 1042)
    assert parse_position(" 0:0 ") == Position(0, 0)
    assert str(Position(3, 1042)) == "3:1042"
    for bad in ("3", "3:", ":4", "a:1", "-1:4", "3:4:5", "3 : 4", ""):
        with pytest.raises(ValueError, match="PARTITION:OFFSET"):
            parse_position(bad)


def test_a_parked_record_says_where_it_came_from_and_why() -> None:
    parked = letter()
    assert parked.position == Position(2, 7)
    assert parked.original_topic == "contacts.commands"
    assert (parked.original_partition, parked.original_offset) == (4, 1042)
    assert parked.error == "ValueError('no such field: edad')"
    assert parked.key == "contact-1" and parked.size == len(b'{"id": 1}')
    assert parked.timestamp == NOW and not parked.replayed
    assert dead_letter(record(), TOPICS, {Position(2, 7)}).replayed
    shown = parked.as_json()
    assert shown["original_offset"] == 1042 and shown["timestamp"] == NOW.isoformat()
    assert shown["value"] == '{"id": 1}' and shown["replayed"] is False
    json.dumps(shown)  # one JSON object per line


def test_a_record_parked_again_after_a_replay_tells_its_latest_story() -> None:
    again = (
        *PARKED_HEADERS[:2],
        ("dlq-replayed-from", b"contacts.commands.dlq:2:7"),
        ("dlq-error", b"KeyError('first')"),
        ("dlq-original-offset", b"1"),
        ("dlq-error", b"KeyError('second')"),
        ("dlq-original-offset", b"2"),
    )
    parked = letter(headers=again)
    assert parked.error == "KeyError('second')" and parked.original_offset == 2


def test_a_record_parked_by_hand_without_dlq_headers_comes_from_the_dlq_name() -> None:
    parked = letter(headers=(("dlq-original-offset", b"not a number"),), key=None, value=None)
    assert parked.original_topic == "contacts.commands"
    assert parked.original_partition is None and parked.original_offset is None
    assert parked.error == "" and parked.key is None and parked.value == b""


def test_replayed_headers_are_the_records_own_plus_where_it_was_parked() -> None:
    headers = replay_headers(PARKED_HEADERS, "contacts.commands.dlq", Position(2, 7))
    assert headers == (
        ("event-type", b"contact.upserted"),
        ("traceparent", b"00-abc-def-01"),
        (REPLAYED_FROM_HEADER, b"contacts.commands.dlq:2:7"),
    )
    # Parked again after a replay: one replayed-from header, the new place.
    again = (*headers, *PARKED_HEADERS[2:])
    assert replay_headers(again, "contacts.commands.dlq", Position(0, 99)) == (
        *headers[:2],
        (REPLAYED_FROM_HEADER, b"contacts.commands.dlq:0:99"),
    )
    assert replay_headers((), "t.dlq", Position(0, 0)) == ((REPLAYED_FROM_HEADER, b"t.dlq:0:0"),)


def test_a_replay_sends_the_original_key_and_value_to_the_original_topic() -> None:
    message = replay_message(letter())
    assert (message.topic, message.key, message.value) == (
        "contacts.commands",
        "contact-1",
        b'{"id": 1}',
    )
    assert message.headers[-1] == (REPLAYED_FROM_HEADER, b"contacts.commands.dlq:2:7")
    assert message.partition is None  # the key chooses, as it did the first time
    assert replay_message(letter(key=None)).key == ""  # as GuardedHandler parked it


def test_a_replayed_event_is_still_a_structured_cloud_event() -> None:
    deleted = ProfileDeleted(profile_id="p1", type=ProfileType.REGULAR, version=4)
    envelope = to_envelope(deleted, account_id="acct", source="/profile-svc")
    event = event_message("profiles.events", "p1", envelope.model_dump_json().encode())
    parked = letter(headers=(*event.headers, *PARKED_HEADERS[2:]), key=b"p1", value=event.value)
    message = replay_message(parked)
    assert message.headers[0] == (CONTENT_TYPE_HEADER, JSONFormat.CONTENT_TYPE.encode())
    kafka = KafkaMessage(dict(message.headers), message.key.encode(), message.value)
    assert from_kafka(kafka, JSONFormat()).get_attributes() == {
        **envelope.model_dump(exclude={"data"}),
        "partitionkey": "p1",
    }


def test_a_mark_is_keyed_by_the_dead_letter_position() -> None:
    mark = mark_message(letter(), "contacts.commands.dlq.replayed", NOW)
    assert (mark.topic, mark.key) == ("contacts.commands.dlq.replayed", "2:7")
    assert json.loads(mark.value) == {"replayed_at": NOW.isoformat(), "to": "contacts.commands"}
    assert parse_position(mark.key) == Position(2, 7)


def test_since_is_a_duration_back_or_a_moment() -> None:
    assert parse_since("90s", NOW) == NOW - timedelta(seconds=90)
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2025-03-01T08:00:00", NOW) == datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert parse_since("2025-03-01T08:00:00-03:00", NOW) == datetime(2025, 3, 1, 11, tzinfo=UTC)
    for bad in ("yesterday", "2w", "-2h", ""):
        with pytest.raises(ValueError, match="duration"):
            parse_since(bad, NOW)


def test_a_selection_is_all_or_filters_never_neither() -> None:
    assert parse_selection(everything=True, now=NOW) == Selection()
    chosen = parse_selection(
        everything=False, offsets=["2:7", "0:3", "2:7"], since="1h", error_contains="Edad", now=NOW
    )
    assert chosen.positions == {Position(2, 7), Position(0, 3)}
    assert chosen.since == NOW - timedelta(hours=1) and chosen.error_contains == "Edad"
    with pytest.raises(ValueError, match="choose"):
        parse_selection(everything=False, now=NOW)
    with pytest.raises(ValueError, match="--all"):
        parse_selection(everything=True, offsets=["1:1"], now=NOW)
    with pytest.raises(ValueError, match="PARTITION:OFFSET"):
        parse_selection(everything=False, offsets=["1"], now=NOW)
    with pytest.raises(ValueError, match="some text"):
        parse_selection(everything=False, error_contains="", now=NOW)


def test_a_selection_takes_the_records_matching_every_filter() -> None:
    parked = letter()
    assert Selection().matches(parked)
    assert Selection(positions=frozenset({Position(2, 7)})).matches(parked)
    assert not Selection(positions=frozenset({Position(2, 8)})).matches(parked)
    assert Selection(since=NOW).matches(parked)
    assert not Selection(since=NOW + timedelta(seconds=1)).matches(parked)
    assert Selection(error_contains="NO SUCH FIELD").matches(parked)
    assert not Selection(error_contains="timeout").matches(parked)
    both = Selection(positions=frozenset({Position(2, 7)}), error_contains="timeout")
    assert not both.matches(parked)
