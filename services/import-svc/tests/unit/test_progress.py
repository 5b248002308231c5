"""An import's counts, exact whatever is repeated, and the events of its life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from contacts_shared.commands import ImportAction, RowOutcome
from contacts_shared.events import ImportCompleted, ImportProgressed, ImportQueued, ImportStarted
from import_svc.domain import (
    Checkpoint,
    Completion,
    ImportJob,
    ImportStatus,
    Progress,
    ReadOptions,
    completion,
)

C, U = RowOutcome.CREATED, RowOutcome.UPDATED


def test_rows_beyond_the_watermark_count_once() -> None:
    progress = Progress(sent={0: 3, 1: 1})
    assert progress.fold(0, [(0, 2, C), (1, 3, U)])
    assert not progress.fold(0, [(0, 2, C), (1, 3, U)])  # the same batch redelivered
    assert progress.fold(0, [(1, 3, U), (2, 5, C)])  # re-cut: only row 2 is new
    assert not progress.all_counted()
    assert progress.fold(1, [(0, 4, RowOutcome.DUPLICATE)])
    assert progress.all_counted()
    assert dict(progress.outcomes) == {"created": 2, "updated": 1, "duplicate": 1}
    assert progress.rows_counted == 4


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[dict[int, list[RowOutcome]], list[tuple[int, int, int]]]:
    """Per partition the true outcomes, and the result batches as delivered: in order per
    partition, each a range of rows, with redeliveries restarting anywhere before."""
    truth = draw(
        st.dictionaries(
            st.integers(0, 5), st.lists(st.sampled_from(list(RowOutcome)), max_size=30), max_size=4
        )
    )
    batches: list[tuple[int, int, int]] = []
    for partition, outcomes in truth.items():
        done = 0
        while done < len(outcomes):
            start = draw(st.integers(0, done))  # a redelivery starts at or before what is done
            end = draw(st.integers(done + 1, len(outcomes)))
            batches.append((partition, start, end))
            done = end
    # Partitions interleave freely; within one, order is kept.
    order = draw(st.permutations(range(len(batches))))
    by_partition: dict[int, list[tuple[int, int, int]]] = {}
    for batch in batches:
        by_partition.setdefault(batch[0], []).append(batch)
    merged: list[tuple[int, int, int]] = []
    cursors = dict.fromkeys(by_partition, 0)
    for index in order:
        partition = batches[index][0]
        merged.append(by_partition[partition][cursors[partition]])
        cursors[partition] += 1
    return truth, merged


@given(deliveries())
def test_counts_equal_the_truth_whatever_is_redelivered(
    case: tuple[dict[int, list[RowOutcome]], list[tuple[int, int, int]]],
) -> None:
    truth, batches = case
    progress = Progress(sent={p: len(o) for p, o in truth.items()})
    for partition, start, end in batches:
        rows = [(s, s + 2, truth[partition][s]) for s in range(start, end)]
        progress.fold(partition, rows)
    expected: dict[str, int] = {}
    for outcomes in truth.values():
        for outcome in outcomes:
            expected[outcome.value] = expected.get(outcome.value, 0) + 1
    assert dict(progress.outcomes) == expected
    assert progress.all_counted()


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def queued() -> ImportJob:
    return ImportJob.queue(
        id="imp1",
        account_id="a1",
        profile_id="p1",
        action=ImportAction.APPEND,
        reference="Feria",
        file_name="x.csv",
        size=10,
        upload_id="u1",
        options=ReadOptions(),
        created_at=NOW,
    )


def test_an_import_tells_its_life_once_each_and_progress_at_most_once_a_second() -> None:
    job = queued()
    job.start(NOW)
    job.start(NOW + timedelta(seconds=5))  # resumed after a crash: not started again
    job.run(["email"], [])
    job.reach(Checkpoint(line=4, rows_read=3, refused=1, sent={0: 1, 1: 1}), done=True, now=NOW)
    assert job.fold(0, [(0, 2, C)], NOW)
    assert not job.fold(0, [(0, 2, C)], NOW)  # a copy
    assert job.status is ImportStatus.RUNNING
    job.fold(1, [(0, 3, U)], NOW + timedelta(milliseconds=300))
    assert job.status is ImportStatus.COMPLETED_WITH_ERRORS
    assert not job.finish(ImportStatus.CANCELLED, NOW)  # already over
    events = job.take_events()
    assert [type(e) for e in events] == [
        ImportQueued,
        ImportStarted,
        ImportProgressed,
        ImportCompleted,
    ]
    versions = [e.job.version for e in events]  # type: ignore[attr-defined]
    assert versions == sorted(set(versions))  # each told at its own, growing version
    completed = events[-1].job  # type: ignore[attr-defined]
    assert completed.counts["applied"] == 2 and completed.counts["refused"] == 1
    assert completed.status == "completed_with_errors"


def test_an_overwrite_completes_only_once_its_purge_is_done() -> None:
    job = queued()
    job.action = ImportAction.OVERWRITE
    job.start(NOW)
    job.reach(Checkpoint(line=2, rows_read=1, sent={0: 1}), done=True, now=NOW)
    job.fold(0, [(0, 2, C)], NOW)
    assert job.status is ImportStatus.VALIDATING and job.purge_requested
    [purge] = job.take_commands()
    assert (purge.import_id, purge.profile_id) == ("imp1", "p1")
    job.fold(0, [(0, 2, C)], NOW)  # a copy: no second purge
    assert not job.take_commands()
    assert job.purged(7, NOW) and not job.purged(7, NOW)
    assert job.status is ImportStatus.COMPLETED and job.counts["deleted"] == 7


def test_the_percentage_comes_from_the_bytes_until_the_rows_are_known() -> None:
    job = queued()
    job.size = 1000
    assert completion(job) == Completion(1000, 0, None, 0, 0.0)
    job.start(NOW)
    # A quarter of the file read: 100 rows, 50 applied and 10 refused; the rows so far
    # promise 400 in all, 60 of them done.
    job.reach(
        Checkpoint(line=101, rows_read=100, refused=10, sent={0: 90}, bytes_read=250),
        done=False,
        now=NOW,
    )
    job.progress.counted = {0: 50}
    assert completion(job) == Completion(1000, 250, None, 60, 15.0)
    # All read: 380 rows in fact; then rows done of rows total.
    job.reach(
        Checkpoint(line=381, rows_read=380, refused=10, sent={0: 370}, bytes_read=990),
        done=True,
        now=NOW,
    )
    assert completion(job) == Completion(1000, 1000, 380, 60, 15.8)
    job.progress.counted = {0: 369}
    assert completion(job).percent == 99.7
    job.progress.counted = {0: 370}  # all done, the import not yet finished: below 100
    assert completion(job).percent == 99.9
    job.finish(ImportStatus.COMPLETED, NOW)
    assert completion(job) == Completion(1000, 1000, 380, 380, 100.0)


def test_a_cancelled_import_stays_at_its_percentage() -> None:
    job = queued()
    job.size = 100
    job.reach(Checkpoint(line=11, rows_read=10, bytes_read=50), done=False, now=NOW)
    job.progress.counted = {0: 10}
    job.finish(ImportStatus.CANCELLED, NOW)
    assert completion(job).percent == 50.0 and completion(job).rows_total is None
