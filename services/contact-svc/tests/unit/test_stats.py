"""Statistics folded from contact events: counts, day windows, redelivery."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from contact_svc.stats import (
    CountedMark,
    EventAt,
    PartitionCounts,
    last_counted,
    summarize,
    to_count,
)
from contacts_shared.commands import ImportAction
from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactImported,
    ContactStatusChanged,
    ContactUpdated,
)
from contacts_shared.schema import ContactSnapshot, ContactStatus

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def snapshot(key: str, status: ContactStatus, created_at: datetime = NOW) -> ContactSnapshot:
    return ContactSnapshot(
        id=f"p1:{key}",
        account_id="a1",
        profile_id="p1",
        key=key,
        fields={"email": key},
        status=status,
        status_source="api",
        status_changed_at=created_at,
        source="api",
        version=1,
        created_at=created_at,
        updated_at=created_at,
    )


def created(
    key: str, status: ContactStatus = ContactStatus.ACTIVE, at: datetime = NOW
) -> ContactCreated:
    return ContactCreated(contact=snapshot(key, status, at))


def bounced(key: str) -> ContactStatusChanged:
    return ContactStatusChanged(
        contact=snapshot(key, ContactStatus.BOUNCED), previous_status=ContactStatus.ACTIVE
    )


def deleted(key: str, status: ContactStatus, created_at: datetime) -> ContactDeleted:
    return ContactDeleted(
        contact_id=f"p1:{key}",
        account_id="a1",
        profile_id="p1",
        key=key,
        version=2,
        status=status,
        created_at=created_at,
    )


def test_creations_status_changes_and_deletions_move_the_counts() -> None:
    counts = PartitionCounts("p1", 0)
    events = [
        created("a@x.io"),
        created("b@x.io"),
        created("c@x.io", ContactStatus.BOUNCED),
        ContactStatusChanged(
            contact=snapshot("a@x.io", ContactStatus.UNSUBSCRIBED),
            previous_status=ContactStatus.ACTIVE,
        ),
        ContactUpdated(contact=snapshot("b@x.io", ContactStatus.ACTIVE), changed=("name",)),
        deleted("c@x.io", ContactStatus.BOUNCED, NOW),
    ]
    for offset, event in enumerate(events):
        assert counts.fold(event, offset=offset, at=NOW + timedelta(seconds=offset))

    stats = summarize([counts], today=NOW.date())
    assert stats.total == 2
    assert stats.by_status == {
        "active": 1,
        "unsubscribed": 1,
        "bounced": 0,
        "complained": 0,
        "blocked": 0,
    }
    assert stats.added_last_7_days == stats.added_last_30_days == 2
    assert stats.last_change_at == NOW + timedelta(seconds=5)


def test_an_event_at_or_before_the_last_counted_offset_changes_nothing() -> None:
    counts = PartitionCounts("p1", 0)
    assert counts.fold(created("a@x.io"), offset=7, at=NOW)
    assert not counts.fold(created("a@x.io"), offset=7, at=NOW)
    assert not counts.fold(created("b@x.io"), offset=3, at=NOW)
    assert counts.offset == 7
    assert counts.by_status == {"active": 1}


def test_added_counts_follow_utc_days_and_forget_what_left_the_window() -> None:
    counts = PartitionCounts("p1", 0)
    ages = [0, 6, 7, 29, 30, 45]  # days before NOW
    for offset, age in enumerate(ages):
        counts.fold(created(f"c{age}@x.io", at=NOW - timedelta(days=age)), offset=offset, at=NOW)
    # Deleting an old contact leaves the window's days alone; a recent one leaves its day.
    counts.fold(
        deleted("c45@x.io", ContactStatus.ACTIVE, NOW - timedelta(days=45)), offset=6, at=NOW
    )
    counts.fold(deleted("c6@x.io", ContactStatus.ACTIVE, NOW - timedelta(days=6)), offset=7, at=NOW)

    assert sorted(counts.added_by_day) == [
        (NOW - timedelta(days=age)).date().isoformat() for age in (29, 7, 0)
    ]
    stats = summarize([counts], today=NOW.date())
    assert stats.total == 4
    assert (stats.added_last_7_days, stats.added_last_30_days) == (1, 3)
    # Day by day: 30 days, oldest first, the empty ones too.
    assert [d.day for d in stats.added_by_day] == [
        NOW.date() - timedelta(days=back) for back in range(29, -1, -1)
    ]
    assert {d.day: d.count for d in stats.added_by_day if d.count} == {
        NOW.date() - timedelta(days=29): 1,
        NOW.date() - timedelta(days=7): 1,
        NOW.date(): 1,
    }
    # A week later, the same counts seen from then.
    later = summarize([counts], today=NOW.date() + timedelta(days=7))
    assert (later.added_last_7_days, later.added_last_30_days) == (0, 2)


def test_a_profile_sums_its_partitions_shares() -> None:
    first, second = PartitionCounts("p1", 0), PartitionCounts("p1", 3)
    first.fold(created("a@x.io"), offset=0, at=NOW)
    second.fold(created("b@x.io", ContactStatus.BLOCKED), offset=0, at=NOW + timedelta(hours=1))
    stats = summarize([first, second], today=date(2026, 11, 23))
    assert stats.total == 2
    assert stats.by_status["active"] == stats.by_status["blocked"] == 1
    assert stats.last_change_at == NOW + timedelta(hours=1)
    empty = summarize([], today=NOW.date())
    assert empty.total == 0 and empty.last_change_at is None


def at(offset: int, event: ContactCreated | ContactStatusChanged, version: int) -> EventAt:
    return EventAt(offset, NOW, event, "p1:a@x.io", version, "p1")


def test_marks_tell_new_events_from_copies() -> None:
    create, bounce = created("a@x.io"), bounced("a@x.io")
    batch = [at(10, create, 1), at(11, bounce, 2), at(12, create, 1), at(13, bounce, 2)]
    marks, by_profile = to_count(batch, {}, {})
    assert by_profile == {"p1": batch[:2]}  # the relay published both again: copies
    assert marks == {"p1:a@x.io": CountedMark(version=2, offset=11, before=0)}
    # Later, against the marks written: the copies count nothing, a newer version does.
    later = [at(20, create, 1), at(21, bounce, 2), at(22, bounce, 3)]
    marks, by_profile = to_count(later, marks, {"p1": 13})
    assert by_profile == {"p1": later[2:]}
    assert marks == {"p1:a@x.io": CountedMark(version=3, offset=22, before=2)}


def test_events_at_or_below_the_shares_offset_are_counted_already() -> None:
    batch = [at(10, created("a@x.io"), 1), at(11, bounced("a@x.io"), 2)]
    assert to_count(batch, {}, {"p1": 11}) == ({}, {})
    assert to_count(batch, {}, {"p1": 10}) == (
        {"p1:a@x.io": CountedMark(version=2, offset=11, before=0)},
        {"p1": batch[1:]},
    )


def test_a_batch_whose_share_was_not_written_counts_again_from_the_mark_before_it() -> None:
    # The batch wrote its mark (created then bounced), and the process died before the share.
    batch = [at(10, created("a@x.io"), 1), at(11, bounced("a@x.io"), 2)]
    marks, _ = to_count(batch, {}, {"p1": 9})
    again, by_profile = to_count(batch, marks, {"p1": 9})
    assert by_profile == {"p1": batch} and again == marks
    # Once the share is written, the mark holds.
    assert last_counted(marks["p1:a@x.io"], 11) == 2
    assert last_counted(marks["p1:a@x.io"], 9) == 0 and last_counted(None, 9) == 0


def imported(
    key: str, status: ContactStatus, *, created: bool, previous: ContactStatus | None = None
) -> ContactImported:
    return ContactImported(
        contact=snapshot(key, status),
        import_id="imp1",
        action=ImportAction.APPEND_OR_UPDATE,
        line=2,
        created=created,
        changed=("status",) if previous else ("nombre",),
        previous_status=previous,
    )


def test_imported_contacts_count_as_added_and_their_status_changes_move_counts() -> None:
    counts = PartitionCounts("p1", 0)
    events = [
        imported("a@x.io", ContactStatus.ACTIVE, created=True),
        imported("b@x.io", ContactStatus.UNSUBSCRIBED, created=True),
        imported("a@x.io", ContactStatus.ACTIVE, created=False),  # values only
        imported(
            "a@x.io", ContactStatus.UNSUBSCRIBED, created=False, previous=ContactStatus.ACTIVE
        ),
    ]
    for offset, event in enumerate(events):
        counts.fold(event, offset=offset, at=NOW)
    stats = summarize([counts], today=NOW.date())
    assert stats.total == 2 and stats.added_last_7_days == 2
    assert (stats.by_status["active"], stats.by_status["unsubscribed"]) == (0, 2)
