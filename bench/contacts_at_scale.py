"""contact-svc reads on a large profile, against the running local stack (`make run`).

Creates a profile through profile-svc, and runs a contact-svc of its own in this process, on a
database of its own (`contact_svc_scale_<run>`, dropped at the end, so the dev database stays
small), with topics and consumer groups of its own. Loads `--contacts-count` contacts
(1,000,000 by default) straight into that database in contact-svc's document format, with the
statistics shares their events would have produced; then times, through contact-svc's HTTP API
(in-process ASGI, no network), a listing page by key, a search by key prefix, a status filter,
a field-equals search, a field-prefix search (case- and accent-insensitive), the filtered counts
and the statistics, and the same queries sent straight to MongoDB in the same process (the
baseline of the ratio: the repository's reads without HTTP, or for the field prefix one `find`
or `count` on the terms index).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from figures import p50_p99
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contact_svc.app import create_app
from contact_svc.contact_documents import SEARCH_TERMS, contact_document, folded_term_prefix
from contact_svc.domain import Contact, ContactOrder, PagePosition, page_cursor
from contact_svc.listing_repository import TERMS_INDEX
from contact_svc.settings import ContactSettings
from contact_svc.stats import ADDED_WINDOW_DAYS, PartitionCounts
from contact_svc.stats_repository import MongoStatsStore
from contacts_shared.mongo import Document
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
NO_FILTER: dict[str, Any] = {
    "status": None,
    "key_prefix": None,
    "field_equals": None,
    "after": None,
}


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
    database: AsyncDatabase[dict[str, Any]], profile: dict[str, Any], count: int
) -> None:
    contacts = database["contacts"]
    shares = [PartitionCounts(profile["id"], p, offset=0) for p in range(PARTITIONS)]
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    for first in range(0, count, 5000):
        batch = [synthetic(profile, i, now) for i in range(first, min(count, first + 5000))]
        await contacts.insert_many([contact_document(c) for c in batch], ordered=False)
        for contact in batch:  # the counts ContactCreated events would have folded in
            share = shares[zlib.crc32(contact.id.encode()) % PARTITIONS]
            status = contact.status.value
            share.by_status[status] = share.by_status.get(status, 0) + 1
            day = contact.created_at.date().isoformat()
            if contact.created_at > now - timedelta(days=ADDED_WINDOW_DAYS):
                share.added_by_day[day] = share.added_by_day.get(day, 0) + 1
            share.last_change_at = now
    stats = MongoStatsStore(
        database["profile_stats"], database["stats_marks"], partitions=PARTITIONS
    )
    for share in shares:
        await stats.store(share, expected_offset=-1)
    print(f"loaded {count} contacts in {time.perf_counter() - started:.1f} s")


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    latencies = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def main(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    settings = ContactSettings(
        mongodb_database=f"contact_svc_scale_{run}",
        topic_contacts_events=f"contacts.events.scale.{run}",
        topic_contacts_commands=f"contacts.commands.scale.{run}",
        profile_events_group=f"scale-{run}-schemas",
        contact_commands_group=f"scale-{run}-commands",
        contact_events_group=f"scale-{run}-events",
        api_keys={args.api_key: args.account},
        # Nothing here writes through the API: the relay's periodic scan for leftover events
        # would only add its own queries to the ones being timed.
        outbox_scan_seconds=24 * 3600,
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    database = client[settings.mongodb_database]
    auth = {"Authorization": f"Bearer {args.api_key}"}
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(headers=auth, timeout=600) as profiles,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://contact-svc",
            headers=auth,
            timeout=600,
        ) as contacts_api,
    ):
        profile = (
            await profiles.post(
                f"{args.profiles}/v1/profiles",
                json={"name": f"scale {run}", "fields": [{"name": "Nombre"}, {"name": "Ciudad"}]},
            )
        ).json()
        base = f"/v1/profiles/{profile['id']}"
        while (await contacts_api.get(f"{base}/contacts")).status_code != 200:
            await asyncio.sleep(0.2)  # until this contact-svc has the profile's schema
        schema = await database["profile_schemas"].find_one({"_id": profile["id"]})
        assert schema is not None
        profile["account_id"] = schema["account_id"]
        try:
            await load(database, profile, args.contacts_count)
            # The synthetic contacts are spread over the 60 days before now: the profile, as
            # it would have been, was created just before the first of them.
            born = datetime.now(UTC) - timedelta(days=60, minutes=5)
            await database["profile_schemas"].update_one(
                {"_id": profile["id"]}, {"$set": {"created_at": born}}
            )
            repository = app.state.contacts
            middle = PagePosition(f"c{args.contacts_count // 2:07d}@bench.example")
            newest = await repository.find_page(
                profile["id"], order=ContactOrder.NEWEST, limit=50, **NO_FILTER
            )
            older = PagePosition(newest[-1].key, newest[-1].created_at)
            older_cursor = page_cursor(ContactOrder.NEWEST, newest[-1])
            middle_cursor = page_cursor(
                ContactOrder.KEY, synthetic(profile, args.contacts_count // 2, datetime.now(UTC))
            )

            def through_api(path: str, **params: str) -> Callable[[], Awaitable[object]]:
                async def call() -> None:
                    response = await contacts_api.get(f"{base}{path}", params=params)
                    response.raise_for_status()

                return call

            def straight(**query: Any) -> Callable[[], Awaitable[object]]:
                return lambda: repository.find_page(
                    profile["id"], **{**NO_FILTER, "limit": 51, **query}
                )

            def by_prefix(folded_prefix: str, **query: Any) -> Document:
                """The field-prefix filter as sent straight to MongoDB."""
                term = folded_term_prefix(profile["id"], "ciudad", folded_prefix)
                return {"deleted": False, **query, SEARCH_TERMS: {"$regex": "^" + re.escape(term)}}

            def mongo_find(query: Document) -> Callable[[], Awaitable[object]]:
                return lambda: (
                    contacts.find(query).sort("_id").hint(TERMS_INDEX).limit(51).to_list()
                )

            def mongo_count(query: Document) -> Callable[[], Awaitable[object]]:
                return lambda: contacts.count_documents(query, hint=TERMS_INDEX)

            contacts = database["contacts"]
            bounced = {"status": "bounced"}
            stats = app.state.stats
            queries = [
                ("first page by key", through_api("/contacts"), straight()),
                (
                    "middle page by key",
                    through_api("/contacts", cursor=middle_cursor),
                    straight(after=middle),
                ),
                (
                    "search by key prefix",
                    through_api("/contacts", key_prefix="c09"),
                    straight(key_prefix="c09"),
                ),
                (
                    "status bounced (3%)",
                    through_api("/contacts", status="bounced"),
                    straight(status=ContactStatus.BOUNCED),
                ),
                (
                    "status blocked (1%)",
                    through_api("/contacts", status="blocked"),
                    straight(status=ContactStatus.BLOCKED),
                ),
                (
                    "field equals (12%)",
                    through_api("/contacts", field="Ciudad", value="Quito"),
                    straight(field_equals=("ciudad", "Quito")),
                ),
                (
                    "field equals (1%)",
                    through_api("/contacts", field="Ciudad", value=RARE_CITY),
                    straight(field_equals=("ciudad", RARE_CITY)),
                ),
                (
                    "newest first",
                    through_api("/contacts", sort="-created_at"),
                    straight(order=ContactOrder.NEWEST),
                ),
                (
                    "newest, next page",
                    through_api("/contacts", sort="-created_at", cursor=older_cursor),
                    straight(order=ContactOrder.NEWEST, after=older),
                ),
                (
                    "oldest first",
                    through_api("/contacts", sort="created_at"),
                    straight(order=ContactOrder.OLDEST, since=born),
                ),
                (
                    "field prefix (1%)",
                    through_api("/contacts", field="Ciudad", value_prefix="CUS"),
                    mongo_find(by_prefix("cus")),
                ),
                (
                    "field prefix (12%)",
                    through_api("/contacts", field="Ciudad", value_prefix="bogota"),
                    mongo_find(by_prefix("bogota")),
                ),
                (
                    "prefix + bounced (0.5%)",
                    through_api("/contacts", field="Ciudad", value_prefix="asun", status="bounced"),
                    mongo_find(by_prefix("asun", **bounced)),
                ),
                (
                    "count prefix (1%)",
                    through_api("/contacts:count", field="Ciudad", value_prefix="cus"),
                    mongo_count(by_prefix("cus")),
                ),
                (
                    "count prefix (12%)",
                    through_api("/contacts:count", field="Ciudad", value_prefix="Bogotá"),
                    mongo_count(by_prefix("bogota")),
                ),
                (
                    "count prefix + bounced",
                    through_api("/contacts:count", field="Ciudad", value_prefix="asun", **bounced),
                    mongo_count(by_prefix("asun", **bounced)),
                ),
                ("stats", through_api("/stats"), lambda: stats.of_profile(profile["id"])),
                ("count", through_api("/contacts:count"), lambda: stats.of_profile(profile["id"])),
                (
                    "count by status",
                    through_api("/contacts:count", status="bounced"),
                    lambda: stats.of_profile(profile["id"]),
                ),
            ]
            print(f"{args.contacts_count} contacts, {args.repeat} runs of each query")
            print("goal: p99 < 50 ms through the API; raw: the same reads without HTTP")
            for name, api_call, raw_call in queries:
                api_ms = await timed(api_call, args.repeat)
                raw_ms = await timed(raw_call, args.repeat)
                ratio = statistics.median(api_ms) / statistics.median(raw_ms)
                print(f"{name:<22} API {p50_p99(api_ms)}   raw {p50_p99(raw_ms)}   x{ratio:.2f}")
        finally:
            await client.drop_database(settings.mongodb_database)
    # Once this contact-svc has stopped, so that only the running one reacts to the deletion.
    async with httpx.AsyncClient(headers=auth) as profiles:
        await profiles.delete(f"{args.profiles}/v1/profiles/{profile['id']}")
    await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", default="http://127.0.0.1:8101")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument("--account", default="local-account", help="the API key's account")
    parser.add_argument("--contacts-count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
