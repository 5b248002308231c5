"""segment-svc's HTTP API served in-process over the real MongoDB-protocol server and Kafka:
members found by key prefix (listed, counted, exported), the statistics of a page of virtual
profiles in one call, and previews of rules, exact or estimated from sample buckets (complete
once the worker's backfill gave older contacts theirs), each query served by an index."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from contacts_shared.profiles import ProfileSchema
from contacts_shared.rules import RuleGroup
from contacts_shared.schema import (
    ContactStatus,
    FieldSpec,
    FieldType,
    ProfileSnapshot,
    ProfileType,
)
from segment_svc.app import create_app
from segment_svc.counts import OUTSIDE, Change, Standing, fold
from segment_svc.evaluate import ContactView, Segment
from segment_svc.handlers import Rebuilder, Segmenter
from segment_svc.membership import SAMPLE, ContactState
from segment_svc.preview import preview_rules
from segment_svc.resources import Resources
from segment_svc.sample_backfill import SampleBackfill
from segment_svc.settings import SegmentSettings
from segment_svc.store import ContactProjection, MemberCounts, Members, SegmentStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="City", key="city", type=FieldType.TEXT),
)
PREFIXED = [f"an{i:02d}@x.com" for i in range(12)]
# Lowered from the default, so a profile of a few thousand contacts is a large one.
PREVIEW_BUDGET = 300
LIMA = {"all": [{"field": "City", "op": "equals", "value": "Lima"}]}


@pytest.fixture
def accounts(unique: str) -> tuple[str, str]:
    """Accounts A (key-a) and B (key-b)."""
    return f"acct-a-{unique}", f"acct-b-{unique}"


@pytest.fixture
def settings(infrastructure: Any, unique: str, accounts: tuple[str, str]) -> SegmentSettings:
    return SegmentSettings(
        environment="test",
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"segment_svc_api_{unique}",
        topic_segments_events=f"segments.events.api.{unique}",
        api_keys={"key-a": accounts[0], "key-b": accounts[1]},
        preview_budget=PREVIEW_BUDGET,
    )


@pytest.fixture
async def resources(settings: SegmentSettings) -> AsyncIterator[Resources]:
    """The stores, indexed as the worker indexes them at start-up: what the API reads is put
    there through them."""
    opened = Resources.open(settings)
    await opened.create_indexes()
    yield opened
    await opened.close()


@pytest.fixture
async def api(settings: SegmentSettings) -> AsyncIterator[httpx.AsyncClient]:
    """segment-svc's API with its lifespan running, authenticated as account A."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://segment-svc",
            headers={"Authorization": "Bearer key-a"},
        ) as client:
            yield client


