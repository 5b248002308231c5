"""Sort keys: what a page by a field's value reads in order, and what a case- and
accent-insensitive prefix search compares (ADR 9); the listing's sort parameter, its cursors and
its estimated counts."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_svc.contact_documents import (
    FOLDED_TERM_LENGTH,
    SAMPLE_RATE,
    in_sample,
    sort_key,
    sort_value,
    sortable_text,
    text_prefix_range,
)
from contact_svc.domain import Contact, ContactOrder
from contact_svc.listing_handlers import (
    estimated,
    field_cursor,
    listing_order,
    parse_field_cursor,
)
from contact_svc.listing_repository import FieldOrder, SortedPosition
from contacts_shared.profiles import ProfileSchema
from contacts_shared.schema import ContactStatus
from contacts_shared.values import ValuesInvalid


def found_by(value: str, prefix: str) -> bool:
    """Whether the value's sort key lies in the range a search for `prefix` reads."""
    key = sort_key("p1", value, "a@example.com")
    bounds = text_prefix_range("p1", sortable_text(prefix))
    return key is not None and bounds["$gte"] <= key < bounds["$lt"]


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("Viña del Mar", "vina"),
        ("Viña del Mar", "VIÑA"),
        ("Viña del Mar", "viña d"),
        ("Viña del Mar", "Viña del Mar"),
        ("Ñuñoa", "nunoa"),
        ("Ñuñoa", "ÑU"),
        ("Bogotá", "bogota"),
        ("Straße", "STRASS"),
        ("ﬁnca", "fin"),  # a ligature decomposes
        ("São Paulo", "sao p"),
        ("Lima", ""),
    ],
)
def test_a_value_is_found_by_its_prefix_whatever_the_case_and_accents(
    value: str, prefix: str
) -> None:
    assert found_by(value, prefix)


@pytest.mark.parametrize(
    ("value", "prefix"),
    [("Viña del Mar", "vina x"), ("Viña del Mar", "ina"), ("Ñuñoa", "nunoas"), ("Lima", "lx")],
)
def test_a_value_is_not_found_by_what_it_does_not_start_with(value: str, prefix: str) -> None:
    assert not found_by(value, prefix)


def test_a_long_value_is_found_by_prefixes_up_to_the_kept_length() -> None:
    value = "Á" * FOLDED_TERM_LENGTH + "Tail"
    assert sortable_text(value) == "a" * FOLDED_TERM_LENGTH
    assert found_by(value, "a" * FOLDED_TERM_LENGTH)
    assert found_by(value, "áá")


def test_numbers_are_never_found_by_a_text_prefix() -> None:
    assert not found_by(12, "1")  # type: ignore[arg-type]


def test_only_numbers_text_and_booleans_sort() -> None:
    assert [sort_value(v) for v in (None, ["a"], {"a": 1})] == [None] * 3
    assert sort_key("p1", None, "a@example.com") is None


numbers = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(numbers, numbers)
def test_numbers_sort_as_numbers(a: float, b: float) -> None:
    first, second = sort_value(a), sort_value(b)
    assert first is not None and second is not None
    if a < b:
        assert first < second
    if a == b and math.copysign(1, a) == math.copysign(1, b):
        assert first == second  # 2 and 2.0 are one value: tied, then by key


@given(st.text(max_size=80), st.text(max_size=80))
def test_text_sorts_as_its_folded_form(a: str, b: str) -> None:
    first, second = sort_value(a), sort_value(b)
    assert first is not None and second is not None
    assert (first < second) == (sortable_text(a) < sortable_text(b))


def test_types_apart_and_ties_by_key() -> None:
    ordered = [
        sort_key("p1", -1e300, "b"),
        sort_key("p1", -2, "b"),
        sort_key("p1", -1.5, "b"),
        sort_key("p1", 0, "b"),
        sort_key("p1", 2, "a"),
        sort_key("p1", 2.0, "b"),
        sort_key("p1", 10, "a"),
        sort_key("p1", "1999-12-31", "a"),  # dates are ISO text: they sort as dates
        sort_key("p1", "2000-01-01", "a"),
        sort_key("p1", "ana", "a"),
        sort_key("p1", "Ángel", "a"),
        sort_key("p1", "BETO", "a"),
        sort_key("p1", False, "a"),
        sort_key("p1", True, "a"),
    ]
    assert ordered == sorted(ordered)  # type: ignore[type-var]


def test_control_characters_sort_as_spaces_within_the_value() -> None:
    # Below the separator that ends the value they would put "ab\x01" before "ab".
    assert sort_key("p1", "ab", "z") < sort_key("p1", "ab\x01", "a")  # type: ignore[operator]


def test_about_one_key_in_the_sample_rate_is_in_the_sample() -> None:
    keys = [f"user{i}@example.com" for i in range(SAMPLE_RATE * 200)]
    assert 150 <= sum(in_sample(k) for k in keys) <= 250


@pytest.mark.parametrize(
    ("in_the_sample", "count"),
    [(21, 5400), (100, 26000), (117, 30000), (3906, 1000000), (39063, 10000000)],
)
def test_estimates_keep_two_significant_digits(in_the_sample: int, count: int) -> None:
    assert estimated(in_the_sample) == count


def test_sort_names_an_order_or_a_field(regular_schema: ProfileSchema) -> None:
    assert listing_order(regular_schema, "key") is ContactOrder.KEY
    assert listing_order(regular_schema, "-created_at") is ContactOrder.NEWEST
    assert listing_order(regular_schema, "Ciudad") == FieldOrder("ciudad")
    assert listing_order(regular_schema, "-ciudad") == FieldOrder("ciudad", descending=True)
    with pytest.raises(ValuesInvalid) as refused:
        listing_order(regular_schema, "-Edad")
    assert refused.value.problems[0].field == "sort"
    assert "'Edad'" in refused.value.problems[0].message


def contact(**fields: object) -> Contact:
    now = datetime.now(UTC)
    return Contact(
        account_id="a1",
        profile_id="p1",
        key="ana@example.com",
        fields={"email": "ana@example.com", **fields},
        status=ContactStatus.ACTIVE,
        status_source="api",
        status_changed_at=now,
        source="api",
        created_at=now,
        updated_at=now,
    )


def test_a_field_cursor_names_the_last_contact_and_only_its_order() -> None:
    order = FieldOrder("ciudad", descending=True)
    valued = parse_field_cursor(order, field_cursor(order, contact(ciudad="Lima")))
    assert valued == SortedPosition(sort_key("p1", "Lima", "ana@example.com"), "ana@example.com")
    without = parse_field_cursor(order, field_cursor(order, contact()))
    assert without == SortedPosition(None, "ana@example.com")
    for other in (FieldOrder("ciudad"), FieldOrder("nombre", descending=True)):
        with pytest.raises(ValuesInvalid):
            parse_field_cursor(other, field_cursor(order, contact(ciudad="Lima")))
    with pytest.raises(ValuesInvalid):
        parse_field_cursor(order, "not-a-cursor")
