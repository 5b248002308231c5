"""Contacts stored in an older document shape brought up to the current one in the background
(ADR 9, addendum 3): their derived fields (terms, sort keys, creation order) computed again by
the one function every write uses, `contact_documents.derived_fields`, and written only if the
contact is unchanged since it was read. The walk, its lease and its checkpoint are
`contacts_shared.backfill`'s."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from pymongo import ASCENDING, IndexModel, UpdateOne

from contact_svc.contact_documents import (
    CREATED_ORDER,
    CURRENT_SHAPE,
    SEARCH_TERMS,
    SHAPE,
    SORT_KEYS,
    contact_of,
    derived_fields,
    older_shape,
    shape_of,
)
from contacts_shared.backfill import LeasedBackfill, Tally
from contacts_shared.journal import JOURNAL
from contacts_shared.mongo import Document
from contacts_shared.outbox import OUTBOX

log = logging.getLogger(__name__)

# Which contacts have an older shape, read from this index: one cheap query at start-up once
# none has (DocumentDB serves `$in` with null, missing included, from it).
SHAPE_INDEX = IndexModel([(SHAPE, ASCENDING)], name="shape_1")
# The one checkpoint document, in its own small collection.
CHECKPOINT = "contacts"
# What a contact is read with to compute its derived fields: not the derived fields themselves.
READ: Document = {OUTBOX: 0, JOURNAL: 0, SEARCH_TERMS: 0, SORT_KEYS: 0, CREATED_ORDER: 0}
COUNTS = ("read", "reshaped", "raced", "unreadable")


def reshaping(document: Document) -> tuple[Document, Document] | None:
    """The conditions and update that bring a contact's document to the current shape: only
    its derived fields, only if its version and older shape are as read (a concurrent write of
    the contact wins: it wrote the current shape itself). None: the document has the current
    shape, or a newer one a later version wrote."""
    if shape_of(document) >= CURRENT_SHAPE:
        return None
    conditions = {"version": document["version"], **older_shape()}
    return conditions, {"$set": derived_fields(contact_of(document))}


@dataclass
class BackfillPass(Tally):
    """What one pass over the contacts did so far: documents read, brought to the current
    shape, changed since read (left to their writer) and unreadable as contacts (left as they
    are, logged)."""

    read: int = 0
    reshaped: int = 0
    raced: int = 0
    unreadable: int = 0
    done: bool = False


@dataclass
class ShapeBackfill(LeasedBackfill[BackfillPass]):
    """Rewrites the contacts of an older shape, a round at a time (`LeasedBackfill`). Started
    with the service; returns once no contact of an older shape is left (one indexed query)
    or its pass is done. A pass is the current shape's: a new shape begins a new one."""

    checkpoint_id: ClassVar[str] = CHECKPOINT
    name: ClassVar[str] = "shape backfill"
    version: ClassVar[int] = CURRENT_SHAPE
    read_fields: ClassVar[Document] = READ
    counted: ClassVar[tuple[str, ...]] = COUNTS

    async def needed(self) -> bool:
        """Whether any contact has an older shape than the current one."""
        found = await self.documents.find_one(
            older_shape(), {"_id": 1}, hint=SHAPE_INDEX.document["name"]
        )
        return found is not None

    async def first_id(self, checkpoint: Document) -> str:
        """From the first contact if no pass was made for the current shape, else (a later
        write of an older shape, by a process of an earlier version) from the first contact
        still of an older shape."""
        if checkpoint.get("version") != CURRENT_SHAPE:
            return ""
        least = await (
            self.documents.find(older_shape(), {"_id": 1}).sort("_id", ASCENDING).limit(1)
        ).to_list()
        return str(least[0]["_id"]) if least else ""

    async def rewrite(self, rows: list[Document]) -> BackfillPass:
        return await self.reshape(rows)

    async def reshape(self, rows: list[Document]) -> BackfillPass:
        """Bring these documents, read earlier, to the current shape where they are unchanged."""
        updates: list[UpdateOne] = []
        unreadable = 0
        for row in rows:
            try:
                change = reshaping(row)
            except (KeyError, TypeError, ValueError) as exc:
                # Not a contact this version can read: left as it is, said once per pass.
                unreadable += 1
                log.warning(
                    "contact left in its older shape",
                    extra={"contact_id": row["_id"], "error": repr(exc)},
                )
                continue
            if change is not None:
                updates.append(UpdateOne({"_id": row["_id"], **change[0]}, change[1]))
        matched = 0
        if updates:
            matched = (await self.documents.bulk_write(updates, ordered=False)).matched_count
        return BackfillPass(len(rows), matched, len(updates) - matched, unreadable)
