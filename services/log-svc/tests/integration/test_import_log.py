"""The import log kept from imports.events by a real log-svc: the newest snapshot wins whatever
the order events arrive in, the log is listed newest first with filters and cursors, and the
refused rows are served as CSV in line order, each once."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from contacts_shared.commands import ImportAction
from contacts_shared.events import (
    DomainEvent,
    ImportCompleted,
    ImportQueued,
    ImportRowsRefused,
    ImportSnapshot,
    ImportStarted,
    RefusedRow,
    to_envelope,
)
from contacts_shared.kafka import EventPublisher, OutgoingMessage
from log_svc.app import create_app
from log_svc.settings import LogSettings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def snapshot(import_id: str, account: str, **changes: Any) -> ImportSnapshot:
    base: dict[str, Any] = {
        "id": import_id,
        "account_id": account,
        "profile_id": "p1",
        "action": ImportAction.APPEND,
        "reference": "Feria",
        "file_name": "a.csv",
        "size": 10,
        "status": "queued",
        "counts": {},
        "created_at": T0,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "problems": [],
        "version": 1,
    }
    return ImportSnapshot.model_validate(base | changes)


@pytest.fixture
async def log_api(infrastructure: Any, unique: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = LogSettings(
        environment="test",
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"log_svc_{unique}",
        topic_imports_events=f"imports.events.{unique}",
        imports_events_group=f"log-{unique}",
        api_keys={"key-a": f"acct-a-{unique}", "key-b": f"acct-b-{unique}"},
    )
    publisher = EventPublisher(
        settings.kafka_bootstrap_servers,
        client_id="test",
        topics=[settings.topic_imports_events],
        partitions=settings.topic_partitions,
    )

    async def publish(*events: DomainEvent) -> None:
        for event in events:  # one at a time: their order on the topic is the test's
            envelope = to_envelope(event, account_id="a", source="/test")
            await publisher.publish(
                [
                    OutgoingMessage(
                        settings.topic_imports_events,
                        envelope.subject,
                        envelope.model_dump_json().encode(),
                    )
                ]
            )

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://log-svc",
            headers={"Authorization": "Bearer key-a"},
        ) as api:
            yield api, publish
    await publisher.close()


async def test_the_newest_snapshot_wins_and_the_log_lists_newest_first(
    log_api: tuple[httpx.AsyncClient, Any], unique: str, eventually: Any
) -> None:
    api, publish = log_api
    account = f"acct-a-{unique}"
    done = snapshot(
        "i1",
        account,
        status="completed",
        version=5,
        counts={"read": 10, "applied": 10, "created": 10},
        started_at=T0,
        finished_at=T0 + timedelta(seconds=4),
    )
    # The completion first, then a late copy of the queueing: the log keeps the completion.
    await publish(ImportCompleted(job=done), ImportQueued(job=snapshot("i1", account)))
    later = [
        snapshot(f"i{n}", account, created_at=T0 + timedelta(minutes=n), profile_id=f"p{n % 2}")
        for n in range(2, 6)
    ]
    await publish(*(ImportStarted(job=s) for s in later))
    await publish(ImportQueued(job=snapshot("other", f"acct-b-{unique}")))

    log = await eventually(api, "/v1/logs/imports/i1", lambda b: b["status"] == "completed")
    assert log["counts"]["created"] == 10 and log["rows_per_second"] == 2.5
    await asyncio.sleep(1)  # the late copy has been handled by now too
    assert (await api.get("/v1/logs/imports/i1")).json()["version"] == 5

    await eventually(api, "/v1/logs/imports/i5", lambda b: True)
    first = (await api.get("/v1/logs/imports", params={"limit": 2})).json()
    assert [item["id"] for item in first["items"]] == ["i5", "i4"]
    rest = (
        await api.get("/v1/logs/imports", params={"limit": 10, "cursor": first["next_cursor"]})
    ).json()
    assert [item["id"] for item in rest["items"]] == ["i3", "i2", "i1"]
    assert rest["next_cursor"] is None

    by_profile = (await api.get("/v1/logs/imports", params={"profile_id": "p1"})).json()
    assert [item["id"] for item in by_profile["items"]] == ["i5", "i3", "i1"]
    done_only = (await api.get("/v1/logs/imports", params={"status": "completed"})).json()
    assert [item["id"] for item in done_only["items"]] == ["i1"]
    since = (T0 + timedelta(minutes=4)).isoformat()
    recent = (await api.get("/v1/logs/imports", params={"since": since})).json()
    assert [item["id"] for item in recent["items"]] == ["i5", "i4"]

    assert (await api.get("/v1/logs/imports/other")).status_code == 404  # another account's
    bad = await api.get("/v1/logs/imports", params={"status": "done"})
    assert bad.status_code == 422 and "status" in bad.json()["detail"]


async def test_refused_rows_are_served_in_line_order_once_each(
    log_api: tuple[httpx.AsyncClient, Any], unique: str, eventually: Any
) -> None:
    api, publish = log_api
    header = ["email", "Nombre"]

    def refused(*lines: int) -> ImportRowsRefused:
        rows = [
            RefusedRow(
                line=line,
                values=[f"bad{line}", 'Ana "la jefa", Muñoz'],
                problems=[{"column": "email", "value": f"bad{line}", "reason": "is not an email"}],
            )
            for line in lines
        ]
        return ImportRowsRefused(import_id="r1", profile_id="p1", rows=rows)

    running = snapshot("r1", f"acct-a-{unique}", status="running", version=2, header=header)
    # A resumed import tells rows 9 and 12 again, cut into other events.
    await publish(ImportStarted(job=running), refused(12, 3, 9), refused(9), refused(12, 20))
    await publish(
        ImportCompleted(job=running.model_copy(update={"status": "completed", "version": 3}))
    )
    await eventually(api, "/v1/logs/imports/r1", lambda b: b["status"] == "completed")

    response = await api.get("/v1/logs/imports/r1/refused")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["line", "problems", "email", "Nombre"]
    assert [row[0] for row in rows[1:]] == ["3", "9", "12", "20"]
    assert rows[1][1:] == ["email 'bad3': is not an email", "bad3", 'Ana "la jefa", Muñoz']

    api.headers["Authorization"] = "Bearer key-b"
    assert (await api.get("/v1/logs/imports/r1/refused")).status_code == 404  # not b's
