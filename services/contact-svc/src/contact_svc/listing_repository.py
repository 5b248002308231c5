"""Pages of a profile's contacts in key or creation order, filtered by status, key prefix or
a field's value, reading about a page's worth of rows however large the profile (ADR 9)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, IndexModel

from contact_svc.contact_documents import (
    CREATED_ORDER,
    DELETED,
    PAST_SEPARATOR,
    SEARCH_TERMS,
    SEPARATOR,
    contact_of,
    created_order,
    field_term,
    folded_term_prefix,
    profile_range,
    source_term,
    status_term,
)
from contact_svc.domain import Contact, ContactOrder, PagePosition, contact_id
from contacts_shared.mongo import Collection, Document, bson_now
from contacts_shared.outbox import OUTBOX
from contacts_shared.schema import ContactStatus

TERMS_INDEX = "search_terms_1"
CREATED_INDEX = "created_order_1"
# Key order needs no index of its own: `_id` is `profile_id:key`.
LISTING_INDEXES = [
    IndexModel([(SEARCH_TERMS, ASCENDING)], name=TERMS_INDEX),
    IndexModel([(CREATED_ORDER, ASCENDING)], name=CREATED_INDEX),
]
# Filters matching under 1 in RARE_FILTER_SHARE of the keys probed are served from the terms.
RARE_FILTER_SHARE = 200
FIRST_WINDOW = timedelta(hours=1)
OLDEST_CONTACT = datetime(2000, 1, 1, tzinfo=UTC)


class ContactPages(Protocol):
    async def find_page(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after: PagePosition | None,
        limit: int,
        order: ContactOrder = ...,
        since: datetime | None = None,
        source: str | None = None,
        value_prefix: tuple[str, str] | None = None,
    ) -> list[Contact]: ...

    async def count_matching(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        source: str | None,
        value_prefix: tuple[str, str] | None = None,
    ) -> int: ...


class MongoContactPages:
    """Pages read from the contacts collection: key order from `_id` ranges, rare filters from
    the terms index, creation order from windows of `created_order`."""

    def __init__(self, collection: Collection, *, probe_size: int = 1000) -> None:
        """`probe_size`: keys read to judge whether a filter is rare (see `_in_key_order`)."""
        self._collection = collection
        self._probe_size = probe_size

    async def find_page(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after: PagePosition | None,
        limit: int,
        order: ContactOrder = ContactOrder.KEY,
        since: datetime | None = None,
        source: str | None = None,
        value_prefix: tuple[str, str] | None = None,
    ) -> list[Contact]:
        """A page of live contacts in `order`, reading about the page's worth of rows however
        large the profile (ADR 9); `since`: no contact is older (the profile's creation);
        `source`: the source of the contact's last change; `value_prefix`: (field key, folded
        prefix) of a string value (`folded`)."""
        filters, terms = _filters(profile_id, status, field_equals, source, value_prefix)
        if order is ContactOrder.KEY:
            ids = profile_range(profile_id, key_prefix or "")
            if after is not None and contact_id(profile_id, after.key) >= ids["$gte"]:
                ids = {"$gt": contact_id(profile_id, after.key), "$lt": ids["$lt"]}
            documents = await self._in_key_order(ids, filters, terms, limit)
        else:
            if key_prefix:
                filters["_id"] = profile_range(profile_id, key_prefix)
            documents = await self._in_creation_order(
                profile_id, filters, after, order is ContactOrder.NEWEST, limit, since
            )
        return [contact_of(document) for document in documents]

    async def count_matching(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        source: str | None,
        value_prefix: tuple[str, str] | None = None,
    ) -> int:
        """How many live contacts match, as `find_page` filters them: from the key prefix's
        `_id` range, else from the terms index (every match is read: a count never stops
        early), else from the profile's `_id` range (a value too long to be a term)."""
        filters, terms = _filters(profile_id, status, field_equals, source, value_prefix)
        if key_prefix or not terms:
            query = {**filters, "_id": profile_range(profile_id, key_prefix or "")}
            return await self._collection.count_documents(query, hint="_id_")
        query = {**filters, SEARCH_TERMS: terms}
        return await self._collection.count_documents(query, hint=TERMS_INDEX)

    async def _find(
        self, query: Document, index: str, limit: int, direction: int = ASCENDING
    ) -> list[Document]:
        # Key order but for creation windows: matches from the terms index are sorted by `_id`
        # (sorting by the `search_terms` array would order them by their least term).
        field = CREATED_ORDER if index == CREATED_INDEX else "_id"
        cursor = self._collection.find(query, {OUTBOX: 0, SEARCH_TERMS: 0})
        return await cursor.sort(field, direction).hint(index).limit(limit).to_list()

    async def _in_key_order(
        self, ids: Document, filters: Document, terms: Document, limit: int
    ) -> list[Document]:
        """Read in `_id` order until `limit` match, unless the first `probe_size` keys show
        the filter is rare: then its matches come from the terms index and only they are
        sorted. Either way a page reads from `probe_size` to `RARE_FILTER_SHARE` times the
        page size of rows, however large the profile."""
        query = {**filters, "_id": ids}
        if filters == {DELETED: False}:  # no filter but liveness: nearly every row matches
            return await self._find(query, "_id_", limit)
        edge = await (
            self._collection.find({"_id": ids}, {"_id": 1})
            .sort("_id", ASCENDING)
            .hint("_id_")
            .skip(self._probe_size - 1)
            .limit(1)
            .to_list()
        )
        if not edge:  # fewer keys than the probe are left: one short read
            return await self._find(query, "_id_", limit)
        near = await self._find({**filters, "_id": {**ids, "$lte": edge[0]["_id"]}}, "_id_", limit)
        rest = {**filters, "_id": {"$gt": edge[0]["_id"], "$lt": ids["$lt"]}}
        wanted = limit - len(near)
        if wanted == 0:
            return near
        if len(near) * RARE_FILTER_SHARE >= self._probe_size or not terms:
            return near + await self._find(rest, "_id_", wanted)
        return near + await self._find({**rest, SEARCH_TERMS: terms}, TERMS_INDEX, wanted)

    async def _in_creation_order(
        self,
        profile_id: str,
        filters: Document,
        after: PagePosition | None,
        newest_first: bool,
        limit: int,
        since: datetime | None,
    ) -> list[Document]:
        """Windows of creation time from the cursor on, each read whole and sorted (DocumentDB
        sorts what a range matches), four times wider each time one comes back short: a page
        reads about an hour's additions, or the few windows it takes to find `limit`."""
        first, last = since or OLDEST_CONTACT, bson_now() + timedelta(minutes=1)
        # Bounds are `created_order` prefixes, which no contact's string equals.
        edge, at = None, last if newest_first else first
        if after is not None and after.created_at is not None:
            edge, at = created_order(profile_id, after.created_at, after.key), after.created_at
        width = FIRST_WINDOW
        found: list[Document] = []
        while True:
            at = at - width if newest_first else at + width
            done = at <= first if newest_first else at >= last
            bound = profile_id + (SEPARATOR if newest_first else PAST_SEPARATOR)
            if not done:
                bound = created_order(profile_id, at)
            if newest_first:
                window = {"$gt": bound, "$lt": edge or profile_id + PAST_SEPARATOR}
            else:
                window = {"$gt": edge or profile_id + SEPARATOR, "$lt": bound}
            direction = DESCENDING if newest_first else ASCENDING
            query = {**filters, CREATED_ORDER: window}
            found += await self._find(query, CREATED_INDEX, limit - len(found), direction)
            if done or len(found) == limit:
                return found
            edge, width = bound, width * 4


