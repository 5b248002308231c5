"""Pages of a profile's contacts in key or creation order or by a field's value, filtered by
status, key prefix, source or a field's value or value prefix, reading about a page's worth of
rows however large the profile (ADR 9), and their counts."""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, IndexModel

from contact_svc.contact_documents import (
    CREATED_ORDER,
    DELETED,
    PAST_SEPARATOR,
    SAMPLE_RATE,
    SEARCH_TERMS,
    SEPARATOR,
    SORT_KEYS,
    contact_of,
    created_order,
    field_term,
    profile_range,
    sample_term,
    sort_range,
    source_term,
    status_term,
    text_prefix_range,
)
from contact_svc.domain import Contact, ContactOrder, PagePosition, contact_id
from contacts_shared.mongo import Collection, Document, bson_now, find_by_ids
from contacts_shared.outbox import OUTBOX
from contacts_shared.schema import ContactStatus

TERMS_INDEX = "search_terms_1"
CREATED_INDEX = "created_order_1"
SORT_INDEX = "sort_keys_1"
# Key order needs no index of its own: `_id` is `profile_id:key`.
LISTING_INDEXES = [
    IndexModel([(SEARCH_TERMS, ASCENDING)], name=TERMS_INDEX),
    IndexModel([(CREATED_ORDER, ASCENDING)], name=CREATED_INDEX),
    # A wildcard index: each `sort_keys.<field key>` path is indexed on its own, one entry per
    # contact, and a range of it is read as a range.
    IndexModel([(f"{SORT_KEYS}.$**", ASCENDING)], name=SORT_INDEX),
]
# Filters matching under 1 in RARE_FILTER_SHARE of the keys probed are served from their index.
RARE_FILTER_SHARE = 200
FIRST_WINDOW = timedelta(hours=1)
OLDEST_CONTACT = datetime(2000, 1, 1, tzinfo=UTC)
# How long a profile's sample of a field's sort keys is reused (for SAMPLES_KEPT fields at most):
# it only sizes ranges, so a stale one costs a wider or narrower read, never a wrong page.
SAMPLE_SECONDS = 60.0
SAMPLES_KEPT = 256
# Reading a match whole and sorting it here costs about as much as reading this many contacts
# in a range of sort keys (at 1,000,000 contacts: 10,000 matches in 220 ms, 10,000 contacts of
# a range in 37 ms).
FEW_COST = 6
# The projection of the contacts a page returns.
LISTED: Document = {OUTBOX: 0, SEARCH_TERMS: 0, SORT_KEYS: 0}
# The projection of the keys a bulk action's selection reads.
KEYS_ONLY: Document = {"_id": 0, "key": 1}


@dataclass(frozen=True)
class FieldOrder:
    """Contacts by one field's value (`contact_documents.sort_value`), ties by key, both
    reversed if `descending`; those without a value for it come after, in key order."""

    field_key: str
    descending: bool = False


@dataclass(frozen=True)
class SortedPosition:
    """Where a page by a field's value ended: the last contact's sort key, or None once the
    page reached the contacts without a value (then `key`, the last of them)."""

    sort_key: str | None
    key: str


class ContactPages(Protocol):
    async def find_page(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after: PagePosition | SortedPosition | None,
        limit: int,
        order: ContactOrder = ...,
        since: datetime | None = None,
        source: str | None = None,
        value_prefix: tuple[str, str] | None = None,
        by_field: FieldOrder | None = None,
    ) -> list[Contact]: ...

    async def find_keys(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after_key: str | None,
        limit: int,
        source: str | None = None,
        value_prefix: tuple[str, str] | None = None,
    ) -> list[str]: ...

    async def count_matching(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        source: str | None,
        value_prefix: tuple[str, str] | None = None,
        in_sample: bool = False,
    ) -> int: ...


@dataclass(frozen=True)
class _Selection:
    """Filters as a query: `filters`, every condition, tested on each row read; `indexed`, the
    condition that finds the matches from an index without reading the profile (empty: none
    does, only a key prefix's `_id` range narrows the rows), on `index` (None: the server
    intersects the indexes `indexed` names)."""

    filters: Document
    index: str | None
    indexed: Document


@dataclass(frozen=True)
class _Valued:
    """The contacts with a value for the field a page is sorted by: `filters` but for the
    value's, `span` the range of its sort keys read; `filtered` whether a filter was given."""

    filters: Document
    span: Document
    filtered: bool

    def with_value(self, field_key: str) -> Document:
        """`filters` and a value for the field: a sort key whose field was removed from the
        profile is none."""
        return {f"fields.{field_key}": {"$exists": True}, **self.filters}


