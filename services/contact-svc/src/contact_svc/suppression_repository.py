"""The account-wide suppression list (ADR 15): the port and its MongoDB implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pymongo import UpdateOne

from contact_svc.domain import Suppression, SuppressionLifted
from contacts_shared.mongo import (
    Collection,
    Document,
    bulk_write_tolerating_duplicates,
    find_by_ids,
)
from contacts_shared.schema import ContactStatus


class SuppressionStore(Protocol):
    async def get_many(self, account_id: str, keys: Sequence[str]) -> dict[str, Suppression]: ...

    async def apply(self, changes: Sequence[Suppression | SuppressionLifted]) -> None: ...


class MongoSuppressionStore:
    """One document per (account, email or phone): the newest suppressing status or lift
    wins, so a change applied again, or late, leaves a newer one as it is."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def get_many(self, account_id: str, keys: Sequence[str]) -> dict[str, Suppression]:
        """The suppressions in force for these keys, by key."""
        ids = [f"{account_id}:{key}" for key in keys]
        suppressions = (
            Suppression(
                account_id=account_id,
                key=document["_id"].removeprefix(f"{account_id}:"),
                status=ContactStatus(document["status"]),
                profile_id=document["profile_id"],
                at=document["at"],
            )
            for document in await find_by_ids(self._collection, ids)
            if not document.get("lifted")
        )
        return {suppression.key: suppression for suppression in suppressions}

    async def apply(self, changes: Sequence[Suppression | SuppressionLifted]) -> None:
        """Record suppressions and lifts in one bulk write, each unless a newer one is there
        (its conditional upsert then meets the document's `_id`: a duplicate, not an error)."""
        newest: dict[str, Suppression | SuppressionLifted] = {}
        for change in changes:
            _id = f"{change.account_id}:{change.key}"
            if _id not in newest or newest[_id].at <= change.at:
                newest[_id] = change
        await bulk_write_tolerating_duplicates(
            self._collection,
            [
                UpdateOne(
                    {"_id": _id, "at": {"$lte": change.at}},
                    {"$set": {"at": change.at, **_suppression_fields(change)}},
                    upsert=True,
                )
                for _id, change in newest.items()
            ],
        )


def _suppression_fields(change: Suppression | SuppressionLifted) -> Document:
    if isinstance(change, SuppressionLifted):
        return {"lifted": True}
    return {"status": change.status.value, "profile_id": change.profile_id, "lifted": False}
