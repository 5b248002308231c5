"""Dead letters: list the records a consumer parked in `<topic><suffix>` and put chosen ones
back on their original topic, each once.

`GuardedHandler._dead_letter` parks a record with its own key, value and headers plus
`dlq-error`, `dlq-original-topic`, `dlq-original-partition` and `dlq-original-offset`. A replay
sends it back to its original topic with its key, value and own headers, the `dlq-*` ones
replaced by `dlq-replayed-from: <dlq topic>:<partition>:<offset>`.

Which dead-letter positions were replayed is kept in Kafka, in the compacted topic
`<dlq topic>.replayed` keyed `partition:offset`, each mark written only once the broker has
acknowledged (acks=all) the record it marks. A replay reads the marks first and skips what they
name, so running the same replay twice puts each record back once. Not committed offsets of a
group per dlq topic: a replay picks records (by position, age, error), and a committed offset
is one watermark per partition, which cannot say "3 replayed, 2 not"; a key per position can,
compaction keeps it as long as the topic lives, and a group's offsets expire once it is idle
(`offsets.retention.minutes`). A crash between a replay and its mark puts that record back a
second time on the next run, never marks one that was not put back: the consumers of every
topic are idempotent (event ids, aggregate versions), so a record twice is harmless. Two
replays of the same topic run at the same moment are not kept apart: run one at a time.

The pure parts come first (what a parked record says, which ones a replay picks, the headers
it goes back with), then the Kafka adapters (reading a topic to its end, replaying).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Counter

from contacts_shared.kafka import (
    DLQ_HEADER_PREFIX,
    ERROR_HEADER,
    ORIGINAL_OFFSET_HEADER,
    ORIGINAL_PARTITION_HEADER,
    ORIGINAL_TOPIC_HEADER,
    EventPublisher,
    OutgoingMessage,
    Record,
    ensure_topics,
)
from contacts_shared.topics import MARKS_SUFFIX

# The headers GuardedHandler._dead_letter adds; every header so prefixed is the dead letter's.
REPLAYED_FROM_HEADER = "dlq-replayed-from"

# Counted in the process that replays, beside contacts_dead_lettered_records_total.
REPLAYED = Counter(
    "contacts_dead_letters_replayed_total",
    "Dead-lettered records put back on their original topic, by original topic",
    ["topic"],
)

Outcome = Literal["replayed", "would-replay", "already-replayed", "skipped"]
Headers = tuple[tuple[str, bytes], ...]


class DeadLetterError(Exception):
    """A dead-letter command that cannot run as asked (unknown topic, bad selection)."""


# -- pure parts ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Position:
    """A record's place in its topic: partition and offset."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


_POSITION = re.compile(r"(\d+):(\d+)")


