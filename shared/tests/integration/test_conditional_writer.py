"""ConditionalWriter on the real server, in both of its filter modes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contacts_shared.mongo import ConditionalWriter, DocumentLocks, connect

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("id_only_filters", [False, True])
async def test_updates_apply_only_while_the_conditions_hold(
    infrastructure: Any, unique: str, id_only_filters: bool
) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    collection = client[f"writer_{unique}"]["docs"]
    writer = ConditionalWriter(DocumentLocks(), id_only_filters=id_only_filters)
    await collection.insert_one({"_id": "a", "version": 1, "n": 0})

    assert await writer.update_if(collection, "a", {"version": 1}, {"$set": {"version": 2}})
    assert not await writer.update_if(collection, "a", {"version": 1}, {"$set": {"n": 9}})
    assert not await writer.update_if(collection, "missing", {"version": 1}, {"$set": {"n": 9}})

    async def increment() -> None:
        while True:  # optimistic: read, then write only if nobody else did meanwhile
            current = await collection.find_one({"_id": "a"})
            assert current is not None
            update = {"$inc": {"n": 1, "version": 1}}
            if await writer.update_if(collection, "a", {"version": current["version"]}, update):
                return

    await asyncio.gather(*(increment() for _ in range(50)))
    final = await collection.find_one({"_id": "a"})
    await client.close()
    assert final is not None and (final["n"], final["version"]) == (50, 52)


async def test_the_local_server_is_recognised(infrastructure: Any) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    writer = await ConditionalWriter.for_server(client, DocumentLocks())
    build = await client.admin.command("buildInfo")
    await client.close()
    assert writer.id_only_filters == ("ferretdbVersion" in build)


@pytest.mark.parametrize("id_only_filters", [False, True])
async def test_reads_and_updates_by_id_in_bulk(
    infrastructure: Any, unique: str, id_only_filters: bool
) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    collection = client[f"writer_{unique}"]["docs"]
    writer = ConditionalWriter(DocumentLocks(), id_only_filters=id_only_filters)
    await collection.insert_many([{"_id": f"d{i}", "tags": ["a", "b"]} for i in range(5)])

    found = await writer.find_by_ids(collection, ["d1", "d3", "missing"], {"tags": 0})
    assert sorted(found, key=lambda d: d["_id"]) == [{"_id": "d1"}, {"_id": "d3"}]

    await writer.update_each(
        collection,
        [
            ("d1", {"$pullAll": {"tags": ["a"]}}),
            ("d2", {"$set": {"n": 2}}),
            ("gone", {"$set": {"n": 0}}),
        ],
    )
    after = {d["_id"]: d async for d in collection.find({})}
    await client.close()
    assert after["d1"] == {"_id": "d1", "tags": ["b"]}
    assert after["d2"] == {"_id": "d2", "tags": ["a", "b"], "n": 2}
    assert after["d0"] == {"_id": "d0", "tags": ["a", "b"]} and "gone" not in after
