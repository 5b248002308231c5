"""Previews of rules before they are saved, at a bounded cost however large the base profile:
every contact of a small profile checked (exact), a large one estimated from whole sample
buckets of its contacts (ADR 11, addendum of 2026-12). The arithmetic is pure; `preview_rules`
reads the projection."""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from operator import itemgetter

from contacts_shared.mongo import Document
from contacts_shared.rules import conditions
from contacts_shared.sampling import SAMPLE_BUCKETS, two_significant
from contacts_shared.values import name_key
from segment_svc.evaluate import Segment, field_keys
from segment_svc.membership import ContactState, state_of, view_of
from segment_svc.store import ContactProjection

# Matching contacts a preview shows.
PREVIEW_SAMPLE = 20
# The bucket whose size tells how many buckets to read: never among those read (they are
# read from 0 up, and all of them only when that holds every contact anyway), so the choice
# of how many is independent of what they hold and the estimate stays unbiased.
SIZING_BUCKET = SAMPLE_BUCKETS - 1


def read_fields(segment: Segment) -> list[str]:
    """What a preview reads of each contact: what rules read (`membership.view_of`), of its
    values only those the rules name, and its key (the sample's order)."""
    keys = field_keys(segment.base_fields)
    named = sorted({keys[n] for c in conditions(segment.rules) if (n := name_key(c.field)) in keys})
    return ["key", "deleted", "status", "created_at", "updated_at", *(f"fields.{k}" for k in named)]


@dataclass
class Tally:
    """Live contacts checked against rules, those that matched, and the matching documents."""

    checked: int = 0
    count: int = 0
    # The documents as read, not their views: thousands of objects more kept alive cost the
    # garbage collector more than evaluating them (measured: a third more time at half matching).
    matches: list[Document] = field(default_factory=list)

    def add(self, segment: Segment, documents: Iterable[Document], today: date) -> None:
        """Check the projected contacts (`read_fields` of them; deleted ones are skipped)."""
        for document in documents:
            view = view_of(document)
            if view is None:
                continue
            self.checked += 1
            if segment.admits(view, today):
                self.count += 1
                self.matches.append(document)

    def first_matches(self) -> list[str]:
        """The ids of up to PREVIEW_SAMPLE matches, the first in key order."""
        first = heapq.nsmallest(PREVIEW_SAMPLE, self.matches, key=itemgetter("key"))
        return [document["_id"] for document in first]


@dataclass(frozen=True)
class Preview:
    """What rules admit of a profile: `count` of `contacts`, exactly or estimated, and a sample
    of the matches. `complete`: false when contacts projected before sample buckets were kept
    were seen, which no bucket holds yet, so an estimate stands for the others only."""

    tally: Tally
    exact: bool
    count: int
    contacts: int
    complete: bool = True
    sample: tuple[ContactState, ...] = ()


def buckets_for(budget: int, bucket_size: int) -> int:
    """How many whole buckets to read to check about `budget` contacts, one holding about
    `bucket_size` (at least one bucket, at most all of them)."""
    return max(1, min(SAMPLE_BUCKETS, math.ceil(budget / max(bucket_size, 1))))


def estimated(tally: Tally, buckets: int, *, complete: bool) -> Preview:
    """The profile's matches and contacts that `tally` of `buckets` whole buckets stands for:
    each contact lies in the buckets read with probability buckets / SAMPLE_BUCKETS, so the
    scaled counts are unbiased; to two significant digits, the error being about
    1 / sqrt(matches checked) (10% at 100 matches checked)."""
    scale = SAMPLE_BUCKETS / buckets
    return Preview(
        tally,
        exact=False,
        count=two_significant(round(tally.count * scale)),
        contacts=two_significant(round(tally.checked * scale)),
        complete=complete,
    )


async def preview_rules(
    segment: Segment, *, projection: ContactProjection, budget: int, today: date
) -> Preview:
    """How many contacts of the segment's base profile its rules admit, and some of them:
    exact when the profile holds at most `budget` contacts (deleted ones included), else
    estimated from about `budget` contacts in whole sample buckets."""
    profile_id = segment.base_profile_id
    fields = read_fields(segment)
    tally = Tally()
    fence = await projection.nth_id(profile_id, budget)
    if fence is None:  # at most `budget`: one read
        tally.add(segment, await projection.page(profile_id, None, budget, fields=fields), today)
        found = Preview(tally, exact=True, count=tally.count, contacts=tally.checked)
    else:
        # Contacts without a bucket are looked for among the first `budget` (a range of the
        # `_id` index, not the whole profile): no bucket holds them, so the estimate leaves
        # such contacts out, and says so.
        buckets = buckets_for(budget, await projection.bucket_size(profile_id, SIZING_BUCKET))
        unbucketed, documents = await asyncio.gather(
            projection.count_unbucketed(profile_id, fence),
            projection.in_buckets(profile_id, range(buckets), fields),
        )
        tally.add(segment, documents, today)
        found = estimated(tally, buckets, complete=unbucketed == 0)
    ids = tally.first_matches()
    held = await projection.load(ids)
    sample = (state_of(held[i]) for i in ids if i in held)
    return replace(found, sample=tuple(s for s in sample if s.view is not None))