class MongoContactPages:
    """Pages read from the contacts collection: key order from `_id` ranges, rare filters from
    the terms index, creation order from windows of `created_order`, a field's order from
    ranges of its sort keys sized by the profile's sample."""

    def __init__(self, collection: Collection, *, probe_size: int = 1000) -> None:
        """`probe_size`: keys read to judge whether a filter is rare (see `_in_key_order`)."""
        self._collection = collection
        self._probe_size = probe_size
        # (profile, field key) -> (when read, the sample's sort keys of the field, in order)
        self._samples: OrderedDict[tuple[str, str], tuple[float, list[str]]] = OrderedDict()

    async def find_page(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after: PagePosition | SortedPosition | None,
        limit: int,
        order: ContactOrder = ContactOrder.KEY,
        since: datetime | None = None,
        source: str | None = None,
        value_prefix: tuple[str, str] | None = None,
        by_field: FieldOrder | None = None,
    ) -> list[Contact]:
        """A page of live contacts in `order`, or by a field's value if `by_field` (then
        `after` is a `SortedPosition`), reading about the page's worth of rows however large
        the profile (ADR 9); `since`: no contact is older (the profile's creation); `source`:
        the source of the contact's last change; `value_prefix`: (field key, prefix) of a text
        value (`contact_documents.sortable_text`)."""
        selection = _filters(profile_id, status, field_equals, source, value_prefix)
        if by_field is not None:
            assert after is None or isinstance(after, SortedPosition)
            documents = await self._by_field(
                profile_id, by_field, selection, key_prefix, after, limit
            )
        elif order is ContactOrder.KEY:
            assert after is None or isinstance(after, PagePosition)
            ids = _ids_after(profile_id, key_prefix, after.key if after else None)
            documents = await self._in_key_order(ids, selection, limit)
        else:
            assert after is None or isinstance(after, PagePosition)
            filters = dict(selection.filters)
            if key_prefix:
                filters["_id"] = profile_range(profile_id, key_prefix)
            documents = await self._in_creation_order(
                profile_id, filters, after, order is ContactOrder.NEWEST, limit, since
            )
        return [contact_of(document) for document in documents]

    async def find_keys(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        after_key: str | None,
        limit: int,
        source: str | None = None,
        value_prefix: tuple[str, str] | None = None,
    ) -> list[str]:
        """The keys of a `find_page` in key order, read as it reads them but projected to the
        key alone (a bulk action's selection, ADR 18)."""
        selection = _filters(profile_id, status, field_equals, source, value_prefix)
        ids = _ids_after(profile_id, key_prefix, after_key)
        documents = await self._in_key_order(ids, selection, limit, KEYS_ONLY)
        return [document["key"] for document in documents]

    async def count_matching(
        self,
        profile_id: str,
        *,
        status: ContactStatus | None,
        key_prefix: str | None,
        field_equals: tuple[str, Any] | None,
        source: str | None,
        value_prefix: tuple[str, str] | None = None,
        in_sample: bool = False,
    ) -> int:
        """How many live contacts match, as `find_page` filters them, reading every match:
        from the key prefix's `_id` range, else the filter's index, else the profile's `_id`
        range (a value too long to be a term). `in_sample`: how many of the profile's sample
        match instead (about one in SAMPLE_RATE of them, read from the sample's term)."""
        selection = _filters(profile_id, status, field_equals, source, value_prefix)
        query = dict(selection.filters)
        if key_prefix:
            query["_id"] = profile_range(profile_id, key_prefix)
        if in_sample:
            query[SEARCH_TERMS] = sample_term(profile_id)
            return await self._collection.count_documents(query, hint=TERMS_INDEX)
        index, narrowed = _narrowest(profile_id, selection, key_prefix)
        if index is None:
            return await self._collection.count_documents({**query, **narrowed})
        return await self._collection.count_documents({**query, **narrowed}, hint=index)

    async def _find(
        self,
        query: Document,
        index: str | None,
        limit: int,
        direction: int = ASCENDING,
        projection: Document = LISTED,
    ) -> list[Document]:
        """`index` None: the server's choice (it intersects the indexes the query names)."""
        # Key order but for creation windows: matches from the terms index are sorted by `_id`
        # (sorting by the `search_terms` array would order them by their least term).
        field = CREATED_ORDER if index == CREATED_INDEX else "_id"
        cursor = self._collection.find(query, projection).sort(field, direction)
        return await (cursor.hint(index) if index else cursor).limit(limit).to_list()

    async def _in_key_order(
        self, ids: Document, selection: _Selection, limit: int, projection: Document = LISTED
    ) -> list[Document]:
        """Read in `_id` order until `limit` match, unless the first `probe_size` keys show
        the filter is rare: then its matches come from its index and only they are sorted.
        Either way a page reads from `probe_size` to `RARE_FILTER_SHARE` times the page size of
        rows, however large the profile (a filter without an index reads on in key order)."""
        filters = selection.filters
        query = {**filters, "_id": ids}
        if filters == {DELETED: False}:  # no filter but liveness: nearly every row matches
            return await self._find(query, "_id_", limit, projection=projection)
        edge = await (
            self._collection.find({"_id": ids}, {"_id": 1})
            .sort("_id", ASCENDING)
            .hint("_id_")
            .skip(self._probe_size - 1)
            .limit(1)
            .to_list()
        )
        if not edge:  # fewer keys than the probe are left: one short read
            return await self._find(query, "_id_", limit, projection=projection)
        near = await self._find(
            {**filters, "_id": {**ids, "$lte": edge[0]["_id"]}},
            "_id_",
            limit,
            projection=projection,
        )
        rest = {**filters, "_id": {"$gt": edge[0]["_id"], "$lt": ids["$lt"]}}
        wanted = limit - len(near)
        if wanted == 0:
            return near
        if len(near) * RARE_FILTER_SHARE >= self._probe_size or not selection.indexed:
            return near + await self._find(rest, "_id_", wanted, projection=projection)
        matches = {**rest, **selection.indexed}
        return near + await self._find(matches, selection.index, wanted, projection=projection)

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

    async def _by_field(
        self,
        profile_id: str,
        order: FieldOrder,
        selection: _Selection,
        key_prefix: str | None,
        after: SortedPosition | None,
        limit: int,
    ) -> list[Document]:
        """The contacts with a value for the field in its order (`_valued`), then those
        without one in key order (`_in_key_order`: cheap where many lack a value; where none
        does, the page that reaches them reads the profile's keys to find that out)."""
        path, field = f"{SORT_KEYS}.{order.field_key}", f"fields.{order.field_key}"
        found: list[Document] = []
        if after is None or after.sort_key is not None:
            filters = dict(selection.filters)
            if key_prefix:
                filters["_id"] = profile_range(profile_id, key_prefix)
            filtered = filters != {DELETED: False}
            # The sort keys read: the profile's, or those a prefix of this field's value keeps.
            span = filters.pop(path, sort_range(profile_id))
            at = after.sort_key if after is not None else None
            found, done = await self._valued(
                profile_id,
                order,
                _Valued(filters, span, filtered),
                selection,
                key_prefix,
                at,
                limit,
            )
            if len(found) == limit or not done:
                return found
        if field in selection.filters:  # the filter is on this field's value: all have one
            return found
        # Without a value: its field absent (or null). A contact written before sort keys, with
        # a value but no key, is in neither part until the shape backfill has reached it.
        tail = _Selection({**selection.filters, field: None}, selection.index, selection.indexed)
        last_key = after.key if after is not None and after.sort_key is None else None
        ids = _ids_after(profile_id, key_prefix, last_key)
        return found + await self._in_key_order(ids, tail, limit - len(found))

    async def _valued(
        self,
        profile_id: str,
        order: FieldOrder,
        valued: _Valued,
        selection: _Selection,
        key_prefix: str | None,
        at: str | None,
        limit: int,
    ) -> tuple[list[Document], bool]:
        """The next `limit` contacts with a value after the sort key `at` in the field's order,
        and whether none is left after them: through ranges of the field's sort keys
        (`_ranges`), or, filtered, by reading every match and sorting them here
        (`_few_sorted`), whichever the profile's sample says reads fewer contacts (ranges read
        every contact in them, matching or not: many where the matches are rare or lie far
        ahead)."""
        fences = await self._fences(profile_id, order.field_key)
        fences = [f for f in fences if _in_span(f, valued.span)]
        if not valued.filtered:
            return await self._ranges(order, valued, fences, _marks_for(limit), at, limit)
        path, field = f"{SORT_KEYS}.{order.field_key}", f"fields.{order.field_key}"
        sampled = await (
            self._collection.find(
                {**valued.filters, SEARCH_TERMS: sample_term(profile_id)}, {path: 1, field: 1}
            )
            .hint(TERMS_INDEX)
            .to_list()
        )
        marks = sorted(
            s[SORT_KEYS][order.field_key]
            for s in sampled
            if _has_value(s, order.field_key, valued.span)
        )
        # In the sample's units: the values up to the marks that should hold a page's matches,
        # against the matches (or the field's values, where the filter's index holds more).
        index, indexed = _narrowest(profile_id, selection, key_prefix)
        if len(sampled) > len(fences) or indexed == {"_id": profile_range(profile_id)}:
            index, indexed = SORT_INDEX, {path: valued.span}
        to_marks = _ahead_of(fences, marks, at, limit, order.descending)
        if min(len(sampled), len(fences)) * FEW_COST >= to_marks:
            # Matches spread as the sample's are: this many values hold a page of them; unless
            # the sampled matches lie much further (the filter follows the order), then up to
            # them at once rather than through many ranges.
            spread = math.ceil(2 * limit * len(fences) / (SAMPLE_RATE * max(len(marks), 1)))
            first = spread if to_marks <= 4 * spread else to_marks
            return await self._ranges(order, valued, fences, max(1, first), at, limit)
        query = {**valued.with_value(order.field_key), **indexed}
        if index == SORT_INDEX:
            query = _by_one_path(query, next(iter(indexed)))
        return await self._few_sorted(order, query, index, valued.span, at, limit)

    async def _few_sorted(
        self,
        order: FieldOrder,
        query: Document,
        index: str | None,
        span: Document,
        at: str | None,
        limit: int,
    ) -> tuple[list[Document], bool]:
        """Every match's sort key, sorted here (those without one in `span` are not values:
        the sort keys are tested here rather than read through a second index); the page's
        contacts then by `_id`."""
        key, path = order.field_key, f"{SORT_KEYS}.{order.field_key}"
        cursor = self._collection.find(query, {path: 1, f"fields.{key}": 1})
        rows = await (cursor.hint(index) if index else cursor).to_list()
        keyed = sorted(
            ((r[SORT_KEYS][key], r["_id"]) for r in rows if _has_value(r, key, span)),
            reverse=order.descending,
        )
        if at is not None:
            keyed = [k for k in keyed if (k[0] < at if order.descending else k[0] > at)]
        ids = [i for _, i in keyed[:limit]]
        # A contact deleted since is left out: the page, short, is then not the values' last.
        by_id = {d["_id"]: d for d in await find_by_ids(self._collection, ids, LISTED)}
        return [by_id[i] for i in ids if i in by_id], len(keyed) <= limit

    async def _ranges(
        self,
        order: FieldOrder,
        valued: _Valued,
        fences: list[str],
        first: int,
        at: str | None,
        limit: int,
    ) -> tuple[list[Document], bool]:
        """Ranges of the field's sort keys from `at` on, each read whole and sorted by the
        server (DocumentDB sorts what a range matches), each ending at one of the sample's
        values (`fences`, about one value in SAMPLE_RATE): the first spans `first` of them,
        each next one four times as many."""
        path = f"{SORT_KEYS}.{order.field_key}"
        span = valued.span
        low = {k: v for k, v in span.items() if k in ("$gt", "$gte")}
        ahead = _ahead(fences, at, order.descending)
        spans = first
        direction = DESCENDING if order.descending else ASCENDING
        found: list[Document] = []
        while True:
            mark = ahead[spans - 1] if len(ahead) >= spans else None
            ahead = ahead[spans:]
            if order.descending:
                window = {"$lt": at} if at else {"$lt": span["$lt"]}
                window.update({"$gte": mark} if mark else low)
            else:
                window = {"$gt": at} if at else dict(low)
                window.update({"$lte": mark} if mark else {"$lt": span["$lt"]})
            query = _by_one_path({**valued.with_value(order.field_key), path: window}, path)
            cursor = self._collection.find(query, LISTED)
            found += await (
                cursor.sort(path, direction).hint(SORT_INDEX).limit(limit - len(found)).to_list()
            )
            if len(found) == limit or mark is None:
                return found, mark is None and len(found) < limit
            at, spans = mark, spans * 4

    async def _fences(self, profile_id: str, field_key: str) -> list[str]:
        """The sort keys of the field's values in the profile's sample, in order: about one in
        SAMPLE_RATE of them. Kept SAMPLE_SECONDS (they size reads, they never decide a page)."""
        now = time.monotonic()
        kept = self._samples.get((profile_id, field_key))
        if kept is not None and now - kept[0] < SAMPLE_SECONDS:
            return kept[1]
        path = f"{SORT_KEYS}.{field_key}"
        query = {
            DELETED: False,
            SEARCH_TERMS: sample_term(profile_id),
            path: sort_range(profile_id),
            f"fields.{field_key}": {"$exists": True},
        }
        rows = await self._collection.find(query, {path: 1}).hint(TERMS_INDEX).to_list()
        fences = sorted(row[SORT_KEYS][field_key] for row in rows)
        self._samples[(profile_id, field_key)] = (now, fences)
        self._samples.move_to_end((profile_id, field_key))
        while len(self._samples) > SAMPLES_KEPT:
            self._samples.popitem(last=False)
        return fences


