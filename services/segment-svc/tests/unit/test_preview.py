"""Previews of rules: the tally of contacts checked, how many sample buckets to read, and the
estimate they give, unbiased where a prefix in key order is not (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from contacts_shared.rules import RuleGroup
from contacts_shared.sampling import SAMPLE_BUCKETS, sample_bucket
from contacts_shared.schema import ContactStatus, FieldSpec, FieldType
from segment_svc.evaluate import ContactView, Segment
from segment_svc.membership import SAMPLE, ContactState, projected, segment_writes
from segment_svc.preview import PREVIEW_SAMPLE, Tally, buckets_for, estimated, read_fields

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="City", key="city", type=FieldType.TEXT),
)
LIMA = Segment(
    "v1",
    "acct",
    "p1",
    RuleGroup.model_validate({"all": [{"field": "City", "op": "equals", "value": "Lima"}]}),
    1,
    FIELDS,
)
LIVE = {"field": "Status", "op": "is", "value": "active"}


def document(key: str, city: str | None) -> dict[str, Any]:
    """A projected contact of profile p1 (deleted when `city` is None), as the worker writes it."""
    view = None if city is None else ContactView({"city": city}, ContactStatus.ACTIVE, NOW, NOW)
    state = ContactState(f"p1:{key}", "acct", "p1", key, 1, ContactStatus.ACTIVE, view)
    return {**projected(state, {}), "rev": 1}


def test_a_tally_checks_live_contacts_and_keeps_the_first_matches_in_key_order() -> None:
    tally = Tally()
    keys = [f"k{i:03d}@x.com" for i in range(60)]
    tally.add(
        LIMA, [document(k, "Lima" if i % 2 else "Quito") for i, k in enumerate(keys)], NOW.date()
    )
    tally.add(LIMA, [document("a-gone@x.com", None)], NOW.date())
    assert (tally.checked, tally.count) == (60, 30)
    assert tally.first_matches() == [f"p1:{k}" for k in keys[1::2][:PREVIEW_SAMPLE]]


def narrowed(document: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The document as the server answers a find with these paths (and `_id`)."""
    found: dict[str, Any] = {"_id": document["_id"]}
    for path in paths:
        top, _, inner = path.partition(".")
        if inner and inner in document[top]:
            found.setdefault(top, {})[inner] = document[top][inner]
        elif not inner:
            found[top] = document[top]
    return found


def test_a_preview_reads_only_the_values_its_rules_name_and_checks_them_alike() -> None:
    rules = {"all": [{"field": "city", "op": "equals", "value": "Lima"}, LIVE]}
    segment = replace(LIMA, rules=RuleGroup.model_validate(rules))
    paths = read_fields(segment)
    assert paths == ["key", "deleted", "status", "created_at", "updated_at", "fields.city"]
    by_status = replace(LIMA, rules=RuleGroup.model_validate({"all": [LIVE]}))
    assert not any(path.startswith("fields") for path in read_fields(by_status))
    documents = [document(f"k{i}@x.com", ["Lima", "Quito", None][i % 3]) for i in range(30)]
    for checked, matching in ((segment, 10), (by_status, 20)):
        whole, narrow = Tally(), Tally()
        whole.add(checked, documents, NOW.date())
        narrow.add(checked, [narrowed(d, read_fields(checked)) for d in documents], NOW.date())
        assert (narrow.checked, narrow.count) == (whole.checked, whole.count) == (20, matching)
        assert narrow.first_matches() == whole.first_matches()


def test_whole_buckets_are_read_for_about_the_budget() -> None:
    assert buckets_for(10_000, 3_906) == 3  # a million contacts
    assert buckets_for(10_000, 40_000) == 1  # larger: one bucket, more than the budget
    assert buckets_for(10_000, 39) == SAMPLE_BUCKETS  # just above the budget: all of them
    assert buckets_for(10_000, 0) == SAMPLE_BUCKETS  # no bucket kept yet


def test_an_estimate_scales_the_tally_to_the_buckets_not_read() -> None:
    tally = Tally(checked=11_718, count=1_466)
    found = estimated(tally, 3, complete=False)
    # 1,466 * 256 / 3 = 125,098.7 and 11,718 * 256 / 3 = 999,936: two significant digits.
    assert (found.exact, found.count, found.contacts, found.complete) == (
        False,
        130_000,
        1_000_000,
        False,
    )
    assert estimated(Tally(checked=5_000, count=0), 4, complete=True).count == 0


def test_buckets_give_an_unbiased_estimate_where_a_prefix_in_key_order_does_not() -> None:
    # Cities by the key's first letter, as a list imported by region might be: in key order,
    # the first contacts are all from Arequipa.
    keys = [f"{letter}{i:05d}@x.com" for letter in "abcd" for i in range(20_000)]
    city = {k: "Lima" if k[0] in "cd" else "Arequipa" for k in keys}
    documents = {k: document(k, city[k]) for k in keys}
    for buckets in (2, 8, 32):
        tally = Tally()
        tally.add(LIMA, [documents[k] for k in keys if sample_bucket(k) < buckets], NOW.date())
        found = estimated(tally, buckets, complete=True)
        # Within 4 standard errors of the sample (sqrt of the matches it stands for, scaled).
        error = 4 * (40_000 * (SAMPLE_BUCKETS / buckets - 1)) ** 0.5
        assert abs(found.count - 40_000) <= error + 0.05 * found.count, buckets
        assert abs(found.contacts - 80_000) <= 0.1 * 80_000, buckets
    prefix = Tally()
    prefix.add(LIMA, [documents[k] for k in sorted(keys)[:10_000]], NOW.date())
    assert prefix.count == 0  # scaled up, 0: why previews do not read a prefix


def test_a_rebuild_writes_a_document_without_its_sample_bucket_even_if_it_stays_out() -> None:
    held = document("amy@x.com", "Quito")
    old = {k: v for k, v in held.items() if k != SAMPLE}
    writes = segment_writes(LIMA, [held, old], deleted=False, now=NOW, topic="t")
    assert [(fields[SAMPLE], entries) for _, fields, entries in writes] == [(held[SAMPLE], [])]
    assert writes[0][0] is old
