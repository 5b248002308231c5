"""Contact pages on the real server: every order and filter, walked page by page with cursors,
gives exactly what sorting and filtering all contacts in Python gives (ADR 9's read paths:
`_id` ranges, the probe that sends rare filters to their index, creation-time windows, ranges
of a field's sort keys sized by the profile's sample, few matches sorted here)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contact_svc.contact_documents import FOLDED_TERM_LENGTH, folded, in_sample, sort_key
from contact_svc.contact_repository import MongoContactRepository
from contact_svc.domain import Contact, ContactOrder, PagePosition
from contact_svc.listing_repository import (
    SORT_INDEX,
    TERMS_INDEX,
    FieldOrder,
    MongoContactPages,
    SortedPosition,
)
from contact_svc.settings import ContactSettings
from contact_svc.suppression_repository import MongoSuppressionStore
from contacts_shared.journal import EventJournal
from contacts_shared.schema import ContactStatus

pytestmark = pytest.mark.integration

PROFILE = "p-listing"
NOW = datetime.now(UTC).replace(microsecond=0)
SINCE = NOW - timedelta(days=400)
# Clusters and long gaps: windows must grow across empty years and stay exact inside a burst.
AGES = [timedelta(days=399), timedelta(days=30), timedelta(hours=5), timedelta(minutes=3)]
# Values longer than a folded term: found by prefixes of up to its length.
LONG_TOWN = "Ñ" * FOLDED_TERM_LENGTH + "ez"


def town(index: int) -> str:
    """Accents and case to fold: two rare towns sharing a prefix, long values, a common one."""
    if index % 23 == 4:
        return "Viña del Mar"
    if index % 23 == 9:
        return "VIÑAS"
    if index % 29 == 0:
        return LONG_TOWN + str(index % 2)
    return "Ñuñoa" if index % 2 else "Nunoa Alto"


def sample_key(index: int) -> str:
    """Every third contact's key is one of the profile's sample (one in 256 otherwise), so
    that sorted pages of 160 contacts have many sample keys to size their ranges with."""
    key, suffix = f"user{index:03d}@example.com", 0
    while index % 3 == 0 and not in_sample(key):
        suffix += 1
        key = f"user{index:03d}.{suffix}@example.com"
    return key


def points(index: int) -> int | float:
    """Negatives, ties, halves and whole floats equal to ints (2.0 and 2 are one value)."""
    whole = (index * 37) % 23 - 11
    return whole / 2 if index % 4 == 0 else whole


def sample_contact(index: int) -> Contact:
    created = NOW - AGES[index % len(AGES)] + timedelta(milliseconds=index % 7)
    status = ContactStatus.BOUNCED if index % 40 == 3 else ContactStatus.ACTIVE
    key = sample_key(index)
    # One import rare, a webhook common, the API for the rest.
    source = "import:i1" if index % 45 == 2 else "webhook:w1" if index % 3 == 1 else "api"
    return Contact(
        account_id="account",
        profile_id=PROFILE,
        key=key,
        fields={
            "email": key,
            "city": "Rare" if index % 37 == 5 else "Lima",
            "score": index % 3,
            "town": town(index),
            # Some contacts without them: they come after those with a value.
            **({"points": points(index)} if index % 5 != 1 else {}),
            **(
                {"joined": str(date(2020, 1, 1) + timedelta(days=index * 53 % 900))}
                if index % 7 != 3
                else {}
            ),
        },
        status=status,
        status_source="test",
        status_changed_at=created,
        source=source,
        created_at=created,
        updated_at=created,
        deleted=index % 50 == 7,
    )


CONTACTS = [sample_contact(i) for i in range(160)]


@pytest.fixture
async def watched(
    infrastructure: Any, unique: str, mongo_queries: Any
) -> AsyncIterator[tuple[Any, Any]]:
    """The test's database through a client whose queries are kept (`mongo_queries`)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True, event_listeners=[mongo_queries]
    )
    yield client[f"contact_svc_{unique}"], mongo_queries
    await client.close()


