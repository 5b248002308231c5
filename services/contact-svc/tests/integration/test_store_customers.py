"""The store customers' rows on the real server: every key a new customer arrives with at once
is kept (FerretDB can lose one of several upserts creating one document at the same moment),
and a change older than one kept is told stale."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contact_svc.webhook_repository import CustomerSeen, MongoStoreCustomerStore

pytestmark = pytest.mark.integration

ROUNDS, KEYS = 80, 8
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(infrastructure: Any, unique: str) -> AsyncIterator[MongoStoreCustomerStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infrastructure.mongodb_url, tz_aware=True
    )
    database: AsyncDatabase[dict[str, Any]] = client[f"contact_svc_{unique}"]
    customers = MongoStoreCustomerStore(database["webhook_store_customers"], timedelta(days=1))
    await customers.create_indexes()
    yield customers
    await client.close()


async def test_every_key_of_a_new_customer_arriving_at_once_is_kept(
    store: MongoStoreCustomerStore,
) -> None:
    for round_ in range(ROUNDS):
        customer = f"c{round_}"
        keys = [f"k{n}@example.com" for n in range(KEYS)]
        stale = await asyncio.gather(
            *(store.remember("src", [CustomerSeen(customer, key, None)]) for key in keys)
        )
        assert stale == [[]] * KEYS
        assert await store.keys_of("src", [customer]) == sorted(keys), f"round {round_}"


async def test_a_change_older_than_the_one_kept_is_stale(store: MongoStoreCustomerStore) -> None:
    newer = CustomerSeen("c1", "new@example.com", T0 + timedelta(minutes=5))
    older = CustomerSeen("c1", "old@example.com", T0)
    fresh = CustomerSeen("c2", "other@example.com", T0)
    assert await store.remember("src", [newer]) == []
    assert await store.remember("src", [older, fresh]) == [0]
    assert await store.keys_of("src", ["c1"]) == ["new@example.com"]
    assert await store.keys_of("src", ["c2"]) == ["other@example.com"]