def _filters(
    profile_id: str,
    status: ContactStatus | None,
    field_equals: tuple[str, Any] | None,
    source: str | None,
    value_prefix: tuple[str, str] | None = None,
) -> tuple[Document, Document]:
    """The query of live contacts with these values, and the condition on `search_terms` that
    finds them from its index (empty: no term serves these filters)."""
    filters: Document = {DELETED: False}
    terms: list[str] = []
    indexed: Document = {}
    if status is not None:
        filters["status"] = status.value
        terms.append(status_term(profile_id, status))
    if source is not None:
        filters["source"] = source
        terms.append(source_term(profile_id, source))
    if field_equals is not None:
        filters[f"fields.{field_equals[0]}"] = field_equals[1]
        if term := field_term(profile_id, *field_equals):
            terms.append(term)
    if value_prefix is not None:
        # An anchored regular expression, tested term by term (a bare `$gte`/`$lt` range on an
        # array matches a document with one term above the start and another below the end);
        # the index serves it, alone or with `$all`, on DocumentDB (5 times faster there than
        # the same range as `$elemMatch`) and MongoDB (a prefix's bounds).
        starts = {"$regex": "^" + re.escape(folded_term_prefix(profile_id, *value_prefix))}
        filters[SEARCH_TERMS] = starts
        indexed.update(starts)
    if terms:
        indexed["$all"] = terms
    return filters, indexed