@pytest.fixture
async def repository(infrastructure: Any, unique: str) -> AsyncIterator[MongoContactRepository]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True
    )
    database = client[f"contact_svc_{unique}"]
    repository = MongoContactRepository(
        database["contacts"],
        ContactSettings(mongodb_url=infrastructure.mongodb_url),
        suppressions=MongoSuppressionStore(database["suppressions"]),
        events_queued=lambda *_: None,
        journal=EventJournal(database["contacts_journal"], database["contacts"], lease_seconds=30),
        probe_size=10,  # so that 160 contacts exercise both sides of the probe
    )
    await repository.create_indexes()
    # Another profile's contacts, ordered before and after this one's, must never show.
    for neighbour in ("p-listinf", "p-listing2"):
        await repository.add_many(
            [Contact(**{**vars(c), "profile_id": neighbour, "events": []}) for c in CONTACTS[:20]]
        )
    await repository.add_many(CONTACTS)
    yield repository
    await client.close()


ORDERS: dict[ContactOrder, Callable[[Contact], Any]] = {
    ContactOrder.KEY: lambda c: c.key,
    ContactOrder.OLDEST: lambda c: (c.created_at, c.key),
    ContactOrder.NEWEST: lambda c: (c.created_at, c.key),
}
FILTERS: dict[str, tuple[dict[str, Any], Callable[[Contact], bool]]] = {
    "none": ({}, lambda c: True),
    "rare status": ({"status": ContactStatus.BOUNCED}, lambda c: c.status is ContactStatus.BOUNCED),
    "common status": ({"status": ContactStatus.ACTIVE}, lambda c: c.status is ContactStatus.ACTIVE),
    "rare value": ({"field_equals": ("city", "Rare")}, lambda c: c.fields["city"] == "Rare"),
    "common value": ({"field_equals": ("city", "Lima")}, lambda c: c.fields["city"] == "Lima"),
    "number as float": ({"field_equals": ("score", 2.0)}, lambda c: c.fields["score"] == 2),
    "value and status": (
        {"field_equals": ("city", "Lima"), "status": ContactStatus.BOUNCED},
        lambda c: c.fields["city"] == "Lima" and c.status is ContactStatus.BOUNCED,
    ),
    "key prefix": ({"key_prefix": "user1"}, lambda c: c.key.startswith("user1")),
    "rare source": ({"source": "import:i1"}, lambda c: c.source == "import:i1"),
    "common source": ({"source": "webhook:w1"}, lambda c: c.source == "webhook:w1"),
    "source and status": (
        {"source": "api", "status": ContactStatus.BOUNCED},
        lambda c: c.source == "api" and c.status is ContactStatus.BOUNCED,
    ),
    "source and prefix": (
        {"source": "webhook:w1", "key_prefix": "user1"},
        lambda c: c.source == "webhook:w1" and c.key.startswith("user1"),
    ),
    "source, status and value": (
        {"source": "api", "status": ContactStatus.ACTIVE, "field_equals": ("city", "Rare")},
        lambda c: (
            c.source == "api" and c.status is ContactStatus.ACTIVE and c.fields["city"] == "Rare"
        ),
    ),
    "rare value prefix": (
        {"value_prefix": ("town", "vina d")},
        lambda c: folded(c.fields["town"]).startswith("vina d"),
    ),
    "value prefix": (
        {"value_prefix": ("town", "vina")},
        lambda c: folded(c.fields["town"]).startswith("vina"),
    ),
    "common value prefix": (
        {"value_prefix": ("town", "nunoa")},
        lambda c: folded(c.fields["town"]).startswith("nunoa"),
    ),
    "prefix of long values": (
        {"value_prefix": ("town", "n" * FOLDED_TERM_LENGTH)},
        lambda c: c.fields["town"].startswith(LONG_TOWN),
    ),
    "value prefix and status": (
        {"value_prefix": ("town", "nunoa"), "status": ContactStatus.BOUNCED},
        lambda c: folded(c.fields["town"]).startswith("nunoa") and c.status.value == "bounced",
    ),
    "value prefix, source and status": (
        {"value_prefix": ("town", "nu"), "source": "api", "status": ContactStatus.ACTIVE},
        lambda c: (
            folded(c.fields["town"]).startswith("nu")
            and c.source == "api"
            and c.status is ContactStatus.ACTIVE
        ),
    ),
    "value prefix and key prefix": (
        {"value_prefix": ("town", "nunoa a"), "key_prefix": "user1"},
        lambda c: folded(c.fields["town"]).startswith("nunoa a") and c.key.startswith("user1"),
    ),
    "prefix and rare value": (
        {"key_prefix": "user1", "field_equals": ("city", "Rare")},
        lambda c: c.key.startswith("user1") and c.fields["city"] == "Rare",
    ),
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("limit", [1, 7, 50])
async def test_every_page_walk_matches_sorting_everything(
    repository: MongoContactRepository, order: ContactOrder, filter_name: str, limit: int
) -> None:
    arguments, matches = FILTERS[filter_name]
    expected = sorted(
        (c.key for c in CONTACTS if not c.deleted and matches(c)),
        key=lambda key: ORDERS[order](next(c for c in CONTACTS if c.key == key)),
        reverse=order is ContactOrder.NEWEST,
    )
    walked: list[str] = []
    after: PagePosition | None = None
    while True:
        page = await repository.find_page(
            PROFILE,
            status=arguments.get("status"),
            key_prefix=arguments.get("key_prefix"),
            field_equals=arguments.get("field_equals"),
            source=arguments.get("source"),
            value_prefix=arguments.get("value_prefix"),
            after=after,
            limit=limit,
            order=order,
            since=SINCE,
        )
        assert len(page) <= limit
        walked += [contact.key for contact in page]
        if len(page) < limit:
            break
        after = PagePosition(page[-1].key, page[-1].created_at)
    assert walked == expected
    assert expected, "each case lists something"


def in_field_order(order: FieldOrder, contacts: list[Contact]) -> list[str]:
    """The keys of `contacts` by the field's value as people expect it, computed here without
    sort keys: numbers as numbers, text ignoring case and accents (its first 64 characters),
    ties by key, all reversed for descending; those without a value after, by key."""

    def value(contact: Contact) -> tuple[float, str]:
        given = contact.fields[order.field_key]
        if isinstance(given, str):
            return (math.inf, folded(given)[:FOLDED_TERM_LENGTH])
        return (float(given), "")

    valued = [c for c in contacts if order.field_key in c.fields]
    valued.sort(key=lambda c: (value(c), c.key), reverse=order.descending)
    lacking = sorted(c.key for c in contacts if order.field_key not in c.fields)
    return [c.key for c in valued] + lacking


FIELD_ORDERS = {
    "points": FieldOrder("points"),
    "-points": FieldOrder("points", descending=True),
    "town": FieldOrder("town"),
    "-joined": FieldOrder("joined", descending=True),
}


@pytest.mark.parametrize("sort", list(FIELD_ORDERS))
@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("limit", [4, 50])
async def test_every_page_walk_by_a_field_matches_sorting_everything(
    repository: MongoContactRepository, sort: str, filter_name: str, limit: int
) -> None:
    arguments, matches = FILTERS[filter_name]
    order = FIELD_ORDERS[sort]
    expected = in_field_order(order, [c for c in CONTACTS if not c.deleted and matches(c)])
    walked: list[str] = []
    after: SortedPosition | None = None
    while True:
        page = await repository.find_page(
            PROFILE,
            status=arguments.get("status"),
            key_prefix=arguments.get("key_prefix"),
            field_equals=arguments.get("field_equals"),
            source=arguments.get("source"),
            value_prefix=arguments.get("value_prefix"),
            after=after,
            limit=limit,
            by_field=order,
        )
        assert len(page) <= limit
        walked += [contact.key for contact in page]
        if len(page) < limit:
            break
        last = page[-1]
        position = sort_key(PROFILE, last.fields.get(order.field_key), last.key)
        after = SortedPosition(position, last.key)
    assert walked == expected


@pytest.mark.parametrize("filter_name", list(FILTERS))
async def test_counts_match_the_listing_and_read_an_index(
    repository: MongoContactRepository,
    filter_name: str,
    watched: tuple[Any, Any],
    indexes_read: Any,
) -> None:
    arguments, matches = FILTERS[filter_name]
    database, queries = watched
    names = ("status", "key_prefix", "field_equals", "source", "value_prefix")
    filters = {name: arguments.get(name) for name in names}
    pages = MongoContactPages(database["contacts"])
    counted = await pages.count_matching(PROFILE, **filters)
    matching = [c for c in CONTACTS if not c.deleted and matches(c)]
    assert counted == len(matching)
    listed = await repository.find_page(PROFILE, after=None, limit=500, **filters)
    assert counted == len(listed)
    # The sample's share of the matches: what an estimated count scales up.
    sampled = await pages.count_matching(PROFILE, in_sample=True, **filters)
    assert sampled == len([c for c in matching if in_sample(c.key)])
    for command in queries.sent:
        used = await indexes_read(database, command)
        # A value prefix is a range of sort keys (with exact terms, the server may intersect
        # both indexes' matches), unless a key prefix reads `_id`; the sample is a term.
        if "value_prefix" in arguments and "key_prefix" not in arguments:
            assert used <= {SORT_INDEX, TERMS_INDEX}, command


@pytest.mark.parametrize("prefix", ["vina", "nunoa"])
async def test_value_prefix_pages_read_indexes(
    repository: MongoContactRepository,
    watched: tuple[Any, Any],
    indexes_read: Any,
    prefix: str,
) -> None:
    database, queries = watched
    pages = MongoContactPages(database["contacts"], probe_size=10)
    after: PagePosition | None = None
    walked: list[str] = []
    while page := await pages.find_page(
        PROFILE,
        status=None,
        key_prefix=None,
        field_equals=None,
        value_prefix=("town", prefix),
        after=after,
        limit=5,
    ):
        walked += [c.key for c in page]
        after = PagePosition(page[-1].key)
    live = [c for c in CONTACTS if not c.deleted]
    assert walked == sorted(c.key for c in live if folded(c.fields["town"]).startswith(prefix))
    assert queries.sent
    for command in queries.sent:
        assert await indexes_read(database, command), command


@pytest.mark.parametrize("source", ["import:i1", "webhook:w1", "api"])
@pytest.mark.parametrize("order", list(ORDERS))
async def test_source_pages_read_indexes(
    repository: MongoContactRepository,
    watched: tuple[Any, Any],
    indexes_read: Any,
    source: str,
    order: ContactOrder,
) -> None:
    database, queries = watched
    pages = MongoContactPages(database["contacts"], probe_size=10)
    found = await pages.find_page(
        PROFILE,
        status=None,
        key_prefix=None,
        field_equals=None,
        source=source,
        after=None,
        limit=20,
        order=order,
        since=SINCE,
    )
    assert found and {c.source for c in found} == {source}
    assert queries.sent
    for command in queries.sent:
        assert await indexes_read(database, command), command


@pytest.mark.parametrize("sort", list(FIELD_ORDERS))
@pytest.mark.parametrize("filter_name", ["none", "rare status", "common value", "value prefix"])
async def test_pages_by_a_field_read_indexes(
    repository: MongoContactRepository,
    watched: tuple[Any, Any],
    indexes_read: Any,
    sort: str,
    filter_name: str,
) -> None:
    arguments, matches = FILTERS[filter_name]
    database, queries = watched
    pages = MongoContactPages(database["contacts"], probe_size=10)
    order = FIELD_ORDERS[sort]
    after: SortedPosition | None = None
    walked: list[str] = []
    while page := await pages.find_page(
        PROFILE,
        status=arguments.get("status"),
        key_prefix=None,
        field_equals=arguments.get("field_equals"),
        value_prefix=arguments.get("value_prefix"),
        after=after,
        limit=9,
        by_field=order,
    ):
        walked += [c.key for c in page]
        last = page[-1]
        after = SortedPosition(
            sort_key(PROFILE, last.fields.get(order.field_key), last.key), last.key
        )
    assert walked == in_field_order(order, [c for c in CONTACTS if not c.deleted and matches(c)])
    assert queries.sent
    for command in queries.sent:
        assert await indexes_read(database, command), command


async def test_a_removed_field_leaves_values_and_terms(
    repository: MongoContactRepository,
) -> None:
    rare = {"status": None, "key_prefix": None, "field_equals": None, "source": None}
    assert await repository.count_matching(PROFILE, **rare, value_prefix=("city", "rare"))
    await repository.drop_field(PROFILE, "city")
    found = await repository.find_page(
        PROFILE,
        status=None,
        key_prefix=None,
        field_equals=("city", "Rare"),
        after=None,
        limit=50,
    )
    assert found == []
    # The folded terms went with the values: no value prefix finds a contact.
    gone = await repository.find_page(
        PROFILE,
        status=None,
        key_prefix=None,
        field_equals=None,
        value_prefix=("city", "rare"),
        after=None,
        limit=50,
    )
    assert gone == []
    page = await repository.find_page(
        PROFILE, status=None, key_prefix=None, field_equals=None, after=None, limit=500
    )
    assert page and all("city" not in contact.fields for contact in page)
    assert any("score" in contact.fields for contact in page)
    # Sorted by the removed field (a field of that name added again), no contact has a value:
    # all come in key order, whatever sort keys the removal left.
    by_city = await repository.find_page(
        PROFILE,
        status=None,
        key_prefix=None,
        field_equals=None,
        after=None,
        limit=500,
        by_field=FieldOrder("city"),
    )
    assert [c.key for c in by_city] == [c.key for c in page]