def parse_position(text: str) -> Position:
    """`PARTITION:OFFSET` (as `list` shows it) as a Position; ValueError otherwise."""
    match = _POSITION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not PARTITION:OFFSET, e.g. 3:1042")
    return Position(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class Topics:
    """An original topic, its dead-letter topic and the topic of its replay marks."""

    original: str
    dead_letters: str

    @property
    def marks(self) -> str:
        return self.dead_letters + MARKS_SUFFIX


def topics_of(topic: str, suffix: str = ".dlq") -> Topics:
    """The topics for `topic`, named either as the original or as its dead-letter topic."""
    if not suffix:
        raise ValueError("the dead-letter suffix is empty")
    if topic.endswith(suffix) and len(topic) > len(suffix):
        return Topics(topic[: -len(suffix)], topic)
    return Topics(topic, topic + suffix)


def header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    """The last value of header `name`: GuardedHandler appends its own after the record's."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def _int_header(headers: Iterable[tuple[str, bytes]], name: str) -> int | None:
    raw = header(headers, name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetter:
    """A parked record at `position` of dead-letter topic `topic`, and what it says."""

    topic: str
    position: Position
    timestamp: datetime  # when it was parked (the dead-letter record's create time)
    key: str | None
    value: bytes
    headers: Headers
    replayed: bool = False
    # Where a record lacking `dlq-original-topic` (put there by hand) came from: the dlq's name.
    default_original_topic: str | None = field(default=None, compare=False)

    @property
    def original_topic(self) -> str | None:
        raw = header(self.headers, ORIGINAL_TOPIC_HEADER)
        return raw.decode(errors="replace") if raw is not None else self.default_original_topic

    @property
    def original_partition(self) -> int | None:
        return _int_header(self.headers, ORIGINAL_PARTITION_HEADER)

    @property
    def original_offset(self) -> int | None:
        return _int_header(self.headers, ORIGINAL_OFFSET_HEADER)

    @property
    def error(self) -> str:
        raw = header(self.headers, ERROR_HEADER)
        return raw.decode(errors="replace") if raw is not None else ""

    @property
    def size(self) -> int:
        """The value's size in bytes."""
        return len(self.value)

    def as_json(self) -> dict[str, Any]:
        """The record as a JSON object (the value as UTF-8 text, for looking, not replaying)."""
        return {
            "dead_letter_topic": self.topic,
            "partition": self.position.partition,
            "offset": self.position.offset,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "key": self.key,
            "error": self.error,
            "timestamp": self.timestamp.isoformat(),
            "size": self.size,
            "replayed": self.replayed,
            "value": self.value.decode(errors="replace"),
        }


def dead_letter(record: Record, topics: Topics, replayed: Iterable[Position] = ()) -> DeadLetter:
    """The DeadLetter a record of the dead-letter topic is; `replayed` the positions marked."""
    position = Position(record.partition, record.offset)
    return DeadLetter(
        topic=record.topic,
        position=position,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        # GuardedHandler decoded the key to park it, so it is UTF-8.
        key=record.key.decode() if record.key is not None else None,
        value=record.value or b"",
        headers=tuple(record.headers),
        replayed=position in replayed,
        default_original_topic=topics.original,
    )


def replay_headers(
    headers: Iterable[tuple[str, bytes]], letter_topic: str, at: Position
) -> Headers:
    """The record's own headers without the `dlq-*` ones, and where it is replayed from.

    An earlier `dlq-replayed-from` goes too: a record parked again after a replay is replayed
    from its new place, and one header says which.
    """
    kept = tuple((key, value) for key, value in headers if not key.startswith(DLQ_HEADER_PREFIX))
    return (*kept, (REPLAYED_FROM_HEADER, f"{letter_topic}:{at}".encode()))


def replay_message(letter: DeadLetter) -> OutgoingMessage:
    """The record a replay sends: original topic, key and value, headers as `replay_headers`."""
    if letter.original_topic is None:
        raise ValueError(f"dead letter {letter.position} names no original topic")
    return OutgoingMessage(
        topic=letter.original_topic,
        key=letter.key or "",  # GuardedHandler parks a record without a key under ""
        value=letter.value,
        headers=replay_headers(letter.headers, letter.topic, letter.position),
    )


def mark_message(letter: DeadLetter, marks_topic: str, now: datetime) -> OutgoingMessage:
    """The mark saying `letter` was replayed, keyed by its position so compaction keeps one."""
    body = {"replayed_at": now.isoformat(), "to": letter.original_topic}
    return OutgoingMessage(marks_topic, str(letter.position), json.dumps(body).encode())


_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from `now` (`90s`, `30m`, `2h`, `7d`) or an ISO 8601 time
    (UTC when it names no zone); ValueError otherwise."""
    if match := _DURATION.fullmatch(text.strip()):
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay takes: those matching every filter given, or all."""

    positions: frozenset[Position] = frozenset()
    since: datetime | None = None
    error_contains: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.positions and letter.position not in self.positions:
            return False
        if self.since is not None and letter.timestamp < self.since:
            return False
        return self.error_contains is None or self.error_contains.lower() in letter.error.lower()


def parse_selection(
    *,
    everything: bool,
    offsets: Sequence[str] = (),
    since: str | None = None,
    error_contains: str | None = None,
    now: datetime,
) -> Selection:
    """A Selection from the command line: `--all`, or filters; never neither, so a replay of
    every record is asked for in so many words."""
    filtered = bool(offsets) or since is not None or error_contains is not None
    if everything and filtered:
        raise ValueError("--all takes every dead letter: no --offset, --since or --error-contains")
    if not everything and not filtered:
        raise ValueError(
            "choose the dead letters: --all, --offset P:O, --since or --error-contains"
        )
    if error_contains is not None and not error_contains:
        raise ValueError("--error-contains needs some text")
    return Selection(
        positions=frozenset(parse_position(text) for text in offsets),
        since=parse_since(since, now) if since is not None else None,
        error_contains=error_contains,
    )


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay did with one selected dead letter (`reason` when it skipped it)."""

    letter: DeadLetter
    outcome: Outcome
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            **({"reason": self.reason} if self.reason else {}),
            **self.letter.as_json(),
        }


# -- Kafka adapters -----------------------------------------------------------------------------


async def _partitions_of(bootstrap_servers: str, topic: str) -> list[int] | None:
    """The partition numbers of `topic`, None when it does not exist. From the metadata of all
    topics: asking for the one topic could create it where the broker creates on first use."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] == topic:
            return sorted(partition["partition"] for partition in entry["partitions"])
    return None


async def read_to_end(
    bootstrap_servers: str, topic: str, *, missing_ok: bool = False, idle_seconds: float = 30.0
) -> AsyncGenerator[Record, None]:
    """The records of `topic` from its beginning up to its end offsets at the time of the call,
    partition by partition in offset order, without a consumer group (nothing committed).

    Never waits for records written after the call. Raises DeadLetterError when the topic does
    not exist (unless `missing_ok`: then nothing), TimeoutError when a partition yields nothing
    for `idle_seconds` short of its end.
    """
    numbers = await _partitions_of(bootstrap_servers, topic)
    if numbers is None:
        if missing_ok:
            return
        raise DeadLetterError(f"no topic {topic}")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        # Records removed by retention while reading: carry on from the oldest left.
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, number) for number in numbers]
        ends = await consumer.end_offsets(partitions)
        loop = asyncio.get_running_loop()
        # One partition at a time, so the records come out in (partition, offset) order and only
        # one partition's fetch is buffered.
        for partition in partitions:
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            deadline = loop.time() + idle_seconds
            while await consumer.position(partition) < ends[partition]:
                batch = await consumer.getmany(partition, timeout_ms=500, max_records=500)
                records = batch.get(partition, [])
                if records:
                    deadline = loop.time() + idle_seconds
                elif loop.time() > deadline:
                    raise TimeoutError(
                        f"{topic} partition {partition.partition} gave nothing for "
                        f"{idle_seconds:g}s short of offset {ends[partition]}"
                    )
                for record in records:
                    if record.offset < ends[partition]:
                        yield record
    finally:
        await consumer.stop()


