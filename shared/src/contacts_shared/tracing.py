"""OpenTelemetry traces from an HTTP request through Kafka into the consumers and their writes
(ADR 21).

One TracerProvider a process, named for its service, exporting by OTLP/HTTP when the standard
`OTEL_*` variables ask for it (`OTEL_TRACES_EXPORTER`, or an `OTEL_EXPORTER_OTLP_ENDPOINT`).
Otherwise tracing is off: every helper here returns at its first line, no span is made and no
header written, so the hot paths pay a global read. The context travels as W3C trace context:
`traceparent` (and `tracestate`) in HTTP headers, in Kafka record headers, and, for events
that wait in an outbox or a journal, in two string fields of the entry (`current_context`),
so the relay that publishes them later parents its span to the request that wrote them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol, Self, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
Headers = tuple[tuple[str, bytes], ...]

# A consumer span links at most this many records' contexts besides its parent's.
MAX_LINKS = 128

_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING = nullcontext()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def active() -> bool:
    """Whether this process records spans (an exporter is configured, or a test installed one)."""
    return _tracer is not None


def use(provider: TracerProvider | None) -> None:
    """Record spans with `provider` from now on (a test's, with an in-memory exporter); None
    turns tracing off again."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("contacts_shared")


def configure(service_name: str) -> bool:
    """Set up this process's tracing from the standard variables, once (later calls, and a
    provider a test installed, are kept); whether spans are recorded. `OTEL_SERVICE_NAME` wins
    over `service_name`; `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` and
    the exporter's `OTEL_EXPORTER_OTLP_*` are read by the SDK as documented."""
    if _provider is not None:
        return True
    exporters = _exporters()
    if not exporters:
        return False
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(named))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)
    log.info("tracing on", extra={"exporters": [type(exporter).__name__ for exporter in exporters]})
    return True


def _exporters() -> list[SpanExporter]:
    """The exporters the environment names: `OTEL_TRACES_EXPORTER` (`otlp`, `console`,
    `none`); unset, OTLP when an OTLP endpoint is given, else none."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = os.environ.get("OTEL_TRACES_EXPORTER")
    if named is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        named = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in {n.strip().lower() for n in named.split(",")} - {"", "none"}:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                log.warning(
                    "only OTLP over HTTP (http/protobuf) is installed; exporting with it",
                    extra={"protocol": protocol},
                )
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            log.warning("unknown trace exporter, ignored", extra={"exporter": name})
    return exporters


def _traceparent(span_context: SpanContext) -> str:
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{span_context.trace_flags:02x}"
    )


def _headers_of(span_context: SpanContext) -> Headers:
    """The W3C trace context headers that make a receiver's spans children of this span."""
    if not span_context.is_valid:
        return ()
    headers: Headers = ((TRACEPARENT, _traceparent(span_context).encode()),)
    if span_context.trace_state:
        headers += ((TRACESTATE, span_context.trace_state.to_header().encode()),)
    return headers


def _extract(traceparent: str, tracestate: str | None) -> Context:
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    return _PROPAGATOR.extract(carrier)


def _trace_of(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str, str | None] | None:
    """(traceparent, tracestate) of Kafka record headers, or None."""
    parent = state = None
    for name, value in headers or ():
        if name == TRACEPARENT:
            parent = value.decode(errors="replace")
        elif name == TRACESTATE:
            state = value.decode(errors="replace")
    return None if parent is None else (parent, state)


def context_of(headers: Sequence[tuple[str, bytes]] | None) -> Context | None:
    """The trace context Kafka record headers carry, or None."""
    found = _trace_of(headers)
    return None if found is None else _extract(*found)


def current_context() -> dict[str, str]:
    """The current span's context as W3C headers (`traceparent`, `tracestate`): for an
    outgoing HTTP call, or as the fields of an outbox or journal entry (no `.`, no `$`) the
    relay publishes later (`stored_headers`). Empty when off."""
    if _tracer is None:
        return {}
    span_context = trace.get_current_span().get_span_context()
    return {name: value.decode() for name, value in _headers_of(span_context)}


