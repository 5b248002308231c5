"""Folded terms: what a case- and accent-insensitive prefix search compares (ADR 9)."""

from __future__ import annotations

import pytest

from contact_svc.contact_documents import (
    FOLDED_TERM_LENGTH,
    folded,
    folded_term,
    folded_term_prefix,
)
from contacts_shared.mongo import prefix_range


def found_by(value: str, prefix: str) -> bool:
    """Whether the value's folded term lies in the range a search for `prefix` reads."""
    term = folded_term("p1", "ciudad", value)
    bounds = prefix_range(folded_term_prefix("p1", "ciudad", folded(prefix)))
    return term is not None and bounds["$gte"] <= term < bounds["$lt"]


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


def test_a_long_value_is_found_by_prefixes_up_to_the_term_length() -> None:
    value = "Á" * FOLDED_TERM_LENGTH + "Tail"
    term = folded_term("p1", "ciudad", value)
    assert term == folded_term_prefix("p1", "ciudad", "a" * FOLDED_TERM_LENGTH)
    assert found_by(value, "a" * FOLDED_TERM_LENGTH)
    assert found_by(value, "áá")


def test_only_strings_have_folded_terms() -> None:
    assert [folded_term("p1", "f", v) for v in (12, 1.5, True, None, ["a"])] == [None] * 5
