"""Member counts folded from membership events: changes count, copies do not (pure)."""

from __future__ import annotations

from segment_svc.counts import OUTSIDE, Change, Mark, Standing, fold

ACTIVE = Standing(True, "active")
UNSUBSCRIBED = Standing(True, "unsubscribed")


def change(
    contact: str, standing: Standing, sequence: int, offset: int, segment: str = "v1"
) -> Change:
    return Change(segment, contact, standing, sequence, offset)


def test_each_change_moves_the_counts_in_all_and_per_status() -> None:
    changes = [
        change("c1", ACTIVE, 1, 10),
        change("c2", ACTIVE, 1, 11),
        change("c1", UNSUBSCRIBED, 2, 12),
        change("c2", OUTSIDE, 2, 13),
    ]
    counted = fold(3, changes, {}, {}, 13)
    assert counted.deltas == {"v1": {"members": 1, "unsubscribed": 1}}
    assert counted.marks[("v1", "c1")] == Mark(UNSUBSCRIBED, 2, 12, OUTSIDE, 0)
    assert counted.marks[("v1", "c2")] == Mark(OUTSIDE, 2, 13, OUTSIDE, 0)
    assert (counted.partition, counted.offset) == (3, 13)


def test_a_copy_published_again_at_a_later_offset_is_not_counted() -> None:
    marks = {("v1", "c1"): Mark(ACTIVE, 1, 10, OUTSIDE, 0)}
    copies = [change("c1", ACTIVE, 1, 40), change("c1", ACTIVE, 1, 41, segment="v2")]
    assert fold(0, copies, marks, {"v1": 10}, 41).deltas == {"v2": {"members": 1, "active": 1}}


def test_a_copy_arriving_after_a_newer_change_is_not_counted() -> None:
    # Entered (1), left (2), then the entered event again: relayed late by a restarted worker.
    changes = [
        change("c1", ACTIVE, 1, 10),
        change("c1", OUTSIDE, 2, 11),
        change("c1", ACTIVE, 1, 12),
    ]
    counted = fold(0, changes, {}, {}, 12)
    assert counted.deltas == {"v1": {}}
    assert counted.marks[("v1", "c1")] == Mark(OUTSIDE, 2, 11, OUTSIDE, 0)


def test_a_redelivered_change_counts_only_if_its_share_has_not() -> None:
    # Marks were written before the crash, at these very offsets; v1's share counted to 10.
    marks = {
        ("v1", "c1"): Mark(ACTIVE, 3, 10, OUTSIDE, 0),
        ("v2", "c2"): Mark(UNSUBSCRIBED, 5, 11, ACTIVE, 4),
    }
    again = [change("c1", ACTIVE, 3, 10), change("c2", UNSUBSCRIBED, 5, 11, segment="v2")]
    later = [change("c3", ACTIVE, 1, 12)]
    assert fold(0, again + later, marks, {"v1": 10}, 12).deltas == {
        "v2": {"active": -1, "unsubscribed": 1},
        "v1": {"members": 1, "active": 1},
    }


def test_a_batch_whose_share_was_not_written_counts_again_from_before_it() -> None:
    # Entered, then unsubscribed, in one batch: marks written, then the process died.
    changes = [change("c1", ACTIVE, 1, 10), change("c1", UNSUBSCRIBED, 2, 11)]
    first = fold(0, changes, {}, {}, 11)
    assert first.deltas == {"v1": {"members": 1, "unsubscribed": 1}}
    again = fold(0, changes, first.marks, {}, 11)
    assert (again.deltas, again.marks) == (first.deltas, first.marks)
    # Once its share is written, the batch counts nothing again.
    assert fold(0, changes, first.marks, {"v1": 11}, 11).deltas == {}


def test_a_left_event_without_a_counted_entry_takes_nothing_away() -> None:
    assert fold(0, [change("c1", OUTSIDE, 4, 10)], {}, {}, 10).deltas == {"v1": {}}
