"""Which database errors mean "the server is away, wait" rather than "this request failed"."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

from contacts_shared.kafka import backing_server_away
from contacts_shared.mongo import server_unavailable


def internal_error(message: str) -> OperationFailure:
    return OperationFailure(message, code=1, details={"errmsg": message, "code": 1})


@pytest.mark.parametrize(
    "message",
    [
        # FerretDB's answers seen while its PostgreSQL was cut (tests/e2e/test_database_outage).
        "unexpected EOF",
        "msg_find.go:43 (handler.(*Handler).msgFind): pool.go:90 (documentdb.(*Pool).Acquire): "
        "failed to connect to `user=postgres database=postgres`: dial error: connection refused",
        "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
        "conn closed",
        "(documentdb.(*Pool).Acquire): read tcp 127.0.0.1:50114->127.0.0.1:44749: read: "
        "connection reset by peer",
    ],
)
def test_ferretdb_without_its_postgresql_is_an_outage(message: str) -> None:
    assert server_unavailable(internal_error(message))


def test_a_lost_connection_is_an_outage() -> None:
    assert server_unavailable(AutoReconnect("connection reset"))


@pytest.mark.parametrize(
    "error",
    [
        internal_error("invalid $regex"),
        OperationFailure("unexpected EOF", code=2),  # the words alone are not enough
        DuplicateKeyError("E11000 duplicate key", code=11000),
    ],
)
def test_errors_of_the_request_are_not(error: Exception) -> None:
    assert not server_unavailable(error)


def test_kafka_away_is_an_outage_too_for_consumers_and_requests() -> None:
    assert backing_server_away(KafkaConnectionError("no broker"))
    assert backing_server_away(internal_error("unexpected EOF"))
    assert not backing_server_away(ValueError("a bad record"))
