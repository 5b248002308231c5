"""A console's page of profiles with their counts, against the running local stack (`make run`).

Sets up an account's profiles through profile-svc: `--regular` regular profiles, the first of
them holding `--contacts-count` contacts (1,000,000 by default) written straight into
contact-svc's database with the statistics shares their events would have produced
(synthetic_contacts.py), the others `--small` contacts each written through `contacts:batch`
(counted by contact-svc's statistics consumer, the real path); and `--virtual` virtual profiles
on those (`City equals ...`, counted by segment-svc from the membership events). Once every
count equals what was written (past `--wait`, it says which do not and goes on), times the
page as the console loads it: profile-svc's
`GET /v1/profiles?name=...&sort=name&limit=50`, then, side by side, contact-svc's
`GET /v1/stats` for the page's regular profiles and segment-svc's `GET /v1/stats` for its
virtual ones; the same with the two statistics calls in turn; and each call on its own. The
baseline of the ratio, timed alternately with the API in the same run: the same reads through
the services' own repositories straight to MongoDB, without HTTP. The contacts written
straight are deleted straight afterwards, then the profiles through profile-svc (which has
contact-svc delete the small ones' contacts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from figures import p50_p99, timed
from pymongo import AsyncMongoClient
from segments import new_profile, segment_ready
from synthetic_contacts import STATUS_MIX, load

from contact_svc.settings import ContactSettings
from contact_svc.stats_repository import MongoStatsStore
from contacts_shared.profiles import MongoSchemaStore
from contacts_shared.schema import ProfileType
from profile_svc.domain import ProfileOrder
from profile_svc.repository import MongoProfileRepository, ProfileFilter
from profile_svc.settings import ProfileSettings
from segment_svc.settings import SegmentSettings
from segment_svc.store import MemberCounts, SegmentStore

PAGE = 50
CITIES = ["Lima", "Quito", "Bogotá", "Santiago"]  # of the small profiles' contacts
Call = Callable[[], Awaitable[object]]
Stats = dict[str, Any]


@dataclass
class Account:
    """The bench's profiles (the first regular one is the big one) and the total each should
    show; `loaded`: the big one's contacts were (being) written straight."""

    prefix: str
    regular: list[str] = field(default_factory=list)
    virtual: list[str] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)
    account_id: str = ""
    loaded: bool = False


class Console:
    """The calls a console page of profiles makes, through the API."""

    def __init__(self, api: httpx.AsyncClient, args: argparse.Namespace, prefix: str) -> None:
        self._api, self._args = api, args
        self._listing = {"name": prefix, "sort": "name", "limit": str(PAGE)}

    async def profiles(self) -> list[dict[str, Any]]:
        answer = await self._api.get(f"{self._args.profiles}/v1/profiles", params=self._listing)
        answer.raise_for_status()
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def _stats(self, service: str, ids: list[str]) -> Stats:
        answer = await self._api.get(f"{service}/v1/stats", params=[("profile_id", i) for i in ids])
        answer.raise_for_status()
        stats: Stats = answer.json()["stats"]
        return stats

    async def contact_stats(self, ids: list[str]) -> Stats:
        return await self._stats(self._args.contacts, ids)

    async def segment_stats(self, ids: list[str]) -> Stats:
        return await self._stats(self._args.segments, ids)

    async def page(self) -> None:
        """The profiles, then the counts of both kinds side by side."""
        held, virtual = split(await self.profiles())
        await asyncio.gather(self.contact_stats(held), self.segment_stats(virtual))

    async def page_in_turn(self) -> None:
        """`page` with the two statistics calls one after the other."""
        held, virtual = split(await self.profiles())
        await self.contact_stats(held)
        await self.segment_stats(virtual)