async def virtual_profile(resources: Resources, virtual_id: str, account_id: str) -> None:
    """A virtual profile of the account's Lima contacts, as profile events tell segment-svc."""
    base_id = f"base-{account_id}"
    await resources.schemas.apply(
        ProfileSchema(base_id, account_id, ProfileType.REGULAR, FIELDS, 1), deleted=False
    )
    await resources.segments.apply_virtual(
        ProfileSnapshot(
            id=virtual_id,
            account_id=account_id,
            name=virtual_id,
            description="",
            type=ProfileType.VIRTUAL,
            fields=(),
            base_profile_id=base_id,
            rules={"all": [{"field": "City", "op": "equals", "value": "Lima"}]},
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
    )


async def project(
    resources: Resources, settings: SegmentSettings, account_id: str, cities: dict[str, str]
) -> None:
    """Contacts of the account's base profile (key -> City), at version 1 or one past the
    projected one, evaluated and written as the contact events' consumer does."""
    base_id = f"base-{account_id}"
    held = await resources.projection.load([f"{base_id}:{key}" for key in cities])
    states = []
    for key, city in cities.items():
        version = held[f"{base_id}:{key}"]["version"] + 1 if f"{base_id}:{key}" in held else 1
        view = ContactView({"email": key, "city": city}, ContactStatus.ACTIVE, NOW, NOW)
        states.append(
            ContactState(
                f"{base_id}:{key}", account_id, base_id, key, version, ContactStatus.ACTIVE, view
            )
        )
    segmenter = Segmenter(
        resources.segments,
        resources.projection,
        resources.relay,
        topic=settings.topic_segments_events,
    )
    await segmenter.apply_states(states)


async def test_members_are_listed_counted_and_exported_by_key_prefix_in_any_case(
    api: httpx.AsyncClient,
    resources: Resources,
    settings: SegmentSettings,
    accounts: tuple[str, str],
) -> None:
    await virtual_profile(resources, "v1", accounts[0])
    others = {"amy@x.com": "Lima", "bea@x.com": "Lima", "an@quito.com": "Quito"}
    await project(resources, settings, accounts[0], {**dict.fromkeys(PREFIXED, "Lima"), **others})
    await project(resources, settings, accounts[0], {"anya@x.com": "Lima"})
    await project(resources, settings, accounts[0], {"anya@x.com": "Quito"})  # left: a tombstone

    keys: list[str] = []
    pages = 0
    params: dict[str, Any] = {"key_prefix": " AN", "limit": 5}
    while True:
        answer = await api.get("/v1/profiles/v1/members", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages += 1
        keys += [item["key"] for item in page["items"]]
        assert all(item["fields"]["City"] == "Lima" for item in page["items"])
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert (keys, pages) == (PREFIXED, 3)
    everyone = (await api.get("/v1/profiles/v1/members", params={"limit": 500})).json()
    assert [item["key"] for item in everyone["items"]] == sorted(
        [*PREFIXED, "amy@x.com", "bea@x.com"]
    )

    for prefix, expected in [("An", 12), ("AN0", 10), ("b", 1), ("anya", 0), ("zz", 0)]:
        counted = await api.get("/v1/profiles/v1/members:count", params={"key_prefix": prefix})
        assert counted.json() == {"count": expected}, prefix

    export = await api.get("/v1/profiles/v1/members:export", params={"key_prefix": "aN0"})
    assert export.status_code == 200, export.text
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [row["email"] for row in rows] == PREFIXED[:10]
    assert {row["City"] for row in rows} == {"Lima"}

    too_long = await api.get("/v1/profiles/v1/members:count", params={"key_prefix": "a" * 321})
    assert too_long.status_code == 422
    assert too_long.headers["content-type"] == "application/problem+json"
    assert too_long.json()["errors"][0]["field"] == "key_prefix"
    other = await api.get(
        "/v1/profiles/v1/members",
        params={"key_prefix": "an"},
        headers={"Authorization": "Bearer key-b"},
    )
    assert other.status_code == 404


@pytest.fixture
async def watched(settings: SegmentSettings, mongo_queries: Any) -> AsyncIterator[tuple[Any, Any]]:
    """The service's database through a client whose queries are kept (`mongo_queries`)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongodb_url, event_listeners=[mongo_queries]
    )
    yield client[settings.mongodb_database], mongo_queries
    await client.close()


async def test_prefix_and_batch_queries_read_index_ranges_only(
    resources: Resources,
    settings: SegmentSettings,
    accounts: tuple[str, str],
    watched: tuple[Any, Any],
    indexes_read: Any,
) -> None:
    await virtual_profile(resources, "v1", accounts[0])
    await project(resources, settings, accounts[0], dict.fromkeys(PREFIXED, "Lima"))
    database, commands = watched
    members = Members(database["members"])
    segments = SegmentStore(database["segments"], resources.schemas)
    counts = MemberCounts(database["member_marks"], database["member_shares"])

    assert len(await members.page("v1", None, 5, "an0")) == 5
    assert len(await members.page("v1", "an04@x.com", 5, "an0")) == 5
    assert await members.count("v1", "an1") == 2
    assert await segments.live_of_account(accounts[0], ["v1", "v2"]) == {"v1"}
    assert (await counts.counts_of(["v1", "v2"]))["v2"]["members"] == 0

    served = {"members": "_id_", "segments": "_id_", "member_shares": "by_segment"}
    assert sorted(commands.collections()) == sorted(
        ["members", "members", "members", "segments", "member_shares"]
    )
    for command, collection in zip(commands.sent, commands.collections(), strict=True):
        assert await indexes_read(database, command) == {served[collection]}, command


async def count(resources: Resources, partition: int, changes: list[Change]) -> None:
    """Membership changes as the counter folds them from one partition (none counted yet)."""
    await resources.counts.record([fold(partition, changes, {}, {}, changes[-1].offset)])


async def test_a_page_of_statistics_equals_each_profiles_own_and_shows_no_other_account(
    api: httpx.AsyncClient, resources: Resources, accounts: tuple[str, str]
) -> None:
    mine, theirs = accounts
    for virtual_id in ("v1", "v2", "v3", "v4"):
        await virtual_profile(resources, virtual_id, mine)
    await virtual_profile(resources, "vb", theirs)
    active, unsubscribed = Standing(True, "active"), Standing(True, "unsubscribed")
    bounced = Standing(True, "bounced")
    await count(
        resources,
        0,
        [
            Change("v1", "c1", active, 1, 0),
            Change("v1", "c2", active, 1, 1),
            Change("v1", "c3", unsubscribed, 1, 2),
            Change("v1", "c4", active, 1, 3),
            Change("v1", "c4", OUTSIDE, 2, 4),
            Change("v3", "c1", active, 1, 5),
            Change("vb", "c1", active, 1, 6),
        ],
    )
    await count(resources, 1, [Change("v1", "c5", active, 1, 0), Change("v2", "c6", bounced, 1, 1)])
    await resources.segments.delete("v3", 2)

    asked = ["v2", "v1", "vb", "v3", "nope", "v4", "v1"]
    answer = await api.get("/v1/stats", params={"profile_id": asked})
    assert answer.status_code == 200, answer.text
    stats = answer.json()["stats"]
    assert list(stats) == ["v2", "v1", "v4"]  # the order asked; others' and unknown left out
    for virtual_id, found in stats.items():
        single = await api.get(f"/v1/profiles/{virtual_id}/stats")
        assert single.json() == found
    assert stats["v1"]["total"] == 4
    assert stats["v1"]["by_status"] == {
        "active": 3,
        "unsubscribed": 1,
        "bounced": 0,
        "complained": 0,
        "blocked": 0,
    }
    assert stats["v4"]["total"] == 0
    for hidden in ("vb", "v3", "nope"):
        assert (await api.get(f"/v1/profiles/{hidden}/stats")).status_code == 404
    theirs_answer = await api.get(
        "/v1/stats",
        params={"profile_id": ["v1", "vb"]},
        headers={"Authorization": "Bearer key-b"},
    )
    assert list(theirs_answer.json()["stats"]) == ["vb"]

    for params in (
        {"profile_id": [f"v{i}" for i in range(101)]},
        {},
        {"profile_id": "v" * 101},
    ):
        refused = await api.get("/v1/stats", params=params)
        assert refused.status_code == 422, params
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["field"].startswith("profile_id"), refused.json()
    hundred = await api.get("/v1/stats", params={"profile_id": [f"v{i}" for i in range(100)]})
    assert list(hundred.json()["stats"]) == ["v1", "v2", "v4"]


async def test_a_contacts_virtual_profiles_come_in_one_call_for_its_account_only(
    api: httpx.AsyncClient,
    resources: Resources,
    settings: SegmentSettings,
    accounts: tuple[str, str],
    watched: tuple[Any, Any],
    indexes_read: Any,
) -> None:
    for virtual_id in ("v1", "v2"):
        await virtual_profile(resources, virtual_id, accounts[0])
    await virtual_profile(resources, "v3", accounts[0])
    await resources.segments.delete("v3", 2)  # deleted: no longer shown
    await project(resources, settings, accounts[0], {"amy@x.com": "Lima", "bo@x.com": "Quito"})
    base = f"base-{accounts[0]}"

    answer = await api.get(f"/v1/contacts/{base}/Amy@X.com/segments")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert (found["profile_id"], found["key"]) == (base, "amy@x.com")
    assert [(s["id"], s["name"]) for s in found["segments"]] == [("v1", "v1"), ("v2", "v2")]
    assert all(s["since"] for s in found["segments"])
    none = await api.get(f"/v1/contacts/{base}/bo@x.com/segments")
    assert none.json()["segments"] == []

    for path, headers in [
        (f"/v1/contacts/{base}/nobody@x.com/segments", {}),
        (f"/v1/contacts/{base}/amy@x.com/segments", {"Authorization": "Bearer key-b"}),
    ]:
        refused = await api.get(path, headers=headers)
        assert refused.status_code == 404, refused.text
        assert refused.headers["content-type"] == "application/problem+json"

    database, commands = watched
    projection = ContactProjection(database["contacts"])
    segments = SegmentStore(database["segments"], resources.schemas)
    held = await projection.memberships(f"{base}:amy@x.com")
    assert held is not None and {"v1", "v2"} <= set(held["segments"])
    assert await segments.names_of(accounts[0], ["v1", "v2", "v3"]) == {"v1": "v1", "v2": "v2"}
    assert commands.collections() == ["contacts", "segments"]
    for command in commands.sent:
        assert await indexes_read(database, command) == {"_id_"}, command


async def test_a_preview_counts_a_small_profile_exactly(
    api: httpx.AsyncClient,
    resources: Resources,
    settings: SegmentSettings,
    accounts: tuple[str, str],
) -> None:
    await virtual_profile(resources, "v1", accounts[0])
    cities = {f"c{i:03d}@x.com": "Lima" if i % 4 == 0 else "Quito" for i in range(PREVIEW_BUDGET)}
    await project(resources, settings, accounts[0], cities)
    await project(resources, settings, accounts[0], {"c000@x.com": "Quito"})

    body = {"base_profile_id": f"base-{accounts[0]}", "rules": LIMA}
    answer = await api.post("/v1/segments:preview", json=body)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    lima = sorted(key for key, city in cities.items() if city == "Lima")[1:]
    assert (found["exact"], found["count"], found["checked"], found["contacts"]) == (
        True,
        len(lima),
        PREVIEW_BUDGET,
        PREVIEW_BUDGET,
    )
    assert [member["key"] for member in found["sample"]] == lima[:20]
    assert {member["fields"]["City"] for member in found["sample"]} == {"Lima"}
    other = await api.post(
        "/v1/segments:preview", json=body, headers={"Authorization": "Bearer key-b"}
    )
    assert other.status_code == 404


async def large_profile(
    resources: Resources, settings: SegmentSettings, account_id: str
) -> tuple[str, dict[str, str]]:
    """A virtual profile of the Lima contacts over a base profile of ten times the preview's
    budget, a quarter of them in Lima: the base profile's id and its contacts' cities."""
    await virtual_profile(resources, "v1", account_id)
    size = 10 * PREVIEW_BUDGET
    cities = {f"c{i:04d}@x.com": "Lima" if i % 4 == 0 else "Quito" for i in range(size)}
    await project(resources, settings, account_id, cities)
    return f"base-{account_id}", cities


def assert_estimated(found: dict[str, Any], size: int) -> None:
    """A complete estimate of `large_profile`'s Lima contacts: about the budget checked, in
    whole buckets; the estimate within the sample's error; 20 matches shown."""
    assert (found["exact"], found["complete"]) == (False, True)
    assert PREVIEW_BUDGET * 0.8 <= found["checked"] <= PREVIEW_BUDGET * 1.5
    assert size * 0.8 <= found["contacts"] <= size * 1.2
    assert size / 4 * 0.7 <= found["count"] <= size / 4 * 1.3
    assert len(found["sample"]) == 20
    assert {member["fields"]["City"] for member in found["sample"]} == {"Lima"}


async def test_a_preview_estimates_a_large_profile_from_whole_sample_buckets(
    api: httpx.AsyncClient,
    resources: Resources,
    settings: SegmentSettings,
    accounts: tuple[str, str],
    watched: tuple[Any, Any],
    indexes_read: Any,
) -> None:
    base, cities = await large_profile(resources, settings, accounts[0])
    size = len(cities)
    body = {"base_profile_id": base, "rules": LIMA}
    found = (await api.post("/v1/segments:preview", json=body)).json()
    assert_estimated(found, size)
    keys = [member["key"] for member in found["sample"]]
    assert keys == sorted(keys) and keys != sorted(k for k, c in cities.items() if c == "Lima")[:20]

    # Read from the `_id` index and the sample buckets' index, never the whole profile: the
    # first `budget` ids, those without a bucket among them, a bucket's size, the buckets,
    # then the sample by `_id`.
    database, commands = watched
    segment = Segment("p", accounts[0], base, RuleGroup.model_validate(LIMA), 0, FIELDS)
    projection = ContactProjection(database["contacts"])
    again = await preview_rules(
        segment, projection=projection, budget=PREVIEW_BUDGET, today=NOW.date()
    )
    assert (again.count, again.tally.checked) == (found["count"], found["checked"])
    read = sorted([sorted(await indexes_read(database, command)) for command in commands.sent])
    assert read == [["_id_"]] * 3 + [[SAMPLE]] * 2, commands.sent  # the sample by `_id`

    # Contacts projected before buckets were kept are in none: the estimate says it leaves
    # them out, until a rebuild over the profile files them.
    contacts = resources.client[settings.mongodb_database]["contacts"]
    old = [f"{base}:c{i:04d}@x.com" for i in range(0, size, 7)]
    await contacts.update_many({"_id": {"$in": old}}, {"$unset": {SAMPLE: ""}})
    partial = (await api.post("/v1/segments:preview", json=body)).json()
    assert (partial["exact"], partial["complete"]) == (False, False)
    assert partial["contacts"] < found["contacts"]
    rebuilder = Rebuilder(
        resources.segments,
        resources.projection,
        resources.relay,
        resources.publisher,
        topic=settings.topic_segments_events,
        owner="w1",
    )
    assert await rebuilder.run_one() is True
    assert await contacts.count_documents({"_id": {"$in": old}, SAMPLE: {"$exists": True}}) == len(
        old
    )
    assert (await api.post("/v1/segments:preview", json=body)).json() == found


async def test_a_preview_of_contacts_projected_before_buckets_is_complete_after_the_backfill(
    api: httpx.AsyncClient,
    resources: Resources,
    settings: SegmentSettings,
    accounts: tuple[str, str],
) -> None:
    """A large profile nothing has touched since the upgrade: no document has its bucket, so
    the estimate stands for none, until the worker's backfill gives every one its bucket."""
    base, cities = await large_profile(resources, settings, accounts[0])
    body = {"base_profile_id": base, "rules": LIMA}
    database = resources.client[settings.mongodb_database]
    await database["contacts"].update_many({}, {"$unset": {SAMPLE: ""}})
    before = (await api.post("/v1/segments:preview", json=body)).json()
    assert (before["exact"], before["complete"], before["contacts"]) == (False, False, 0)

    backfill = SampleBackfill(
        database["contacts"],
        database["backfills"],
        batch_size=1000,
        lease=timedelta(seconds=30),
        pause_seconds=0,
    )
    await asyncio.wait_for(backfill.run(asyncio.Event()), timeout=60)

    found = (await api.post("/v1/segments:preview", json=body)).json()
    assert_estimated(found, len(cities))
