"""Single-document writes on the real server: conditional updates under contention, bulk reads
and updates by `_id`, replacements that keep the newer document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contacts_shared.mongo import (
    Collection,
    StaleDocument,
    connect,
    find_by_ids,
    replace_if_newer,
    retry_if_stale,
    update_each,
    update_each_if,
    update_if,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def collection(infrastructure: Any, unique: str) -> AsyncIterator[Collection]:
    client = connect(infrastructure.mongodb_url, app_name="test")
    yield client[f"writes_{unique}"]["docs"]
    await client.close()


async def test_updates_apply_only_while_the_conditions_hold(collection: Collection) -> None:
    await collection.insert_one({"_id": "a", "version": 1, "n": 0})

    assert await update_if(collection, "a", {"version": 1}, {"$set": {"version": 2}})
    assert not await update_if(collection, "a", {"version": 1}, {"$set": {"n": 9}})
    assert not await update_if(collection, "missing", {"version": 1}, {"$set": {"n": 9}})
    assert await collection.find_one({"_id": "a"}) == {"_id": "a", "version": 2, "n": 0}


async def test_bulk_conditional_updates_name_those_applied(collection: Collection) -> None:
    await collection.insert_many([{"_id": n, "version": 1, "n": 0} for n in range(6)])
    await collection.update_one({"_id": 2}, {"$set": {"version": 5}})  # written meanwhile

    updates = [(n, {"version": 1}, {"$set": {"version": 2, "n": n}}) for n in range(6)]
    assert await update_each_if(collection, updates) == {0, 1, 3, 4, 5}
    assert await update_each_if(collection, [*updates[:2], (9, {}, {"$set": {"n": 1}})]) == set()
    assert await update_each_if(collection, [(0, {"version": 2}, {"$inc": {"n": 10}})]) == {0}
    found = {d["_id"]: (d["version"], d["n"]) async for d in collection.find()}
    assert found == {0: (2, 10), 1: (2, 1), 2: (5, 0), 3: (2, 3), 4: (2, 4), 5: (2, 5)}


async def test_300_concurrent_conditional_updates_of_one_document_all_apply(
    collection: Collection,
) -> None:
    await collection.insert_one({"_id": "a", "version": 0, "values": {}})

    async def set_own_value(writer: int) -> None:
        async def change() -> None:
            current = await collection.find_one({"_id": "a"}, {"version": 1})
            assert current is not None
            update = {"$set": {f"values.w{writer}": writer}, "$inc": {"version": 1}}
            if not await update_if(collection, "a", {"version": current["version"]}, update):
                raise StaleDocument("a")

        await retry_if_stale(change)

    await asyncio.gather(*(set_own_value(writer) for writer in range(300)))
    final = await collection.find_one({"_id": "a"})
    assert final is not None
    assert final["version"] == 300
    assert final["values"] == {f"w{writer}": writer for writer in range(300)}


async def test_reads_and_updates_by_id_in_bulk(collection: Collection) -> None:
    await collection.insert_many([{"_id": f"d{i}", "tags": ["a", "b"]} for i in range(5)])

    found = await find_by_ids(collection, ["d1", "d3", "missing"], {"tags": 0})
    assert sorted(found, key=lambda d: d["_id"]) == [{"_id": "d1"}, {"_id": "d3"}]
    assert await find_by_ids(collection, []) == []

    await update_each(
        collection,
        [
            ("d1", {"$pullAll": {"tags": ["a"]}}),
            ("d2", {"$set": {"n": 2}}),
            ("gone", {"$set": {"n": 0}}),
        ],
    )
    after = {d["_id"]: d async for d in collection.find({})}
    assert after["d1"] == {"_id": "d1", "tags": ["b"]}
    assert after["d2"] == {"_id": "d2", "tags": ["a", "b"], "n": 2}
    assert after["d0"] == {"_id": "d0", "tags": ["a", "b"]} and "gone" not in after


async def test_a_replacement_keeps_the_newer_document(collection: Collection) -> None:
    async def offer(version: int) -> bool:
        return await replace_if_newer(
            collection, "p", {"version": {"$lt": version}}, {"version": version}
        )

    assert await offer(2)  # created
    assert not await offer(1)  # older: refused
    assert not await offer(2)  # the same: refused
    await asyncio.gather(*(offer(v) for v in range(3, 40)))
    final = await collection.find_one({"_id": "p"})
    assert final == {"_id": "p", "version": 39}
