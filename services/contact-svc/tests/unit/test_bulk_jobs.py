"""A bulk action's job and its change to one contact, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from contact_svc.bulk_jobs import BulkJob, BulkState, by_partition
from contact_svc.domain import BulkStamp, Contact, apply_bulk_change
from contact_svc.listing_handlers import ContactFilter
from contacts_shared.commands import BulkAction, BulkChange, BulkOutcome
from contacts_shared.events import ContactDeleted, ContactStatusChanged
from contacts_shared.profiles import ProfileSchema
from contacts_shared.schema import ContactStatus

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def job(
    *, keys: tuple[str, ...] | None = None, filter: ContactFilter | None = None, total: int
) -> BulkJob:
    return BulkJob(
        id="j1",
        account_id="a1",
        profile_id="p1",
        action=BulkAction.CHANGE_STATUS,
        created_at=NOW,
        status=ContactStatus.BOUNCED,
        keys=keys,
        filter=filter,
        total=total,
    )


def test_a_selection_by_keys_is_paged_after_the_last_key_sent() -> None:
    bulk = job(keys=("a", "b", "c", "d", "e"), total=5)
    first = bulk.pend(bulk.keys_after(2), NOW)
    assert (first.number, first.keys, bulk.state) == (1, ("a", "b"), BulkState.SENDING)
    bulk.sent([3, 1])
    assert (bulk.after_key, bulk.selected, bulk.sent_to, bulk.pending) == (
        "b",
        2,
        {3: 1, 1: 1},
        None,
    )
    second = bulk.pend(bulk.keys_after(2), NOW)
    assert (second.number, second.keys) == (2, ("c", "d"))
    bulk.sent([1])
    assert bulk.sent_to == {3: 1, 1: 2}
    assert bulk.keys_after(2) == ("e",)


def test_a_job_is_applied_once_every_partition_counted_its_last_page() -> None:
    bulk = job(filter=ContactFilter(), total=4)
    bulk.pend(["a", "b"], NOW)
    bulk.sent([0, 1])
    bulk.pend(["c"], NOW)
    bulk.sent([1])
    assert not bulk.applied  # still sending
    bulk.all_sent(NOW)
    bulk.counted = {0: 1, 1: 1}
    bulk.counts = {BulkOutcome.CHANGED: 2}
    assert not bulk.applied and bulk.percent == 66.7  # of the 3 sent, not of the 4 counted first
    bulk.counted[1] = 2
    assert bulk.applied


def test_the_percentage_follows_the_count_taken_when_accepted_while_sending() -> None:
    bulk = job(filter=ContactFilter(), total=200)
    bulk.pend(["a"], NOW)
    bulk.counts = {BulkOutcome.CHANGED: 50}
    assert bulk.percent == 25.0
    bulk.counts = {BulkOutcome.CHANGED: 500}  # more matched than counted at first
    assert bulk.percent == 99.9


def test_keys_are_grouped_by_partition_in_order() -> None:
    assert by_partition(["a1", "b2", "a3"], lambda key: ord(key[0])) == {
        ord("a"): ["a1", "a3"],
        ord("b"): ["b2"],
    }


def change(action: BulkAction = BulkAction.CHANGE_STATUS, job_id: str = "j1") -> BulkChange:
    status = ContactStatus.UNSUBSCRIBED if action is BulkAction.CHANGE_STATUS else None
    return BulkChange(
        job_id=job_id,
        account_id="a1",
        profile_id="p1",
        page=1,
        keys=("ana@x.io",),
        action=action,
        status=status,
        reason="asked by phone" if status else None,
    )


def contact(regular_schema: ProfileSchema) -> Contact:
    created = Contact.create(
        schema=regular_schema, key="ana@x.io", values={}, source="api", now=NOW
    )
    created.take_events()
    return created


def test_a_status_change_is_stamped_and_repeats_its_outcome(regular_schema: ProfileSchema) -> None:
    ana = contact(regular_schema)
    assert apply_bulk_change(ana, change(), now=NOW) == (BulkOutcome.CHANGED, True)
    assert (ana.status, ana.status_reason, ana.source) == (
        ContactStatus.UNSUBSCRIBED,
        "asked by phone",
        "bulk:j1",
    )
    assert ana.bulk == BulkStamp("j1", BulkOutcome.CHANGED)
    [told] = ana.take_events()
    assert isinstance(told, ContactStatusChanged)
    assert apply_bulk_change(ana, change(), now=NOW) == (BulkOutcome.CHANGED, False)
    assert ana.take_events() == [] and ana.version == 2
    # Another job finds the status in place.
    assert apply_bulk_change(ana, change(job_id="j2"), now=NOW) == (BulkOutcome.UNCHANGED, False)


def test_a_deletion_leaves_a_stamped_document_and_a_deleted_one_is_not_found(
    regular_schema: ProfileSchema,
) -> None:
    ana = contact(regular_schema)
    assert apply_bulk_change(ana, change(BulkAction.DELETE), now=NOW) == (
        BulkOutcome.DELETED,
        True,
    )
    [told] = ana.take_events()
    assert isinstance(told, ContactDeleted) and told.source == "bulk:j1"
    assert apply_bulk_change(ana, change(BulkAction.DELETE), now=NOW)[0] is BulkOutcome.DELETED
    other = change(BulkAction.DELETE, job_id="j2")
    assert apply_bulk_change(ana, other, now=NOW) == (BulkOutcome.NOT_FOUND, False)
    assert apply_bulk_change(None, other, now=NOW) == (BulkOutcome.NOT_FOUND, False)
