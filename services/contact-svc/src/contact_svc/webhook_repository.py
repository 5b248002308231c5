"""contact-svc storage of webhooks: the sources, the store customer ids seen, and the delivery
ids taken. Ports are Protocols; the MongoDB implementations follow them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pymongo import ASCENDING, IndexModel, InsertOne, UpdateOne
from pymongo.errors import DuplicateKeyError

from contact_svc.webhooks import WebhookFormat, WebhookSource
from contacts_shared.mongo import (
    Collection,
    Document,
    bson_now,
    bulk_write_tolerating_duplicates,
    ensure_indexes,
)

GONE_AT = "gone_at"


def expiring(field: str, keep: timedelta) -> IndexModel:
    """A TTL index: a document goes `keep` after the time in `field` (none without one)."""
    return IndexModel([(field, ASCENDING)], expireAfterSeconds=int(keep.total_seconds()))


class WebhookSourceStore(Protocol):
    async def add(self, source: WebhookSource) -> None: ...

    async def get(self, source_id: str) -> WebhookSource | None: ...

    async def set_secret(
        self, source: WebhookSource, secret: str, previous_until: datetime | None
    ) -> bool: ...

    async def remove(self, source_id: str) -> None: ...


class MongoWebhookSourceStore:
    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def add(self, source: WebhookSource) -> None:
        document = asdict(source)
        document["_id"] = document.pop("id")
        # Payload paths are dotted: stored as values, never as keys.
        document["mapping"] = [
            {"path": path, "field": name} for path, name in source.mapping.items()
        ]
        await self._collection.insert_one(document)

    async def get(self, source_id: str) -> WebhookSource | None:
        document = await self._collection.find_one({"_id": source_id})
        if document is None:
            return None
        return WebhookSource(
            id=document["_id"],
            account_id=document["account_id"],
            profile_id=document["profile_id"],
            format=WebhookFormat(document["format"]),
            mapping={entry["path"]: entry["field"] for entry in document["mapping"]},
            secret=document["secret"],
            created_at=document["created_at"],
            previous_secret=document.get("previous_secret"),
            previous_secret_until=document.get("previous_secret_until"),
        )

    async def set_secret(
        self, source: WebhookSource, secret: str, previous_until: datetime | None
    ) -> bool:
        """Make `secret` the source's if its secret is still `source.secret`; the one it
        replaces still verifies until `previous_until` (None: it stops at once)."""
        result = await self._collection.update_one(
            {"_id": source.id, "secret": source.secret},
            {
                "$set": {
                    "secret": secret,
                    "previous_secret": source.secret if previous_until else None,
                    "previous_secret_until": previous_until,
                }
            },
        )
        return result.matched_count == 1

    async def remove(self, source_id: str) -> None:
        await self._collection.delete_one({"_id": source_id})


@dataclass(frozen=True)
class CustomerSeen:
    """A store customer in a delivery: the contact key it came with, and when the store says
    it last changed (None: it does not say)."""

    customer_id: str
    key: str
    changed_at: datetime | None


class StoreCustomerStore(Protocol):
    async def remember(self, source_id: str, seen: Sequence[CustomerSeen]) -> list[int]: ...

    async def keys_of(self, source_id: str, customer_ids: Sequence[str]) -> list[str]: ...

    async def mark_gone(
        self, source_id: str, customer_ids: Sequence[str], at: datetime
    ) -> None: ...

    async def forget_source(self, source_id: str) -> None: ...


class MongoStoreCustomerStore:
    """Per source and store customer id: the contact keys it has arrived with (a store's
    delete carries only the id) and the newest change the store sent. Written before the
    delivery is answered, so a delete sent after it finds the contact even while its creation
    is still on the command topic, and a store's late retry of an older change is known. A
    deleted customer keeps a row without keys for `keep`, so that a retry of its creation does
    not bring it back."""

    def __init__(self, collection: Collection, keep: timedelta) -> None:
        self._collection = collection
        self._keep = keep

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._collection,
            [
                IndexModel([("source_id", ASCENDING)]),
                expiring(GONE_AT, self._keep),
            ],
        )

    async def remember(self, source_id: str, seen: Sequence[CustomerSeen]) -> list[int]:
        """Keep each customer's key and change time; the indexes (in `seen`) of those older
        than a change of the same customer kept before: stale, and not kept."""
        # The rows first, by plain inserts (one already there is a duplicate, an answer): FerretDB
        # can lose one of several upserts that create the same document at once, `$addToSet`
        # and all, while updates of a document that exists are applied one after the other.
        rows = {f"{source_id}:{customer.customer_id}" for customer in seen}
        await bulk_write_tolerating_duplicates(
            self._collection,
            [
                InsertOne({"_id": row, "source_id": source_id, "keys": [], "changed_at": None})
                for row in sorted(rows)
            ],
        )
        writes = []
        for customer in seen:
            condition: Document = {"_id": f"{source_id}:{customer.customer_id}"}
            changes: Document = {"source_id": source_id}
            if customer.changed_at is not None:
                # Not newer: the upsert meets the row as a duplicate key, and is refused (the
                # row is there: an upsert is how a stale change is told, per write).
                condition["$or"] = [
                    {"changed_at": {"$lte": customer.changed_at}},
                    {"changed_at": None},
                ]
                changes["changed_at"] = customer.changed_at
            update = {"$set": changes, "$addToSet": {"keys": customer.key}, "$unset": {GONE_AT: ""}}
            writes.append(UpdateOne(condition, update, upsert=True))
        return (await bulk_write_tolerating_duplicates(self._collection, writes)).duplicates

    async def keys_of(self, source_id: str, customer_ids: Sequence[str]) -> list[str]:
        """Every contact key these customers arrived with (an email changed in the store
        leaves its earlier contact, which the store's delete names too)."""
        ids = [f"{source_id}:{customer_id}" for customer_id in customer_ids]
        cursor = self._collection.find({"_id": {"$in": ids}})
        return sorted({key async for document in cursor for key in document["keys"]})

    async def mark_gone(self, source_id: str, customer_ids: Sequence[str], at: datetime) -> None:
        """The customers were deleted (erased) at `at`: their keys are forgotten, and a change
        the store made before `at` is stale from now on."""
        if not customer_ids:
            return
        await self._collection.bulk_write(
            [
                UpdateOne(
                    {"_id": f"{source_id}:{customer_id}"},
                    {
                        "$set": {
                            "source_id": source_id,
                            "keys": [],
                            "changed_at": at,
                            GONE_AT: at,
                        }
                    },
                    upsert=True,
                )
                for customer_id in customer_ids
            ],
            ordered=False,
        )

    async def forget_source(self, source_id: str) -> None:
        await self._collection.delete_many({"source_id": source_id})


class DeliveryStore(Protocol):
    async def taken(self, source_id: str, delivery_id: str) -> bool: ...

    async def take(self, source_id: str, delivery_id: str) -> None: ...


class MongoDeliveryStore:
    """The delivery ids of the deliveries applied, for `keep` (a store's redeliveries come
    within hours: Shopify retries 8 times over 4 hours): a redelivery is answered without
    applying it again. A TTL index drops them after."""

    def __init__(self, collection: Collection, keep: timedelta) -> None:
        self._collection = collection
        self._keep = keep

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._collection,
            [expiring("at", self._keep)],
        )

    async def taken(self, source_id: str, delivery_id: str) -> bool:
        found: Document | None = await self._collection.find_one(
            {"_id": f"{source_id}:{delivery_id}"}, {"_id": 1}
        )
        return found is not None

    async def take(self, source_id: str, delivery_id: str) -> None:
        try:
            await self._collection.insert_one(
                {"_id": f"{source_id}:{delivery_id}", "at": bson_now()}
            )
        except DuplicateKeyError:
            pass  # a redelivery taken side by side: both applied the same, harmlessly
