"""Which errors mean "a server or broker is away, wait" rather than "this record or request
is wrong": one answer for every consumer, relay and request."""

from __future__ import annotations

import pytest
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
from contacts_shared.faults import OutageBoard, ServersAway, is_outage


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
