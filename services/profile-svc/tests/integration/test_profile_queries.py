"""profile-svc's list queries against the real MongoDB-protocol server: ties in a sort value
page by id, and every query path is served by an index."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contacts_shared.rules import RuleGroup
from contacts_shared.schema import ProfileType
from profile_svc.domain import PagePosition, Profile, ProfileOrder, page_cursor, parse_cursor
from profile_svc.repository import MongoProfileRepository, ProfileFilter
from profile_svc.settings import ProfileSettings

pytestmark = pytest.mark.integration

ACCOUNT = "account-a"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def watched(
    profile_settings: ProfileSettings, mongo_queries: Any
) -> AsyncIterator[tuple[MongoProfileRepository, Any, Any]]:
    """The repository on the service's database, through a client whose queries are kept
    (`mongo_queries`)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        profile_settings.mongodb_url, event_listeners=[mongo_queries], tz_aware=True
    )
    database = client[profile_settings.mongodb_database]
    repository = MongoProfileRepository(
        database["profiles"], profile_settings, events_queued=lambda _: None
    )
    await repository.create_indexes()
    yield repository, mongo_queries, database
    await client.close()


def profile(index: int, *, base: Profile | None = None) -> Profile:
    """A profile created at NOW, so that every time order ties and ids decide."""
    rules = {"all": [{"field": "status", "op": "is", "value": "active"}]}
    return Profile.create(
        id=f"{index:024x}",
        account_id=ACCOUNT,
        name=f"P{index}",
        description="",
        type=ProfileType.VIRTUAL if base else ProfileType.REGULAR,
        fields=[],
        now=NOW,
        base=base,
        rules=RuleGroup.model_validate(rules) if base else None,
    )


async def test_profiles_tied_on_the_sort_value_page_by_id(
    watched: tuple[MongoProfileRepository, Any, Any],
) -> None:
    repository, _, _ = watched
    profiles = [profile(index) for index in range(1, 6)]
    for each in reversed(profiles):
        await repository.add(each)
    for order in (ProfileOrder.CREATED, ProfileOrder.UPDATED_DESC):
        seen: list[str] = []
        after: PagePosition | None = None
        while page := await repository.find_page(
            ACCOUNT, ProfileFilter(), order=order, after=after, limit=2
        ):
            seen += [p.id for p in page]
            after = parse_cursor(order, page_cursor(order, page[-1]))
        ids = [p.id for p in profiles]
        assert seen == (ids[::-1] if order.descending else ids), order


async def test_every_list_query_is_served_by_an_index(
    watched: tuple[MongoProfileRepository, Any, Any], indexes_read: Any
) -> None:
    repository, commands, database = watched
    base = profile(1)
    for each in (base, profile(2), profile(3, base=base), profile(4, base=base)):
        await repository.add(each)
    commands.sent.clear()

    for order in ProfileOrder:
        first = await repository.find_page(
            ACCOUNT, ProfileFilter(), order=order, after=None, limit=2
        )
        after = parse_cursor(order, page_cursor(order, first[-1]))
        await repository.find_page(ACCOUNT, ProfileFilter(), order=order, after=after, limit=2)
    assert await repository.count(ACCOUNT, ProfileFilter()) == 4
    served_by = {
        "by_type": ProfileFilter(types=(ProfileType.VIRTUAL,)),
        "by_base": ProfileFilter(base_profile_id=base.id),
        "by_name": ProfileFilter(name_prefix="p"),
        "_id_": ProfileFilter(ids=(base.id,)),
    }
    filtered = len(commands.sent)
    for filters in served_by.values():
        await repository.find_page(
            ACCOUNT, filters, order=ProfileOrder.CREATED, after=None, limit=2
        )
        await repository.count(ACCOUNT, filters)
    assert len(await repository.based_on(ACCOUNT, base.id)) == 2

    expected = [None] * filtered + [name for name in served_by for _ in range(2)] + ["by_base"]
    assert len(commands.sent) == len(expected)
    for command, index in zip(commands.sent, expected, strict=True):
        used = await indexes_read(database, command)  # some index, and no collection scan
        assert index is None or used == {index}, (command, used)
