"""Synthetic contacts written straight into a contact-svc database in its document format, with
the statistics shares their events would have produced: a large profile in minutes instead of
the hours the API would take. Used by contacts_at_scale.py and profile_list.py."""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from contact_svc.contact_documents import contact_document
from contact_svc.domain import Contact
from contact_svc.stats import ADDED_WINDOW_DAYS, PartitionCounts
from contact_svc.stats_repository import MongoStatsStore
from contacts_shared.schema import ContactStatus

CITIES = ["Santiago", "Lima", "Quito", "Bogotá", "Montevideo", "Asunción", "La Paz", "Caracas"]
# Roughly what a marketing list looks like.
STATUS_MIX = (
    [ContactStatus.ACTIVE] * 90
    + [ContactStatus.UNSUBSCRIBED] * 5
    + [ContactStatus.BOUNCED] * 3
    + [ContactStatus.COMPLAINED, ContactStatus.BLOCKED]
)
RARE_CITY = "Cusco"  # 1 contact in 100
PARTITIONS = 6


def synthetic(profile: dict[str, Any], index: int, now: datetime) -> Contact:
    created = now - timedelta(minutes=index % (60 * 24 * 60))  # spread over 60 days
    key = f"c{index:07d}@bench.example"
    city = RARE_CITY if index % 100 == 7 else CITIES[index % len(CITIES)]
    return Contact(
        account_id=profile["account_id"],
        profile_id=profile["id"],
        key=key,
        fields={"email": key, "nombre": f"N{index}", "ciudad": city},
        status=STATUS_MIX[index % len(STATUS_MIX)],
        status_source="bench",
        status_changed_at=created,
        source="bench",
        created_at=created,
        updated_at=created,
    )


async def load(
    database: AsyncDatabase[dict[str, Any]],
    profile: dict[str, Any],
    count: int,
    *,
    partitions: int = PARTITIONS,
) -> None:
    """`count` synthetic contacts of `profile` (its `id` and `account_id`, with fields Nombre
    and Ciudad) into `database`'s `contacts`, and the profile's statistics shares (one per
    partition of `contacts.events`, `partitions` of them) counting them, as contact-svc's
    statistics consumer would have written them."""
    contacts = database["contacts"]
    shares = [PartitionCounts(profile["id"], p, offset=0) for p in range(partitions)]
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    for first in range(0, count, 5000):
        batch = [synthetic(profile, i, now) for i in range(first, min(count, first + 5000))]
        await contacts.insert_many([contact_document(c) for c in batch], ordered=False)
        for contact in batch:  # the counts ContactCreated events would have folded in
            share = shares[zlib.crc32(contact.id.encode()) % partitions]
            status = contact.status.value
            share.by_status[status] = share.by_status.get(status, 0) + 1
            day = contact.created_at.date().isoformat()
            if contact.created_at > now - timedelta(days=ADDED_WINDOW_DAYS):
                share.added_by_day[day] = share.added_by_day.get(day, 0) + 1
            share.last_change_at = now
    stats = MongoStatsStore(
        database["profile_stats"], database["stats_marks"], partitions=partitions
    )
    for share in shares:
        await stats.store(share, expected_offset=-1)
    print(f"loaded {count} contacts in {time.perf_counter() - started:.1f} s")