def log_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex (32 and 16 digits) of the current span, for a log line
    (`logs.JsonFormatter`); None when off or outside any valid span."""
    if _tracer is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def stored_headers(entry: Mapping[str, Any]) -> Headers:
    """The record headers of the context an outbox entry was written in (`current_context`),
    or none."""
    parent = entry.get(TRACEPARENT)
    if parent is None:
        return ()
    if state := entry.get(TRACESTATE):
        return ((TRACEPARENT, parent.encode()), (TRACESTATE, state.encode()))
    return ((TRACEPARENT, parent.encode()),)


def with_current_context(headers: Headers) -> Headers:
    """`headers`, plus the current span's context unless they carry one (a message kept to
    be published later, by another process perhaps)."""
    if _tracer is None or any(name == TRACEPARENT for name, _ in headers):
        return headers
    return headers + _headers_of(trace.get_current_span().get_span_context())


class Outgoing(Protocol):
    """A Kafka record to send (kafka.OutgoingMessage)."""

    @property
    def topic(self) -> str: ...

    @property
    def headers(self) -> Headers: ...

    def with_headers(self, headers: Headers) -> Self: ...


M = TypeVar("M", bound=Outgoing)
_Group = tuple[str, tuple[str, str | None] | None]  # a topic, a stored context


@contextmanager
def publishing(messages: Sequence[M]) -> Iterator[Sequence[M]]:
    """The messages to send, each with the context of a PRODUCER span (`send <topic>`) ended
    once the block is done (failed, if it raised). One span per topic and parent: a message
    that carries a stored context (`stored_headers`) has its span parented to it, the request
    or batch that wrote it; the others to the current span."""
    tracer = _tracer
    if tracer is None or not messages:
        yield messages
        return
    spans: dict[_Group, tuple[Span, Headers]] = {}
    counts: Counter[_Group] = Counter()
    sent: list[M] = []
    for message in messages:
        group = (message.topic, _trace_of(message.headers))
        if group not in spans:
            stored = group[1]
            span = tracer.start_span(
                f"send {message.topic}",
                context=None if stored is None else _extract(*stored),
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": message.topic,
                },
            )
            spans[group] = (span, _headers_of(span.get_span_context()))
        counts[group] += 1
        own = tuple(h for h in message.headers if h[0] not in (TRACEPARENT, TRACESTATE))
        sent.append(message.with_headers(own + spans[group][1]))
    try:
        yield sent
    except BaseException as exc:
        for span, _ in spans.values():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, repr(exc)))
        raise
    finally:
        for group, (span, _) in spans.items():
            span.set_attribute("messaging.batch.message_count", counts[group])
            span.end()


class Received(Protocol):
    """A Kafka record received (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def consuming(records: Sequence[Received]) -> AbstractContextManager[object]:
    """A CONSUMER span (`process <topic>`), current for the block, over a batch of records:
    parented to the first record's context, linked to every other context the batch carries
    (other requests', other batches'), so a record's trace leads to the batch that applied it."""
    tracer = _tracer
    if tracer is None or not records:
        return _NOTHING
    seen: dict[tuple[str, str | None], None] = {}
    for record in records:
        if (found := _trace_of(record.headers)) is not None:
            seen.setdefault(found)
    contexts = [_extract(*found) for found in seen]
    links = [
        Link(span_context)
        for context in contexts[1:]
        if (span_context := trace.get_current_span(context).get_span_context()).is_valid
    ][:MAX_LINKS]
    first = records[0]
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": first.topic,
        "messaging.batch.message_count": len(records),
    }
    if all(record.partition == first.partition for record in records):
        attributes["messaging.destination.partition.id"] = str(first.partition)
    return tracer.start_as_current_span(
        f"process {first.topic}",
        context=contexts[0] if contexts else Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    )


class Written(Protocol):
    """A MongoDB collection (pymongo's)."""

    @property
    def name(self) -> str: ...

    @property
    def full_name(self) -> str: ...


def writing(collection: Written, operation: str, count: int) -> AbstractContextManager[object]:
    """A CLIENT span (`<operation> <collection>`), current for the block, around a write of
    `count` operations (a bulk write of a consumer's batch, say)."""
    tracer = _tracer
    if tracer is None:
        return _NOTHING
    return tracer.start_as_current_span(
        f"{operation} {collection.name}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": "mongodb",
            "db.namespace": collection.full_name.partition(".")[0],
            "db.collection.name": collection.name,
            "db.operation.name": operation,
            "db.operation.batch.size": count,
        },
    )


def failed(exc: BaseException) -> None:
    """Mark the current span failed with `exc` (a handled failure, such as a dead letter)."""
    if _tracer is not None:
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, repr(exc)))


class ServerSpans:
    """A SERVER span per HTTP request, named by its route template (`POST /v1/webhooks/
    {source_id}`, never the path: it holds emails), child of the caller's `traceparent`, with
    the status code; none for paths starting with one of `skip` (probes, metrics, assets)."""

    def __init__(self, app: ASGIApp, skip: tuple[str, ...] = ()) -> None:
        self.app = app
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = _tracer
        if tracer is None or scope["type"] != "http" or scope["path"].startswith(self.skip):
            await self.app(scope, receive, send)
            return
        parent = tracestate = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                parent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        method = scope["method"]
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracer.start_as_current_span(
            method,
            context=Context() if parent is None else _extract(parent, tracestate),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if status:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
