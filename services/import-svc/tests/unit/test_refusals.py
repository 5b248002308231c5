"""Refused rows are told in order, each once, in events of bounded size."""

from __future__ import annotations

from contacts_shared.events import RefusedRow
from import_svc.handlers import REFUSED_EVENT_CHARS, refusals


def row(line: int, width: int) -> RefusedRow:
    return RefusedRow(
        line=line,
        values=["x" * width, "bad"],
        problems=[{"column": "Compras", "value": "bad", "reason": "is not a number"}],
    )


def test_rows_are_told_in_order_in_bounded_events() -> None:
    rows = [row(line, width=(line % 7) * 3_000) for line in range(2, 400)]
    events = refusals("i1", "p1", rows)
    assert len(events) > 1
    assert [r for e in events for r in e.rows] == rows
    for event in events:
        assert (event.import_id, event.profile_id) == ("i1", "p1")
        sizes = [sum(map(len, r.values)) + sum(len(str(p)) for p in r.problems) for r in event.rows]
        assert sum(sizes[:-1]) < REFUSED_EVENT_CHARS  # only its last row may pass the bound


def test_no_rows_no_event() -> None:
    assert refusals("i1", "p1", []) == []
    assert len(refusals("i1", "p1", [row(2, 10)])) == 1
