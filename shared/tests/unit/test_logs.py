"""A client that repeats one warning in a loop (aiokafka while the broker is away) is heard
once every interval, with the count of what was held back; our own loggers are not held."""

from __future__ import annotations

import logging

from contacts_shared.logs import OncePerInterval


def record(name: str, message: str, at: float, *args: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": name, "msg": message, "args": args})
    made.created = at
    return made


def test_a_repeated_client_warning_passes_once_per_interval_with_the_count_held() -> None:
    once = OncePerInterval(10.0, ("aiokafka",))
    template = "Unable connect to node with id %s: %s"
    passed = [
        once.filter(record("aiokafka.conn", template, at, 1, "refused"))
        for at in (0.0, 0.5, 1.0, 9.9, 10.0, 10.1)
    ]
    assert passed == [True, False, False, False, True, False]
    later = record("aiokafka.conn", template, 20.5, 1, "refused")
    assert once.filter(later) and later.held_back == 1
    assert once.filter(record("aiokafka.conn", "another warning", 20.6))


def test_our_own_loggers_are_never_held_back() -> None:
    once = OncePerInterval(10.0, ("aiokafka", "pymongo"))
    assert all(once.filter(record("contacts_shared.kafka", "waiting", at)) for at in (0, 0.1, 0.2))
