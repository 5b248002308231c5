"""A new profile's statistics counted by every partition at once, against the real server:
each partition's share is found however the directory's concurrent first writes went (FerretDB
v2 can lose one of them)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contact_svc.stats import PartitionCounts
from contact_svc.stats_repository import MongoStatsStore

pytestmark = pytest.mark.integration


async def test_shares_first_written_side_by_side_are_all_counted(
    infrastructure: Any, unique: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True
    )
    database = client[f"stats_directory_{unique}"]
    stats = MongoStatsStore(database["profile_stats"], database["stats_marks"], partitions=6)
    now = datetime.now(UTC)
    try:
        for round_ in range(40):  # FerretDB v2 lost a listing in 1 of 6 such races
            profile = f"p{round_}"
            await asyncio.gather(
                *(
                    stats.store(
                        PartitionCounts(profile, n, 1, {"active": n + 1}, {}, now),
                        expected_offset=-1,
                    )
                    for n in range(6)
                )
            )
            shares = await stats.of_profile(profile)
            assert sorted(s.partition for s in shares) == list(range(6)), round_
            assert sum(s.by_status["active"] for s in shares) == 21, round_
    finally:
        await client.drop_database(f"stats_directory_{unique}")
        await client.close()
