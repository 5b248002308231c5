"""Member counts folded from membership events: changes count, copies do not (pure)."""

from __future__ import annotations

from segment_svc.counts import Change, Mark, fold


def change(segment: str, contact: str, member: bool, sequence: int, offset: int) -> Change:
    return Change(segment, contact, member, sequence, offset)


def test_changes_move_the_count_and_marks_follow_them() -> None:
    changes = [
        change("v1", "c1", True, 1, 10),
        change("v1", "c2", True, 1, 11),
        change("v1", "c1", False, 2, 12),
    ]
    counted = fold(3, changes, {}, {}, 12)
    assert counted.deltas == {"v1": 1}
    assert counted.marks == {("v1", "c1"): Mark(False, 2, 12), ("v1", "c2"): Mark(True, 1, 11)}
    assert (counted.partition, counted.offset) == (3, 12)


def test_a_copy_published_again_at_a_later_offset_is_not_counted() -> None:
    marks = {("v1", "c1"): Mark(True, 1, 10)}
    copies = [change("v1", "c1", True, 1, 40), change("v2", "c1", True, 1, 41)]
    counted = fold(0, copies, marks, {}, 41)
    assert counted.deltas == {"v2": 1}


def test_a_copy_arriving_after_a_newer_change_is_not_counted() -> None:
    # Entered (1), left (2), then the entered event again: relayed late by a restarted worker.
    changes = [
        change("v1", "c1", True, 1, 10),
        change("v1", "c1", False, 2, 11),
        change("v1", "c1", True, 1, 12),
    ]
    counted = fold(0, changes, {}, {}, 12)
    assert counted.deltas == {"v1": 0}
    assert counted.marks[("v1", "c1")] == Mark(False, 2, 11)


def test_a_redelivered_change_counts_only_if_its_share_has_not() -> None:
    # Marks were written before the crash, at these very offsets; v1's share counted to 10.
    marks = {("v1", "c1"): Mark(True, 3, 10), ("v2", "c2"): Mark(False, 5, 11)}
    again = [change("v1", "c1", True, 3, 10), change("v2", "c2", False, 5, 11)]
    later = [change("v1", "c3", True, 1, 12)]
    assert fold(0, again + later, marks, {"v1": 10}, 12).deltas == {"v2": -1, "v1": 1}
