"""ensure_indexes brings an older database's indexes in line, on the real server."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING, DESCENDING, IndexModel

from contacts_shared.mongo import connect, ensure_indexes

pytestmark = pytest.mark.integration


async def test_missing_indexes_are_built_changed_ones_rebuilt_and_unwanted_ones_dropped(
    infrastructure: Any, unique: str
) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    collection = client[f"indexes_{unique}"]["docs"]
    # As an older version left it: `by_created` on fewer keys, plus an index since retired.
    await collection.create_index([("p", ASCENDING), ("created", ASCENDING)], name="by_created")
    await collection.create_index([("p", ASCENDING), ("updated", DESCENDING)], name="by_updated")
    await collection.create_index([("p", ASCENDING), ("k", ASCENDING)], name="by_key")
    wanted = [
        IndexModel([("p", ASCENDING), ("k", ASCENDING)], name="by_key"),
        IndexModel([("p", ASCENDING), ("created", ASCENDING), ("k", ASCENDING)], name="by_created"),
        IndexModel([("p", ASCENDING), ("email", ASCENDING)], unique=True, name="email_unique"),
    ]

    for _ in range(2):  # the second start finds everything in place and changes nothing
        await ensure_indexes(collection, wanted)
        indexes = {
            index["name"]: (list(index["key"].items()), bool(index.get("unique")))
            async for index in await collection.list_indexes()
        }
        assert indexes == {
            "_id_": ([("_id", 1)], False),
            "by_key": ([("p", 1), ("k", 1)], False),
            "by_created": ([("p", 1), ("created", 1), ("k", 1)], False),
            "email_unique": ([("p", 1), ("email", 1)], True),
        }

    await client.close()
