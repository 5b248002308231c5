"""`contacts dead-letters list|replay` against the real broker: a record parked by the real
GuardedHandler is listed, replayed once by position, and the second replay puts nothing back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from contacts_shared.dead_letters import REPLAYED_FROM_HEADER, read_to_end
from contacts_shared.kafka import EventPublisher, GuardedHandler, OutgoingMessage, Record
from import_svc.cli import main

pytestmark = pytest.mark.integration


async def park(bootstrap: str, topic: str) -> None:
    """Publish a record and have the real GuardedHandler park it, its handler always failing."""
    publisher = EventPublisher(
        bootstrap, client_id="test", topics=[topic, f"{topic}.dlq"], partitions=1
    )
    try:
        await publisher.publish([OutgoingMessage(topic, "contact-9", b'{"edad": "x"}')])
        [record] = [r async for r in read_to_end(bootstrap, topic)]

        async def fail(records: Any) -> None:
            raise ValueError("edad is not a number")

        guard = GuardedHandler(publisher, fail, max_attempts=1, retry_backoff_seconds=0)
        await guard.handle([record])
    finally:
        await publisher.close()


async def records_of(bootstrap: str, topic: str) -> list[Record]:
    return [r async for r in read_to_end(bootstrap, topic)]


def test_the_command_line_lists_and_replays_a_dead_letter_once(
    infrastructure: Any, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    topic = f"cli.{unique}"
    asyncio.run(park(bootstrap, topic))

    def contacts(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(["dead-letters", *argv, "--bootstrap-servers", bootstrap])
        captured = capsys.readouterr()
        return int(exited.value.code or 0), captured.out, captured.err

    status, out, _ = contacts("list", topic)
    assert status == 0
    header, row, total = out.splitlines()
    assert header.split()[:3] == ["DLQ", "P:O", "ORIGINAL"]
    assert row.split()[:3] == ["0:0", f"{topic}:0:0", "contact-9"]
    assert "no" in row.split() and row.endswith("ValueError('edad is not a number')")
    assert total == "1 dead letter, 0 replayed"

    status, _, err = contacts("replay", topic)
    assert status == 2 and "choose the dead letters" in err

    status, out, _ = contacts("replay", f"{topic}.dlq", "--offset", "0:0", "--json")
    assert status == 0
    [replayed] = [json.loads(line) for line in out.splitlines()]
    assert replayed["outcome"] == "replayed" and replayed["key"] == "contact-9"
    assert replayed["original_topic"] == topic and replayed["value"] == '{"edad": "x"}'

    status, out, _ = contacts("replay", topic, "--offset", "0:0", "--offset", "0:5")
    assert status == 1  # 0:5 is not there
    assert out.splitlines()[1].startswith("already-replayed 0:0")
    assert out.splitlines()[-1] == "already-replayed 1"

    status, out, _ = contacts("list", topic, "--json")
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert listed["replayed"] is True and listed["error"] == "ValueError('edad is not a number')"

    original, back = asyncio.run(records_of(bootstrap, topic))
    assert (back.key, back.value) == (original.key, original.value)
    assert list(back.headers) == [(REPLAYED_FROM_HEADER, f"{topic}.dlq:0:0".encode())]
