"""Use cases that read profile statistics, as counted from the contact events (see stats.py):
one profile's, or a page of profiles' at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from contact_svc.contact_handlers import writable_schema
from contact_svc.stats import ProfileStats, summarize
from contact_svc.stats_repository import StatsStore
from contacts_shared.mongo import bson_now
from contacts_shared.profiles import SchemaStore


async def profile_stats(
    *, account_id: str, profile_id: str, schemas: SchemaStore, stats: StatsStore
) -> ProfileStats:
    """The profile's statistics as counted from its contact events so far (see stats.py)."""
    await writable_schema(schemas, account_id, profile_id)
    return summarize(await stats.of_profile(profile_id), today=bson_now().date())


async def profiles_stats(
    *,
    account_id: str,
    profile_ids: Sequence[str],
    profiles_of: Callable[[str], Awaitable[list[str]]],
    stats: StatsStore,
) -> dict[str, ProfileStats]:
    """`profile_stats` of each profile asked for that holds contacts in the account, by id in
    the order asked; the others (another account's, virtual, deleted, unknown) are left out.
    The account's profiles and the statistics are read side by side, in a fixed number of
    queries however many profiles are asked for."""
    asked = list(dict.fromkeys(profile_ids))
    held, shares = await asyncio.gather(profiles_of(account_id), stats.of_profiles(asked))
    today, mine = bson_now().date(), set(held)
    return {p: summarize(shares[p], today=today) for p in asked if p in mine}
