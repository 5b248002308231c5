"""A client that repeats one warning in a loop (aiokafka while the broker is away) is heard
once every interval, with the count of what was held back; our own loggers are not held. A
line logged inside a span, tracing on, carries the span's trace and span ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from contacts_shared import tracing
from contacts_shared.logs import JsonFormatter, OncePerInterval


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


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing JSON lines to a buffer, as `configure_logging` sets up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("some-svc"))
    logger = logging.getLogger("test_logs.lines")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def _logged(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(
    spans: InMemorySpanExporter, lines: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, out = lines
    logger.info("before")
    with tracing.writing(_Collection(), "bulkWrite", 1) as span:
        assert isinstance(span, trace.Span) and span.is_recording()
        logger.info("inside", extra={"count": 1})
    logger.info("after")
    (finished,) = spans.get_finished_spans()
    own = finished.get_span_context()
    assert own is not None
    before, inside, after = _logged(out)
    assert inside["trace_id"] == f"{own.trace_id:032x}" and len(str(inside["trace_id"])) == 32
    assert inside["span_id"] == f"{own.span_id:016x}" and len(str(inside["span_id"])) == 16
    assert inside["message"] == "inside" and inside["count"] == 1
    for outside in (before, after):
        assert "trace_id" not in outside and "span_id" not in outside


def test_tracing_off_no_line_carries_ids_even_in_a_valid_span(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    assert not tracing.active()
    logger, out = lines
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        assert trace.get_current_span().get_span_context().is_valid
        logger.info("inside a caller's span")
    finally:
        context.detach(token)
    (line,) = _logged(out)
    assert "trace_id" not in line and "span_id" not in line


class _Collection:
    name = "contacts"
    full_name = "contact_svc.contacts"
