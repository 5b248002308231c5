"""contact-svc reads on a large profile, against the running local stack (`make run`).

Creates a profile through profile-svc, and runs a contact-svc of its own in this process, on a
database of its own (`contact_svc_scale_<run>`, dropped at the end, so the dev database stays
small), with topics and consumer groups of its own. Loads `--contacts-count` contacts
(1,000,000 by default) straight into that database in contact-svc's document format, with the
statistics shares their events would have produced; then times, through contact-svc's HTTP API
(in-process ASGI, no network), a listing page by key, a search by key prefix, a status filter,
a field-equals search, a field-prefix search (case- and accent-insensitive), pages sorted by a
field's value (alone and filtered), the filtered counts (exact or estimated, and exact on
request) and the statistics, and the same reads sent straight to MongoDB in the same process
(the baseline of the ratio: the repository's reads without HTTP). Then prints what each count
answered.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from figures import p50_p99, timed
from pymongo import AsyncMongoClient
from synthetic_contacts import RARE_CITY, load, synthetic

from contact_svc.app import create_app
from contact_svc.contact_documents import sort_key
from contact_svc.domain import ContactOrder, PagePosition, page_cursor
from contact_svc.listing_handlers import EXACT_IN_SAMPLE, field_cursor
from contact_svc.listing_repository import FieldOrder, SortedPosition
from contact_svc.settings import ContactSettings
from contacts_shared.schema import ContactStatus

NO_FILTER: dict[str, Any] = {
    "status": None,
    "key_prefix": None,
    "field_equals": None,
    "after": None,
}
NO_COUNT_FILTER: dict[str, Any] = {
    "status": None,
    "key_prefix": None,
    "field_equals": None,
    "source": None,
}


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
            halfway = synthetic(profile, args.contacts_count // 2, datetime.now(UTC))
            middle_cursor = page_cursor(ContactOrder.KEY, halfway)
            by_name, by_city = FieldOrder("nombre"), FieldOrder("ciudad")
            name_middle = SortedPosition(
                sort_key(profile["id"], halfway.fields["nombre"], halfway.key), halfway.key
            )
            city_middle = SortedPosition(
                sort_key(profile["id"], halfway.fields["ciudad"], halfway.key), halfway.key
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

            def counted(**query: Any) -> Callable[[], Awaitable[object]]:
                """What `:count` reads, without HTTP: the sample's matches, then every match
                if they are few."""
                filters = {**NO_COUNT_FILTER, **query}

                async def call() -> None:
                    sampled = await repository.count_matching(
                        profile["id"], in_sample=True, **filters
                    )
                    if sampled <= EXACT_IN_SAMPLE:
                        await repository.count_matching(profile["id"], **filters)

                return call

            def exactly(**query: Any) -> Callable[[], Awaitable[object]]:
                filters = {**NO_COUNT_FILTER, **query}
                return lambda: repository.count_matching(profile["id"], **filters)

            bounced = {"status": "bounced"}
            cus, bogota = ("ciudad", "cus"), ("ciudad", "bogota")
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
                    straight(value_prefix=cus),
                ),
                (
                    "field prefix (12%)",
                    through_api("/contacts", field="Ciudad", value_prefix="bogota"),
                    straight(value_prefix=bogota),
                ),
                (
                    "prefix + bounced (0.4%)",
                    through_api("/contacts", field="Ciudad", value_prefix="asun", **bounced),
                    straight(value_prefix=("ciudad", "asun"), status=ContactStatus.BOUNCED),
                ),
                (
                    "by name, first page",
                    through_api("/contacts", sort="Nombre"),
                    straight(by_field=by_name),
                ),
                (
                    "by name, middle page",
                    through_api("/contacts", sort="Nombre", cursor=field_cursor(by_name, halfway)),
                    straight(by_field=by_name, after=name_middle),
                ),
                (
                    "by -name, first page",
                    through_api("/contacts", sort="-Nombre"),
                    straight(by_field=FieldOrder("nombre", descending=True)),
                ),
                (
                    "by city (ties), middle",
                    through_api("/contacts", sort="Ciudad", cursor=field_cursor(by_city, halfway)),
                    straight(by_field=by_city, after=city_middle),
                ),
                (
                    "by name + bounced (3%)",
                    through_api("/contacts", sort="Nombre", **bounced),
                    straight(by_field=by_name, status=ContactStatus.BOUNCED),
                ),
                (
                    "by name + city (1%)",
                    through_api("/contacts", sort="Nombre", field="Ciudad", value=RARE_CITY),
                    straight(by_field=by_name, field_equals=("ciudad", RARE_CITY)),
                ),
                (
                    "by name + prefix (0.4%)",
                    through_api(
                        "/contacts", sort="Nombre", field="Ciudad", value_prefix="asun", **bounced
                    ),
                    straight(
                        by_field=by_name,
                        value_prefix=("ciudad", "asun"),
                        status=ContactStatus.BOUNCED,
                    ),
                ),
                (
                    "by city + key prefix",
                    through_api("/contacts", sort="Ciudad", key_prefix="c09"),
                    straight(by_field=by_city, key_prefix="c09"),
                ),
                (
                    "count prefix (1%)",
                    through_api("/contacts:count", field="Ciudad", value_prefix="cus"),
                    counted(value_prefix=cus),
                ),
                (
                    "count prefix (12%)",
                    through_api("/contacts:count", field="Ciudad", value_prefix="Bogotá"),
                    counted(value_prefix=bogota),
                ),
                (
                    "count prefix + bounced",
                    through_api("/contacts:count", field="Ciudad", value_prefix="asun", **bounced),
                    counted(value_prefix=("ciudad", "asun"), status=ContactStatus.BOUNCED),
                ),
                (
                    "count field = (12%)",
                    through_api("/contacts:count", field="Ciudad", value="Quito"),
                    counted(field_equals=("ciudad", "Quito")),
                ),
                (
                    "count active + = (11%)",
                    through_api("/contacts:count", field="Ciudad", value="Quito", status="active"),
                    counted(field_equals=("ciudad", "Quito"), status=ContactStatus.ACTIVE),
                ),
                (
                    "count key prefix (10%)",
                    through_api("/contacts:count", key_prefix="c09"),
                    counted(key_prefix="c09"),
                ),
                (
                    "exact count prefix 1%",
                    through_api("/contacts:count", field="Ciudad", value_prefix="cus", exact="1"),
                    exactly(value_prefix=cus),
                ),
                (
                    "exact count prefix 12%",
                    through_api(
                        "/contacts:count", field="Ciudad", value_prefix="bogota", exact="1"
                    ),
                    exactly(value_prefix=bogota),
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
            answers = [
                {"field": "Ciudad", "value_prefix": "cus"},
                {"field": "Ciudad", "value_prefix": "bogota"},
                {"field": "Ciudad", "value_prefix": "asun", **bounced},
                {"field": "Ciudad", "value": "Quito"},
                {"field": "Ciudad", "value": "Quito", "status": "active"},
                {"key_prefix": "c09"},
            ]
            for params in answers:
                answer = (await contacts_api.get(f"{base}/contacts:count", params=params)).json()
                exact = await contacts_api.get(
                    f"{base}/contacts:count", params={**params, "exact": "true"}
                )
                print(f"count {params}: {answer}, exactly {exact.json()['count']}")
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
