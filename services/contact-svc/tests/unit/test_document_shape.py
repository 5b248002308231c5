"""The document shape: every write carries the current one, and the backfill's update of an
older document is exactly what the builder derives, conditional on what it read."""

from __future__ import annotations

from datetime import UTC, datetime

from contact_svc.contact_documents import (
    CREATED_ORDER,
    CURRENT_SHAPE,
    SEARCH_TERMS,
    SHAPE,
    SORT_KEYS,
    contact_document,
    derived_fields,
    older_shape,
    shape_of,
)
from contact_svc.domain import Contact
from contact_svc.shape_backfill import reshaping
from contacts_shared.schema import ContactStatus

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def contact(**changes: object) -> Contact:
    given: dict[str, object] = {
        "account_id": "a1",
        "profile_id": "p1",
        "key": "ana@example.com",
        "fields": {"email": "ana@example.com", "nombre": "Ána", "compras": 3},
        "status": ContactStatus.ACTIVE,
        "status_source": "api",
        "status_changed_at": AT,
        "source": "import:i1",
        "created_at": AT,
        "updated_at": AT,
        "version": 4,
    }
    return Contact(**{**given, **changes})  # type: ignore[arg-type]


def old(document: dict[str, object]) -> dict[str, object]:
    """The document as written before shapes: no sort keys, no shape."""
    return {k: v for k, v in document.items() if k not in (SORT_KEYS, SHAPE)}


def test_every_write_carries_the_current_shape_and_the_derived_fields() -> None:
    document = contact_document(contact())
    assert document[SHAPE] == CURRENT_SHAPE
    derived = derived_fields(contact())
    assert {k: document[k] for k in derived} == derived
    assert set(derived) == {SEARCH_TERMS, SORT_KEYS, CREATED_ORDER, SHAPE}


def test_an_older_document_gets_exactly_the_builders_derived_fields_if_unchanged() -> None:
    stored = old(contact_document(contact()))
    stored[SEARCH_TERMS] = []
    change = reshaping(stored)
    assert change is not None
    conditions, update = change
    assert conditions == {"version": 4, **older_shape()}
    assert update == {"$set": derived_fields(contact())}


def test_a_deleted_contact_is_reshaped_too() -> None:
    change = reshaping(old(contact_document(contact(deleted=True))))
    assert change is not None and change[1]["$set"][SHAPE] == CURRENT_SHAPE


def test_the_current_or_a_newer_shape_is_left_alone() -> None:
    assert reshaping(contact_document(contact())) is None
    assert reshaping({**contact_document(contact()), SHAPE: CURRENT_SHAPE + 1}) is None


def test_shapes_before_numbering_are_one_and_older() -> None:
    assert shape_of({}) == 1
    assert shape_of({SHAPE: CURRENT_SHAPE}) == CURRENT_SHAPE
    # Missing (null) and every earlier number, never the current or a later one.
    assert older_shape() == {SHAPE: {"$in": [None, *range(1, CURRENT_SHAPE)]}}
