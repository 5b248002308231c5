"""Outages told from bad records, in one place: every consumer, relay and request handler asks
`is_outage` whether an error means a server or broker is away (wait for it, answer 503) or that
the work itself is wrong (retry a little, then dead-letter or answer 4xx/500).

An outage is never a record's fault: a server down, restarting, in recovery, not primary,
overloaded, timing out or refusing connections. Only what fails on its own, whatever the
servers do (a record that cannot be parsed or validated, a write whose data is refused), may
be dead-lettered. When in doubt about a database answer we have not classified, it counts as
the record's: a record parked with its reason can be replayed (`contacts dead-letters`), a
consumer waiting forever on a poison record cannot be seen to be stuck.
"""

from __future__ import annotations

import re
import time

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedCodecError,
)
from prometheus_client import Gauge
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

# Kafka errors that are about the record, not the broker: the same record fails again.
KAFKA_RECORD_ERRORS = (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedCodecError,
)

# MongoDB's codes for a server that cannot serve now: shutting down, stepping down, not
# primary, out of time, interrupted, a write conflict between concurrent operations.
MONGODB_TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        133,  # FailedToSatisfyReadPreference
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
MONGODB_TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")

INTERNAL_ERROR = 1
# FerretDB answers InternalError (code 1) with PostgreSQL's own error, which pgx words as
# "<SEVERITY>: <message> (SQLSTATE <code>)". SQLSTATE classes of a server that cannot serve
# now: 08 connection exception, 53 insufficient resources (too many clients, out of memory or
# disk), 57 operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
# connect now: starting up, in recovery, not yet accepting connections; 57014 statement
# cancelled by a timeout), 58 system error; and 40001 / 40P01 / 55P03, concurrent
# transactions in each other's way.
POSTGRESQL_AWAY_STATE = re.compile(r"\(SQLSTATE (?:(?:08|53|57|58)[0-9A-Z]{3}|40001|40P01|55P03)\)")
# The same, where FerretDB words it itself (a pool that cannot reach PostgreSQL at all), or
# passes a message on without its SQLSTATE.
POSTGRESQL_AWAY_WORDS = (
    "failed to connect",
    "conn closed",
    "connection refused",
    "connection reset by peer",
    "unexpected EOF",
    "terminating connection",
    "the database system is",  # starting up, shutting down, in recovery mode, not yet accepting
    "server closed the connection",
    "too many clients",
    "broken pipe",
    "i/o timeout",
)


def is_outage(exc: BaseException) -> bool:
    """True for an error that means a server or broker is away (and will be back), not that
    the record or request is wrong."""
    if isinstance(exc, KafkaError):
        return not isinstance(exc, KAFKA_RECORD_ERRORS)
    if isinstance(exc, PyMongoError):
        return _mongodb_outage(exc)
    return isinstance(exc, ConnectionError | TimeoutError)


def _mongodb_outage(exc: PyMongoError) -> bool:
    if isinstance(exc, ConnectionFailure) or exc.timeout:
        return True  # unreachable, not primary, no server selected, or out of time
    if any(exc.has_error_label(label) for label in MONGODB_TRANSIENT_LABELS):
        return True
    if not isinstance(exc, OperationFailure):
        return False
    if exc.code in MONGODB_TRANSIENT_CODES:
        return True
    if exc.code != INTERNAL_ERROR:
        return False
    message = str(exc)
    return bool(POSTGRESQL_AWAY_STATE.search(message)) or any(
        words in message for words in POSTGRESQL_AWAY_WORDS
    )


# How an outage is waited out: a short first pause, doubled up to a bound, so a server back in
# a second is used within a second, and one away for minutes is asked every few seconds.
FIRST_OUTAGE_PAUSE_SECONDS = 0.2
MAX_OUTAGE_PAUSE_SECONDS = 5.0


def next_outage_pause(pause: float) -> float:
    """The pause after `pause`, while the outage lasts."""
    return min(pause * 2, MAX_OUTAGE_PAUSE_SECONDS)


WAITING = Gauge(
    "contacts_waiting_on_outage",
    "1 while this part of the process (a consumer group, a relay) waits for a server to return",
    ["part"],
)


class ServersAway(Exception):
    """Some part of this process is waiting for a server or broker to come back."""


class OutageBoard:
    """What each part of a process (its consumers, its relays) is waiting out: readiness
    reports it, so a process that cannot do its work shows as not ready until it can."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def waiting(self, part: str) -> None:
        self._since.setdefault(part, time.monotonic())
        WAITING.labels(part=part).set(1)

    def over(self, part: str) -> None:
        if self._since.pop(part, None) is not None:
            WAITING.labels(part=part).set(0)

    async def check(self) -> None:
        """Raise while any part waits for an outage to end (a readiness check)."""
        if self._since:
            now = time.monotonic()
            parts = ", ".join(
                f"{part} for {now - since:.0f}s" for part, since in self._since.items()
            )
            raise ServersAway(f"waiting for a server to return: {parts}")


# One per process: every consumer and relay of a service reports here, its /readyz reads it.
OUTAGES = OutageBoard()