def _ids_after(profile_id: str, key_prefix: str | None, after_key: str | None) -> Document:
    """The `_id` range of the profile's contacts with the key prefix after `after_key`."""
    ids = profile_range(profile_id, key_prefix or "")
    if after_key is not None and contact_id(profile_id, after_key) >= ids["$gte"]:
        ids = {"$gt": contact_id(profile_id, after_key), "$lt": ids["$lt"]}
    return ids


def _marks_for(limit: int) -> int:
    """The sampled matches a range should reach to hold about twice `limit` matches."""
    return math.ceil(2 * limit / SAMPLE_RATE)


def _ahead(keys: list[str], at: str | None, descending: bool) -> list[str]:
    """The sorted sort keys `keys` past `at` in a page's direction, nearest first."""
    if descending:
        return keys[: bisect.bisect_left(keys, at)][::-1] if at else keys[::-1]
    return keys[bisect.bisect_right(keys, at) :] if at else list(keys)


def _ahead_of(
    fences: list[str], marks: list[str], at: str | None, limit: int, descending: bool
) -> int:
    """How many of the sample's values (`fences`) lie ahead up to the sampled match (`marks`)
    that should give a page its matches (all ahead if too few marks are)."""
    ahead = _ahead(fences, at, descending)
    wanted = _ahead(marks, at, descending)[_marks_for(limit) - 1 :]
    if not wanted:
        return len(ahead)
    return sum(1 for f in ahead if (f >= wanted[0] if descending else f <= wanted[0]))


