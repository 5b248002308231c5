"""Trace context in HTTP requests, Kafka record headers and outbox entries, without servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from contacts_shared import tracing
from contacts_shared.journal import entry_message
from contacts_shared.kafka import CONTENT_TYPE_HEADER, OutgoingMessage, event_message
from contacts_shared.outbox import command_entry
from contacts_shared.settings import ServiceSettings
from contacts_shared.web import create_service_app

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
PARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
OTHER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
OTHER = f"00-{OTHER_TRACE_ID:032x}-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class _Received:
    topic: str
    partition: int
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class _Collection:
    name: str = "contacts"
    full_name: str = "contact_svc.contacts"


@contextmanager
def _within(traceparent: str) -> Iterator[None]:
    """The remote span of `traceparent` current for the block (a request's, a record's)."""
    remote = tracing.context_of([("traceparent", traceparent.encode())])
    assert remote is not None
    token = context.attach(remote)
    try:
        yield
    finally:
        context.detach(token)


def _finished(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def _parent_of(span: ReadableSpan) -> tuple[int, int]:
    assert span.parent is not None
    return span.parent.trace_id, span.parent.span_id


def _traceparent_of(span: ReadableSpan) -> str:
    own = span.get_span_context()
    assert own is not None
    return f"00-{own.trace_id:032x}-{own.span_id:016x}-01"


def _headers(message: OutgoingMessage) -> dict[str, str]:
    return {name: value.decode() for name, value in message.headers}


def test_off_nothing_is_recorded_and_messages_go_as_given() -> None:
    message = OutgoingMessage("t", "k", b"v")
    assert not tracing.active()
    with _within(PARENT):
        assert tracing.current_context() == {}
        with tracing.publishing([message]) as sent:
            assert sent == [message]
    with tracing.consuming([_Received("t", 0, [("traceparent", PARENT.encode())])]):
        assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.parametrize(
    ("environment", "exporters"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, [OTLPSpanExporter]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, [OTLPSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_the_standard_variables_choose_the_exporter(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], exporters: list[type]
) -> None:
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert [type(e) for e in tracing._exporters()] == exporters


def test_configure_keeps_the_provider_in_use(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert tracing.configure("some-svc")
    with tracing.writing(_Collection(), "bulkWrite", 3):
        pass
    assert list(_finished(spans)) == ["bulkWrite contacts"]


def test_the_context_goes_out_and_comes_back_through_headers(spans: InMemorySpanExporter) -> None:
    with _within(PARENT):
        assert tracing.current_context() == {"traceparent": PARENT}
    received = tracing.context_of([("content-type", b"x"), ("traceparent", PARENT.encode())])
    assert received is not None
    span_context = trace.get_current_span(received).get_span_context()
    assert (span_context.trace_id, span_context.span_id, span_context.is_remote) == (
        TRACE_ID,
        SPAN_ID,
        True,
    )
    assert tracing.context_of([("content-type", b"x")]) is None


def test_an_outbox_entry_keeps_the_writers_context_for_its_message(
    spans: InMemorySpanExporter,
) -> None:
    class Purge(BaseModel):
        import_id: str

    with _within(PARENT):
        entry = command_entry(Purge(import_id="i1"), topic="contacts.commands", key="p1")
    assert entry["traceparent"] == PARENT
    assert all("." not in key and not key.startswith("$") for key in entry)
    assert _headers(entry_message(entry)) == {"traceparent": PARENT}
    # Made without tracing: no field, a message without the header, as before.
    tracing.use(None)
    plain = command_entry(Purge(import_id="i1"), topic="contacts.commands", key="p1")
    assert "traceparent" not in plain
    assert entry_message(plain).headers == ()


def test_a_publish_span_is_the_child_of_the_current_span(spans: InMemorySpanExporter) -> None:
    event = event_message("contacts.events", "p:k", b"{}")
    with (
        _within(PARENT),
        tracing.publishing([event, event, OutgoingMessage("x", "k", b"")]) as sent,
    ):
        pass
    published = _finished(spans)
    publish = published["send contacts.events"]
    assert publish.kind is SpanKind.PRODUCER
    assert _parent_of(publish) == (TRACE_ID, SPAN_ID)
    assert publish.attributes is not None
    assert publish.attributes["messaging.destination.name"] == "contacts.events"
    assert publish.attributes["messaging.batch.message_count"] == 2
    assert _headers(sent[0]) == {
        CONTENT_TYPE_HEADER: "application/cloudevents+json",
        "traceparent": _traceparent_of(publish),
    }
    assert _headers(sent[2]) == {"traceparent": _traceparent_of(published["send x"])}


def test_a_stored_context_parents_the_publish_span_of_its_messages(
    spans: InMemorySpanExporter,
) -> None:
    stored = OutgoingMessage("contacts.events", "k", b"", (("traceparent", PARENT.encode()),))
    current = OutgoingMessage("contacts.events", "k", b"")
    with _within(OTHER), tracing.publishing([stored, current, stored]) as sent:
        pass
    by_trace = {span.context.trace_id: span for span in spans.get_finished_spans() if span.context}
    assert _parent_of(by_trace[TRACE_ID]) == (TRACE_ID, SPAN_ID)
    counts = {t: dict(span.attributes or {}) for t, span in by_trace.items()}
    assert counts[TRACE_ID]["messaging.batch.message_count"] == 2
    assert counts[OTHER_TRACE_ID]["messaging.batch.message_count"] == 1
    assert [_headers(m)["traceparent"] for m in sent] == [
        _traceparent_of(by_trace[TRACE_ID]),
        _traceparent_of(by_trace[OTHER_TRACE_ID]),
        _traceparent_of(by_trace[TRACE_ID]),
    ]


def test_a_failed_publish_fails_its_spans(spans: InMemorySpanExporter) -> None:
    with pytest.raises(TimeoutError), tracing.publishing([OutgoingMessage("t", "k", b"")]):
        raise TimeoutError
    [publish] = spans.get_finished_spans()
    assert publish.status.status_code is StatusCode.ERROR


def test_a_batch_is_processed_in_the_first_records_trace_linked_to_the_others(
    spans: InMemorySpanExporter,
) -> None:
    records = [
        _Received("contacts.commands", 2, [("traceparent", PARENT.encode())]),
        _Received("contacts.commands", 2, []),
        _Received("contacts.commands", 2, [("traceparent", OTHER.encode())]),
        _Received("contacts.commands", 2, [("traceparent", PARENT.encode())]),
    ]
    with tracing.consuming(records):
        with tracing.writing(_Collection(), "bulkWrite", 4):
            pass
    finished = _finished(spans)
    process = finished["process contacts.commands"]
    assert process.kind is SpanKind.CONSUMER
    assert _parent_of(process) == (TRACE_ID, SPAN_ID)
    assert [link.context.trace_id for link in process.links] == [OTHER_TRACE_ID]
    assert process.attributes is not None
    assert process.attributes["messaging.batch.message_count"] == 4
    assert process.attributes["messaging.destination.partition.id"] == "2"
    process_context = process.get_span_context()
    assert process_context is not None
    assert _parent_of(finished["bulkWrite contacts"])[1] == process_context.span_id


def test_records_without_a_context_are_processed_in_a_new_trace(
    spans: InMemorySpanExporter,
) -> None:
    with _within(PARENT), tracing.consuming([_Received("t", 0, [])]):
        pass
    [process] = spans.get_finished_spans()
    assert process.parent is None
    assert process.context is not None and process.context.trace_id != TRACE_ID


def _service() -> FastAPI:
    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        yield

    router = APIRouter()

    @router.get("/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id, **tracing.current_context()}

    return create_service_app(
        ServiceSettings(), title="t", description="d", routers=[router], resources=resources
    )


async def test_a_request_is_a_server_span_named_by_its_route(spans: InMemorySpanExporter) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_service()), base_url="http://svc"
    ) as client:
        answer = await client.get("/v1/things/bob@shop.example", headers={"traceparent": PARENT})
        missing = await client.get("/v1/nothing")
        assert (await client.get("/healthz")).status_code == 200
    finished = _finished(spans)
    assert list(finished) == ["GET /v1/things/{thing_id}", "GET"]
    server = finished["GET /v1/things/{thing_id}"]
    assert server.kind is SpanKind.SERVER
    assert _parent_of(server) == (TRACE_ID, SPAN_ID)
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/things/{thing_id}"
    assert server.attributes["http.response.status_code"] == 200
    assert "bob@shop.example" not in str(server.attributes)
    not_found = finished["GET"].attributes
    # The handler ran within it: what it would send on carries the server span's context.
    assert answer.json()["traceparent"] == _traceparent_of(server)
    assert missing.status_code == 404
    assert not_found is not None and not_found["http.response.status_code"] == 404
