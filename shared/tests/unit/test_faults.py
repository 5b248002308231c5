"""Which errors mean "a server or broker is away, wait" rather than "this record or request
is wrong": one answer for every consumer, relay and request."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
from pydantic import ValidationError
from pymongo.errors import (
    AutoReconnect,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from contacts_shared.commands import UpsertContact
from contacts_shared.faults import OUTAGES, OutageBoard, ServersAway, is_outage
from contacts_shared.kafka import EventPublisher, GuardedHandler, Record


def internal_error(message: str) -> OperationFailure:
    return OperationFailure(message, code=1, details={"errmsg": message, "code": 1})


@pytest.mark.parametrize(
    "message",
    [
        # FerretDB's answers seen while its PostgreSQL was cut, killed or restarting.
        "unexpected EOF",
        "msg_find.go:43 (handler.(*Handler).msgFind): pool.go:90 (documentdb.(*Pool).Acquire): "
        "failed to connect to `user=postgres database=postgres`: dial error: connection refused",
        "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
        "conn closed",
        "(documentdb.(*Pool).Acquire): read tcp 127.0.0.1:50114->127.0.0.1:44749: read: "
        "connection reset by peer",
        # PostgreSQL restarting after a crash: the answer that dead-lettered good records.
        "failed to connect to `user=postgres database=postgres`: 127.0.0.1:5433 (127.0.0.1): "
        "server error: FATAL: the database system is not yet accepting connections "
        "(SQLSTATE 57P03)",
        "FATAL: the database system is starting up (SQLSTATE 57P03)",
        "FATAL: the database system is in recovery mode (SQLSTATE 57P03)",
        "FATAL: the database system is shutting down (SQLSTATE 57P03)",
        "FATAL: terminating connection because of crash of another server process (SQLSTATE 57P02)",
        "FATAL: sorry, too many clients already (SQLSTATE 53300)",
        "ERROR: could not extend file: No space left on device (SQLSTATE 53100)",
        "ERROR: canceling statement due to statement timeout (SQLSTATE 57014)",
        "ERROR: could not serialize access due to concurrent update (SQLSTATE 40001)",
        "ERROR: deadlock detected (SQLSTATE 40P01)",
        "ERROR: could not read block 7 in file: read only 0 of 8192 bytes (SQLSTATE 58030)",
    ],
)
def test_ferretdb_without_a_serving_postgresql_is_an_outage(message: str) -> None:
    assert is_outage(internal_error(message))


@pytest.mark.parametrize(
    "error",
    [
        AutoReconnect("connection reset"),
        NetworkTimeout("timed out"),
        ServerSelectionTimeoutError("no servers"),
        NotPrimaryError("not primary"),
        ExecutionTimeout("operation exceeded time limit", code=50),
        OperationFailure("interrupted at shutdown", code=11600),
        OperationFailure("write conflict", code=112),
        OperationFailure(
            "retry it", code=2, details={"errorLabels": ["RetryableWriteError"], "code": 2}
        ),
        KafkaConnectionError("no broker"),
        KafkaTimeoutError(),
        RequestTimedOutError(),
        NotLeaderForPartitionError(),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ],
)
def test_servers_away_not_primary_or_out_of_time_are_outages(error: Exception) -> None:
    assert is_outage(error)


def a_validation_error() -> ValidationError:
    try:
        UpsertContact.model_validate({"command_id": 1})
    except ValidationError as exc:
        return exc
    raise AssertionError("validated")


@pytest.mark.parametrize(
    "error",
    [
        internal_error("invalid $regex"),
        internal_error("invalid input BSON: Invalid single value document"),
        OperationFailure("unexpected EOF", code=2),  # the words alone are not enough
        OperationFailure("the database system is starting up", code=121),
        DuplicateKeyError("E11000 duplicate key", code=11000),
        WriteError("Document failed validation", code=121),
        DocumentTooLarge("too large"),
        MessageSizeTooLargeError(),
        ValueError("a bad record"),
        KeyError("id"),
        a_validation_error(),
    ],
)
def test_errors_of_the_record_or_request_are_not(error: Exception) -> None:
    assert not is_outage(error)


async def test_the_board_reports_a_part_waiting_until_it_is_over() -> None:
    board = OutageBoard()
    await board.check()
    board.waiting("consumer of contacts.commands")
    board.waiting("relay of contact_svc.contacts")
    board.over("relay of contact_svc.contacts")
    with pytest.raises(ServersAway, match="consumer of contacts.commands"):
        await board.check()
    board.over("consumer of contacts.commands")
    board.over("never waited")
    await board.check()


def a_record(topic: str = "contacts.commands", partition: int = 3) -> Record:
    return ConsumerRecord(topic, partition, 7, 0, 0, b"k", b"v", None, 1, 1, ())


async def test_a_consumer_waits_out_an_outage_not_ready_and_parks_nothing() -> None:
    """Every kind of outage is waited out, however long: never an attempt counted toward the
    dead-letter topic (its publisher is never started: a dead letter would fail the test)."""
    outages = [
        internal_error(
            "FATAL: the database system is not yet accepting connections (SQLSTATE 57P03)"
        ),
        AutoReconnect("connection reset"),
        KafkaConnectionError("no broker"),
        ExecutionTimeout("operation exceeded time limit", code=50),
        TimeoutError(),
    ]
    readiness_while_waiting: list[bool] = []

    async def handler(records: Sequence[Record]) -> None:
        try:
            await OUTAGES.check()
            readiness_while_waiting.append(True)
        except ServersAway:
            readiness_while_waiting.append(False)
        if outages:
            raise outages.pop(0)

    publisher = EventPublisher("127.0.0.1:1", client_id="never", topics=[], partitions=1)
    guard = GuardedHandler(publisher, handler, retry_backoff_seconds=0.001)
    await guard.handle([a_record()])
    # Ready before the first failure; not ready at every retry after an outage; ready after.
    assert readiness_while_waiting == [True, False, False, False, False, False]
    await OUTAGES.check()