def _by_one_path(query: Document, path: str) -> Document:
    """`query` with its conditions on other sort keys than `path` as expressions: the sort keys'
    index would read their ranges too (one index holds every path), a whole value prefix's
    for each range of `path`; as expressions they are tested on the rows `path` finds."""
    others = [k for k in query if k.startswith(SORT_KEYS + ".") and k != path]
    if not others:
        return query
    tests = [{operator: [f"${k}", bound]} for k in others for operator, bound in query[k].items()]
    kept = {k: v for k, v in query.items() if k not in others}
    return {**kept, "$expr": {"$and": tests}}


def _in_span(sort_key: str, span: Document) -> bool:
    """Whether a sort key lies in a range of them (`sort_range`, `text_prefix_range`)."""
    below: str = span["$lt"]
    if "$gt" in span:
        above: str = span["$gt"]
        return above < sort_key < below
    least: str = span["$gte"]
    return least <= sort_key < below


def _has_value(document: Document, field_key: str, span: Document) -> bool:
    """Whether a document read with its field's value and sort key has both, the key in
    `span`."""
    sort_key = document.get(SORT_KEYS, {}).get(field_key)
    in_fields = field_key in document.get("fields", {})
    return sort_key is not None and in_fields and _in_span(sort_key, span)


def _narrowest(
    profile_id: str, selection: _Selection, key_prefix: str | None
) -> tuple[str | None, Document]:
    """The index (None: the server's choice) and condition that read the fewest rows to find
    every match: the key prefix's `_id` range, else the filter's index, else the profile's
    `_id` range."""
    if key_prefix:
        return "_id_", {"_id": profile_range(profile_id, key_prefix)}
    if selection.indexed:
        return selection.index, selection.indexed
    return "_id_", {"_id": profile_range(profile_id)}


def _filters(
    profile_id: str,
    status: ContactStatus | None,
    field_equals: tuple[str, Any] | None,
    source: str | None,
    value_prefix: tuple[str, str] | None = None,
) -> _Selection:
    """The query of live contacts with these values, and the index condition that finds them:
    the exact terms (`$all`), the value prefix's range of sort keys, or, with both, both (no
    hint: the server intersects the two indexes' matches)."""
    filters: Document = {DELETED: False}
    terms: list[str] = []
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
    indexed: Document = {SEARCH_TERMS: {"$all": terms}} if terms else {}
    index = TERMS_INDEX if terms else None
    if value_prefix is not None:
        field_key, prefix = value_prefix
        starts = {f"{SORT_KEYS}.{field_key}": text_prefix_range(profile_id, prefix)}
        # A sort key whose field was removed from the profile is no value.
        filters.update(starts, **{f"fields.{field_key}": {"$exists": True}})
        indexed.update(starts)
        index = None if terms else SORT_INDEX
    return _Selection(filters, index, indexed)