def split(items: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The ids of a page's profiles that hold contacts, and of its virtual ones."""
    held = [p["id"] for p in items if p["type"] != "virtual"]
    return held, [p["id"] for p in items if p["type"] == "virtual"]


class Raw:
    """The same reads as the services make for the page, through their own repositories,
    straight to MongoDB: the baseline of the ratio."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], account: Account) -> None:
        profile_settings, contact_settings = ProfileSettings(), ContactSettings()
        contact_db = client[contact_settings.mongodb_database]
        segment_db = client[SegmentSettings().mongodb_database]
        self._account_id = account.account_id
        self._by_name = ProfileFilter(name_prefix=account.prefix)
        self._profiles = MongoProfileRepository(
            client[profile_settings.mongodb_database]["profiles"],
            profile_settings,
            events_queued=lambda *_: None,
        )
        self._schemas = MongoSchemaStore(contact_db["profile_schemas"])
        self._stats = MongoStatsStore(
            contact_db["profile_stats"],
            contact_db["stats_marks"],
            partitions=contact_settings.topic_partitions,
        )
        self._segments = SegmentStore(
            segment_db["segments"], MongoSchemaStore(segment_db["schemas"])
        )
        self._counts = MemberCounts(segment_db["member_marks"], segment_db["member_shares"])

    async def profiles(self) -> tuple[list[str], list[str]]:
        found, _ = await asyncio.gather(
            self._profiles.find_page(
                self._account_id, self._by_name, order=ProfileOrder.NAME, after=None, limit=PAGE + 1
            ),
            self._profiles.count(self._account_id, self._by_name),
        )
        page = found[:PAGE]
        held = [p.id for p in page if p.type != ProfileType.VIRTUAL]
        return held, [p.id for p in page if p.type == ProfileType.VIRTUAL]

    async def contact_stats(self, ids: list[str]) -> None:
        await asyncio.gather(
            self._schemas.holding_contacts(self._account_id), self._stats.of_profiles(ids)
        )

    async def segment_stats(self, ids: list[str]) -> None:
        live = await self._segments.live_of_account(self._account_id, ids)
        await self._counts.counts_of([i for i in ids if i in live])

    async def page(self) -> None:
        held, virtual = await self.profiles()
        await asyncio.gather(self.contact_stats(held), self.segment_stats(virtual))

    async def page_in_turn(self) -> None:
        held, virtual = await self.profiles()
        await self.contact_stats(held)
        await self.segment_stats(virtual)


async def set_up(api: httpx.AsyncClient, args: argparse.Namespace, account: Account) -> None:
    """The profiles, the small ones' contacts through `contacts:batch`, the virtual ones."""
    # Names sort as a console shows them: each list, then the segments on it.
    for n in range(args.regular):
        name = f"{account.prefix} list {n:02d}" + (" clientes" if n == 0 else "")
        fields = [{"name": "Nombre"}, {"name": "Ciudad"}] if n == 0 else [{"name": "City"}]
        account.regular.append(await new_profile(api, args, {"name": name, "fields": fields}))
    account.expected[account.regular[0]] = args.contacts_count
    for k in range(args.virtual):
        base = 1 + k % (args.regular - 1)
        city = CITIES[k % len(CITIES)]
        body = {
            "name": f"{account.prefix} list {base:02d} · {city}",
            "type": "virtual",
            "base_profile_id": account.regular[base],
            "rules": {"all": [{"field": "City", "op": "equals", "value": city}]},
        }
        vid = await new_profile(api, args, body)
        account.virtual.append(vid)
        account.expected[vid] = sum(1 for i in range(args.small) if CITIES[i % 4] == city)
    for vid in account.virtual:
        await segment_ready(api, args, vid)
    for n, profile_id in enumerate(account.regular[1:], start=1):
        contacts = f"{args.contacts}/v1/profiles/{profile_id}/contacts"
        while (await api.get(contacts, params={"limit": 1})).status_code == 404:
            await asyncio.sleep(0.2)  # until contact-svc has the profile's schema
        items = [
            {"email": f"l{n:02d}-{i:05d}@bench.example", "City": CITIES[i % 4]}
            for i in range(args.small)
        ]
        (await api.post(f"{contacts}:batch", json={"contacts": items})).raise_for_status()
        account.expected[profile_id] = args.small


async def counted_as_written(console: Console, account: Account, args: argparse.Namespace) -> None:
    """Wait until both services' statistics show every count as written, the big profile's
    per status too; past `--wait` seconds, say which differ and go on (the reads cost the
    same)."""
    big = account.regular[0]
    by_status = dict(
        Counter(STATUS_MIX[i % len(STATUS_MIX)].value for i in range(args.contacts_count))
    )
    started = time.perf_counter()
    while True:
        counted = await console.contact_stats(account.regular) | await console.segment_stats(
            account.virtual
        )
        totals = {p: counted[p]["total"] for p in counted}
        statuses = {s: n for s, n in counted.get(big, {}).get("by_status", {}).items() if n}
        if totals == account.expected and statuses == by_status:
            print(f"counts as written {time.perf_counter() - started:.1f} s after the load")
            return
        if time.perf_counter() - started > args.wait:
            labels = {p: f"list {n:02d}" for n, p in enumerate(account.regular)}
            labels |= {p: f"virtual {k:02d}" for k, p in enumerate(account.virtual)}
            differ = [
                f"{labels[p]} {totals.get(p)} of {n}"
                for p, n in account.expected.items()
                if totals.get(p) != n
            ]
            if statuses != by_status:
                differ.append(f"list 00 by status {statuses}, written {by_status}")
            print(f"COUNTS DIFFER from what was written after {args.wait:.0f} s: {differ}")
            return
        await asyncio.sleep(1)


async def clean_up(
    api: httpx.AsyncClient,
    args: argparse.Namespace,
    client: AsyncMongoClient[dict[str, Any]],
    account: Account,
) -> None:
    if account.loaded:
        # Straight, as they were written: deleting the profile first would have contact-svc
        # delete its contacts one by one, each with its event.
        settings = ContactSettings()
        contact_db = client[settings.mongodb_database]
        big = account.regular[0]
        started = time.perf_counter()
        await contact_db["contacts"].delete_many({"_id": {"$gt": f"{big}:", "$lt": f"{big};"}})
        shares = [f"{big}|{n}" for n in range(settings.topic_partitions)]
        await contact_db["profile_stats"].delete_many({"_id": {"$in": [big, *shares]}})
        print(f"removed the loaded contacts in {time.perf_counter() - started:.1f} s")
    for profile_id in [*account.virtual, *account.regular]:  # a base with virtuals is refused
        await api.delete(f"{args.profiles}/v1/profiles/{profile_id}")


async def main(args: argparse.Namespace) -> None:
    settings = ContactSettings()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    contact_db = client[settings.mongodb_database]
    account = Account(prefix=f"bench list {uuid.uuid4().hex[:8]}")
    main_task = asyncio.current_task()
    assert main_task is not None
    # Killed (`timeout`, CI), still remove a million contacts from the dev database.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    auth = {"Authorization": f"Bearer {args.api_key}"}
    async with httpx.AsyncClient(headers=auth, timeout=120) as api:
        console = Console(api, args, account.prefix)
        try:
            await set_up(api, args, account)
            big = account.regular[0]
            while (schema := await contact_db["profile_schemas"].find_one({"_id": big})) is None:
                await asyncio.sleep(0.2)
            account.account_id, account.loaded = schema["account_id"], True
            await load(
                contact_db,
                {"id": big, "account_id": account.account_id},
                args.contacts_count,
                partitions=settings.topic_partitions,
            )
            await counted_as_written(console, account, args)

            raw = Raw(client, account)
            held, virtual = split(await console.profiles())
            assert big in held
            calls: list[tuple[str, Call, Call]] = [
                ("page: list, then both stats", console.page, raw.page),
                ("page, stats one by one", console.page_in_turn, raw.page_in_turn),
                (f"profile-svc list of {PAGE}", console.profiles, raw.profiles),
                (
                    f"contact-svc stats of {len(held)}",
                    lambda: console.contact_stats(held),
                    lambda: raw.contact_stats(held),
                ),
                (
                    f"segment-svc stats of {len(virtual)}",
                    lambda: console.segment_stats(virtual),
                    lambda: raw.segment_stats(virtual),
                ),
            ]
            print(
                f"profile list ({settings.mongodb_url}): {len(account.expected)} profiles "
                f"({len(account.regular)} regular, {len(account.virtual)} virtual), one of "
                f"{args.contacts_count} contacts, {args.small} in each other regular one; "
                f"a page of {PAGE}: {len(held)} regular, {len(virtual)} virtual; "
                f"{args.repeat} runs of each call, API and raw alternately, {args.rounds} round(s)"
            )
            print(
                "goal: the page p99 < 50 ms; raw: the same reads without HTTP; load average "
                f"{os.getloadavg()[0]:.2f} (the stack, the bench and whatever else runs here)"
            )
            for round_number in range(1, args.rounds + 1):
                if args.rounds > 1:
                    print(f"round {round_number} (load average {os.getloadavg()[0]:.2f})")
                for name, api_call, raw_call in calls:
                    await timed(api_call, args.warm_up)
                    await timed(raw_call, args.warm_up)
                    api_ms: list[float] = []
                    raw_ms: list[float] = []
                    for _ in range(args.repeat):  # alternately: both see the same load
                        api_ms += await timed(api_call, 1)
                        raw_ms += await timed(raw_call, 1)
                    ratio = statistics.median(api_ms) / statistics.median(raw_ms)
                    print(
                        f"{name:<28} API {p50_p99(api_ms)}   raw {p50_p99(raw_ms)}   x{ratio:.2f}"
                    )
        finally:
            await clean_up(api, args, client, account)
    await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", default="http://127.0.0.1:8101")
    parser.add_argument("--contacts", default="http://127.0.0.1:8102")
    parser.add_argument("--segments", default="http://127.0.0.1:8104")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument("--contacts-count", type=int, default=1_000_000)
    parser.add_argument("--regular", type=int, default=40, help="regular profiles (2 or more)")
    parser.add_argument("--virtual", type=int, default=24, help="virtual profiles")
    parser.add_argument("--small", type=int, default=120, help="contacts of each other list")
    parser.add_argument("--repeat", type=int, default=300, help="runs of each call timed")
    parser.add_argument("--rounds", type=int, default=1, help="measurements of the same set-up")
    parser.add_argument("--warm-up", type=int, default=10, help="runs before timing")
    parser.add_argument("--wait", type=float, default=180, help="seconds for counts to settle")
    asyncio.run(main(parser.parse_args()))