async def replayed_positions(bootstrap_servers: str, topics: Topics) -> set[Position]:
    """The dead-letter positions marked replayed in `topics.marks` (none while it is absent)."""
    positions: set[Position] = set()
    async with aclosing(read_to_end(bootstrap_servers, topics.marks, missing_ok=True)) as marks:
        async for record in marks:
            try:
                position = parse_position((record.key or b"").decode())
            except ValueError:
                continue  # not a mark: someone else's record
            # A tombstone takes a mark back (by hand), so that position can be replayed again.
            if record.value is None:
                positions.discard(position)
            else:
                positions.add(position)
    return positions


async def list_dead_letters(
    bootstrap_servers: str, topic: str, *, suffix: str = ".dlq"
) -> AsyncGenerator[DeadLetter, None]:
    """The dead letters of `topic` (original or dead-letter topic), as of the call, in
    (partition, offset) order, each saying whether it has been replayed."""
    topics = topics_of(topic, suffix)
    replayed = await replayed_positions(bootstrap_servers, topics)
    async with aclosing(read_to_end(bootstrap_servers, topics.dead_letters)) as records:
        async for record in records:
            yield dead_letter(record, topics, replayed)


async def _replay_batch(
    publisher: EventPublisher, topics: Topics, batch: Sequence[DeadLetter]
) -> list[ReplayOutcome]:
    await publisher.publish(replay_message(letter) for letter in batch)
    # Marked only once every record is acknowledged: a crash in between replays them again on
    # the next run (harmless: consumers are idempotent); marking first could lose them.
    now = datetime.now(UTC)
    await publisher.publish(mark_message(letter, topics.marks, now) for letter in batch)
    for letter in batch:
        REPLAYED.labels(topic=letter.original_topic).inc()
    return [ReplayOutcome(replace(letter, replayed=True), "replayed") for letter in batch]


async def replay_dead_letters(
    bootstrap_servers: str,
    topic: str,
    selection: Selection,
    *,
    suffix: str = ".dlq",
    dry_run: bool = False,
    batch_size: int = 200,
    client_id: str = "contacts-dead-letters",
) -> AsyncGenerator[ReplayOutcome, None]:
    """Put the selected dead letters of `topic` not yet replayed back on their original topic
    (acks=all, idempotent producer), marking each; an outcome per selected dead letter, in
    (partition, offset) order. `dry_run` sends and marks nothing."""
    topics = topics_of(topic, suffix)
    publisher = EventPublisher(bootstrap_servers, client_id=client_id, topics=(), partitions=1)
    # One partition, compacted: a mark is a few bytes, written once a replayed record.
    existing = (
        set()
        if dry_run
        else await ensure_topics(
            bootstrap_servers, [topics.marks], 1, configs={"cleanup.policy": "compact"}
        )
    )
    pending: list[DeadLetter] = []  # sent a batch at a time: one wait for acks per batch
    try:
        letters = list_dead_letters(bootstrap_servers, topic, suffix=suffix)
        async with aclosing(letters):
            async for letter in letters:
                if not selection.matches(letter):
                    continue
                if letter.replayed:
                    yield ReplayOutcome(letter, "already-replayed")
                elif dry_run:
                    yield ReplayOutcome(letter, "would-replay")
                elif letter.original_topic not in existing:
                    reason = f"original topic {letter.original_topic} does not exist"
                    yield ReplayOutcome(letter, "skipped", reason)
                else:
                    pending.append(letter)
                    if len(pending) >= batch_size:
                        for outcome in await _replay_batch(publisher, topics, pending):
                            yield outcome
                        pending = []
        if pending:
            for outcome in await _replay_batch(publisher, topics, pending):
                yield outcome
    finally:
        await publisher.close()
