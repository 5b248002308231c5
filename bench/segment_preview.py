"""segment-svc's rule preview (`POST /v1/segments:preview`) on a large profile.

`--contacts-count` projected contacts (a million by default) are written straight into a
database of their own, as segment-svc's worker holds them (`membership.projected`: values,
status, times and sample bucket), then segment-svc's API is served in this process over that
database (its ASGI app; Kafka and the server are the running local stack's) and asked to
preview a few rules, `--repeat` times each: server time p50 and p95 (goal: p95 < 300 ms, the
console's pages), whether the answer is exact, its count against the true one (each contact
evaluated in this process), and beside it, as the baseline measured in the same run, a raw
read of the documents the preview checks (the ratio is the preview's own cost around it).
`--full-walk` also times once the preview as it was before (every contact evaluated). The
database is dropped afterwards unless `--keep` (to run again on it).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from figures import Documents, percentile, timed

from contacts_shared.mongo import bson_now
from contacts_shared.profiles import ProfileSchema
from contacts_shared.rules import RuleGroup
from contacts_shared.sampling import SAMPLE_BUCKETS
from contacts_shared.schema import ContactStatus, FieldSpec, FieldType, ProfileType
from segment_svc.app import create_app
from segment_svc.evaluate import ContactView, Segment
from segment_svc.membership import SAMPLE, ContactState, projected, sample_term
from segment_svc.preview import Tally, read_fields
from segment_svc.resources import Resources
from segment_svc.settings import SegmentSettings

PROFILE = "preview-bench"
ACCOUNT = "preview-bench-account"
API_KEY = "preview-bench-key"
FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="City", key="city", type=FieldType.TEXT),
    FieldSpec(name="Score", key="score", type=FieldType.NUMBER),
)
CITIES = ["Santiago", "Lima", "Quito", "Bogotá", "Montevideo", "Asunción", "La Paz", "Caracas"]
STATUSES = [ContactStatus.ACTIVE] * 90 + [ContactStatus.UNSUBSCRIBED] * 7
STATUSES += [ContactStatus.BOUNCED] * 3
RULES: dict[str, dict[str, Any]] = {
    "City equals Lima (1 in 8)": {"all": [{"field": "City", "op": "equals", "value": "Lima"}]},
    "Score >= 50 (half)": {"all": [{"field": "Score", "op": "gte", "value": 50}]},
    "City equals Cusco (1 in 100)": {"all": [{"field": "City", "op": "equals", "value": "Cusco"}]},
    "Lima or Quito, and bounced": {
        "all": [
            {"field": "City", "op": "in", "value": ["Lima", "Quito"]},
            {"field": "status", "op": "is", "value": "bounced"},
        ]
    },
}


def contact(index: int, now: datetime) -> ContactState:
    """The bench's contact `index`."""
    key = f"p{index:07d}@bench.example"
    city = "Cusco" if index % 100 == 7 else CITIES[index % len(CITIES)]
    status = STATUSES[index % len(STATUSES)]
    created = now - timedelta(minutes=index % 86_400)
    view = ContactView({"email": key, "city": city, "score": index % 101}, status, created, now)
    return ContactState(f"{PROFILE}:{key}", ACCOUNT, PROFILE, key, 1, status, view)


async def load(resources: Resources, database: str, count: int) -> None:
    """The base profile's fields and `count` projected contacts, as the worker writes them
    (`membership.projected`), unless the database holds them already."""
    contacts = resources.client[database]["contacts"]
    await resources.create_indexes()
    await resources.schemas.apply(
        ProfileSchema(PROFILE, ACCOUNT, ProfileType.REGULAR, FIELDS, 1), deleted=False
    )
    if await contacts.count_documents({}) == count:
        print(f"reusing the {count:,} contacts loaded before")
        return
    await contacts.delete_many({})
    started = time.perf_counter()
    now = bson_now()
    for first in range(0, count, 5000):
        await contacts.insert_many(
            [
                {**projected(contact(i, now), {}), "rev": 1}
                for i in range(first, min(count, first + 5000))
            ],
            ordered=False,
        )
    print(f"loaded {count:,} projected contacts in {time.perf_counter() - started:.1f} s")


def true_counts(count: int) -> dict[str, int]:
    """How many of the bench's contacts each rule admits, evaluated here one by one."""
    now = bson_now()
    segments = {
        name: Segment(name, ACCOUNT, PROFILE, RuleGroup.model_validate(rules), 1, FIELDS)
        for name, rules in RULES.items()
    }
    counts = dict.fromkeys(segments, 0)
    for index in range(count):
        view = contact(index, now).view
        assert view is not None
        for name, segment in segments.items():
            counts[name] += segment.admits(view, now.date())
    return counts


async def measure(
    api: httpx.AsyncClient, contacts: Documents, rules: dict[str, Any], repeat: int
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Server times of the preview of `rules` and of the raw read of the documents it checks
    (the same buckets, or the same `_id` range, with the same fields), and its last answer."""
    body = {"base_profile_id": PROFILE, "rules": rules}
    answers: list[dict[str, Any]] = []

    async def preview() -> None:
        answer = await api.post("/v1/segments:preview", json=body)
        answer.raise_for_status()
        answers.append(answer.json())

    await preview()  # warm
    preview_ms = await timed(preview, repeat)
    last = answers[-1]
    if last["exact"]:
        query: dict[str, Any] = {"_id": {"$gt": f"{PROFILE}:", "$lt": f"{PROFILE};"}}
        hint = "_id_"
    else:
        buckets = round(SAMPLE_BUCKETS * last["checked"] / last["contacts"])
        query = {SAMPLE: {"$in": [sample_term(PROFILE, b) for b in range(buckets)]}}
        hint = SAMPLE
    fields = read_fields(Segment("p", ACCOUNT, PROFILE, RuleGroup.model_validate(rules), 1, FIELDS))

    async def raw() -> None:
        await contacts.find(query, fields).hint(hint).to_list()

    return preview_ms, await timed(raw, repeat), last


async def every_contact(resources: Resources, rule: tuple[str, dict[str, Any]]) -> None:
    """The preview as it was before budgets: every contact of the profile read in `_id` order,
    a page of 1,000 at a time, and evaluated (timed once)."""
    name, rules = rule
    segment = Segment("p", ACCOUNT, PROFILE, RuleGroup.model_validate(rules), 1, FIELDS)
    started = time.perf_counter()
    tally = Tally()
    after: str | None = None
    while page := await resources.projection.page(
        PROFILE, after, 1000, fields=read_fields(segment)
    ):
        after = page[-1]["_id"]
        tally.add(segment, page, bson_now().date())
    print(
        f"before: every contact checked, {name}: {time.perf_counter() - started:.1f} s "
        f"({tally.count:,} of {tally.checked:,})"
    )


async def main(args: argparse.Namespace) -> None:
    base = SegmentSettings(environment="test", mongodb_database=args.database, log_level="WARNING")
    resources = Resources.open(base)
    contacts = resources.client[args.database]["contacts"]
    try:
        await load(resources, args.database, args.contacts_count)
        truth = true_counts(args.contacts_count)
        if args.full_walk:
            await every_contact(resources, next(iter(RULES.items())))
        for budget in [int(b) for b in args.budgets.split(",")]:
            settings = base.model_copy(
                update={"api_keys": {API_KEY: ACCOUNT}, "preview_budget": budget}
            )
            app = create_app(settings)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://segment-svc",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=600,
                ) as api,
            ):
                print(
                    f"segments:preview ({settings.mongodb_url}): {args.contacts_count:,} "
                    f"projected contacts, budget {budget:,}, {args.repeat} requests each, ms "
                    "(preview | raw read of the documents it checks)"
                )
                for name, rules in RULES.items():
                    preview_ms, raw_ms, last = await measure(api, contacts, rules, args.repeat)
                    p50, p95 = percentile(preview_ms, 0.5), percentile(preview_ms, 0.95)
                    r50, r95 = percentile(raw_ms, 0.5), percentile(raw_ms, 0.95)
                    off = last["count"] / truth[name] - 1
                    print(
                        f"  {name:<28} p50 {p50:7.1f} p95 {p95:7.1f} | raw p50 {r50:7.1f} "
                        f"p95 {r95:7.1f}  ratio p95 {p95 / r95:4.2f}  "
                        f"{'exact' if last['exact'] else 'about'} {last['count']:,} of "
                        f"{last['contacts']:,}, checked {last['checked']:,} (true "
                        f"{truth[name]:,}, {off:+.1%})  {'ok' if p95 < 300 else 'OVER 300 ms'}"
                    )
    finally:
        if not args.keep:
            await resources.client.drop_database(args.database)
        await resources.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts-count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--budgets", default="10000", help="preview budgets to measure, a,b,...")
    parser.add_argument("--database", default="segment_svc_preview_bench")
    parser.add_argument("--keep", action="store_true", help="keep the loaded database")
    parser.add_argument(
        "--full-walk", action="store_true", help="also every contact checked once (before)"
    )
    asyncio.run(main(parser.parse_args()))
