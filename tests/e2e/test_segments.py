"""Virtual profiles kept current end to end: profile-svc, contact-svc, segment-svc's worker and
API as real processes on the real Kafka and MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import csv
import io
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pytest

from contacts_shared.events import EventEnvelope

pytestmark = pytest.mark.integration
T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout: float = 45.0
) -> T:
    """Poll `probe` until `done` holds of its result; the last result either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


@dataclass
class Platform:
    api: httpx.AsyncClient
    profile_url: str
    contact_url: str
    segment_url: str
    import_url: str
    segments_topic: str
    worker: Any
    profile_known_to_contacts: Any

    async def base_profile(self, name: str, fields: list[dict[str, str]]) -> dict[str, Any]:
        """A regular profile, once contact-svc knows it."""
        profile: dict[str, Any] = await self.profile_known_to_contacts(
            self.api,
            self.profile_url,
            self.contact_url,
            {"name": name, "fields": fields},
            import_url=self.import_url,
        )
        return profile

    async def members(self, virtual_id: str) -> set[str]:
        keys: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            page = await self.api.get(
                f"{self.segment_url}/v1/profiles/{virtual_id}/members", params=params
            )
            assert page.status_code == 200, page.text
            body = page.json()
            keys |= {item["key"] for item in body["items"]}
            if not (cursor := body["next_cursor"]):
                return keys

    async def contact(self, profile_id: str, key: str, **fields: Any) -> None:
        answer = await self.api.post(
            f"{self.contact_url}/v1/profiles/{profile_id}/contacts",
            json={"fields": {"email": key, **fields}},
        )
        assert answer.status_code == 201, answer.text


@pytest.fixture
async def platform(service_process: Any, platform_env: Any, profile_known_to_contacts: Any) -> Any:
    envs = platform_env("seg")
    profile_svc = service_process("profile_svc.app:create_app", envs["profile"])
    contact_svc = service_process("contact_svc.app:create_app", envs["contact"])
    segment_api = service_process("segment_svc.app:create_app", envs["segment"])
    worker = service_process("segment_svc.worker", envs["segment"])
    import_svc = service_process("import_svc.app:create_app", envs["import"])
    for process in (profile_svc, contact_svc, segment_api, worker, import_svc):
        process.start()
    async with httpx.AsyncClient(headers={"Authorization": "Bearer seg-key"}, timeout=30) as api:
        yield Platform(
            api,
            profile_svc.url,
            contact_svc.url,
            segment_api.url,
            import_svc.url,
            envs["segment"]["CONTACTS_TOPIC_SEGMENTS_EVENTS"],
            worker,
            profile_known_to_contacts,
        )


async def virtual_profile(platform: Platform, base_id: str, name: str, rules: Any) -> str:
    answer = await platform.api.post(
        f"{platform.profile_url}/v1/profiles",
        json={"name": name, "type": "virtual", "base_profile_id": base_id, "rules": rules},
    )
    assert answer.status_code == 201, answer.text
    virtual_id: str = answer.json()["id"]
    known = await eventually(
        lambda: platform.api.get(f"{platform.segment_url}/v1/segments/{virtual_id}"),
        lambda r: r.status_code == 200 and not r.json()["rebuild"]["pending"],
    )
    assert known.status_code == 200, known.text
    return virtual_id


def membership_from(envelopes: list[EventEnvelope], virtual_id: str) -> set[str]:
    """The members a subscriber of segments.events knows of, copies (same id) dropped."""
    members: set[str] = set()
    seen: set[str] = set()
    for envelope in envelopes:
        if envelope.id in seen or envelope.data.get("segment_id") != virtual_id:
            continue
        seen.add(envelope.id)
        if envelope.type == "contacts.segment.contact_entered":
            members.add(envelope.data["key"])
        elif envelope.type == "contacts.segment.contact_left":
            members.discard(envelope.data["key"])
    return members


async def test_members_follow_contact_changes_and_rules_changes(
    platform: Platform, send_webhook: Any, read_envelopes: Any
) -> None:
    api = platform.api
    base = await platform.base_profile(
        "Shop", [{"name": "City", "type": "text"}, {"name": "Age", "type": "number"}]
    )
    santiago = await virtual_profile(
        platform,
        base["id"],
        "Santiago",
        {"all": [{"field": "City", "op": "equals", "value": "Santiago"}]},
    )
    active_adults = await virtual_profile(
        platform,
        base["id"],
        "Active adults",
        {
            "all": [
                {"field": "Age", "op": "gte", "value": 30},
                {"field": "status", "op": "is", "value": "active"},
            ]
        },
    )
    await platform.contact(base["id"], "ana@x.com", City="Santiago", Age=25)
    await platform.contact(base["id"], "bea@x.com", City="Lima", Age=40)
    await platform.contact(base["id"], "caro@x.com", City="santiago", Age=35)
    answer = await api.post(
        f"{platform.contact_url}/v1/webhook-sources",
        json={
            "profile_id": base["id"],
            "mapping": {"email": "email", "city": "City", "age": "Age"},
        },
    )
    assert answer.status_code == 201, answer.text
    source = answer.json()
    accepted = await send_webhook(
        api,
        f"{platform.contact_url}{source['endpoint']}",
        source["secret"],
        [{"email": "dora@x.com", "city": "Santiago", "age": 50}],
    )
    assert accepted.status_code == 202, accepted.text

    ready = await api.get(f"{platform.worker.url}/readyz")  # no agent waits for a server
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    contacts = f"{platform.contact_url}/v1/profiles/{base['id']}/contacts"
    assert (await eventually(lambda: platform.members(santiago), lambda m: len(m) == 3)) == {
        "ana@x.com",
        "caro@x.com",
        "dora@x.com",
    }
    assert (await api.patch(f"{contacts}/ana@x.com", json={"fields": {"Age": 31}})).is_success
    assert (await api.patch(f"{contacts}/caro@x.com", json={"status": "unsubscribed"})).is_success
    assert (await api.delete(f"{contacts}/bea@x.com")).status_code == 204

    adults = await eventually(
        lambda: platform.members(active_adults), lambda m: m == {"ana@x.com", "dora@x.com"}
    )
    assert adults == {"ana@x.com", "dora@x.com"}
    page = (await api.get(f"{platform.segment_url}/v1/profiles/{active_adults}/members")).json()
    assert page["items"][0]["key"] == "ana@x.com"
    assert page["items"][0]["fields"] == {"email": "ana@x.com", "City": "Santiago", "Age": 31}
    member = (
        await api.get(f"{platform.segment_url}/v1/profiles/{active_adults}/members/ana@x.com")
    ).json()
    assert member["member"] is True and member["since"]
    outsider = (
        await api.get(f"{platform.segment_url}/v1/profiles/{active_adults}/members/bea@x.com")
    ).json()
    assert outsider == {"key": "bea@x.com", "member": False, "since": None}
    stats = await eventually(
        lambda: api.get(f"{platform.segment_url}/v1/profiles/{santiago}/stats"),
        lambda r: r.json()["by_status"]["unsubscribed"] == 1,
    )
    assert stats.json()["total"] == 3
    assert stats.json()["by_status"] == {
        "active": 2,
        "unsubscribed": 1,
        "bounced": 0,
        "complained": 0,
        "blocked": 0,
    }
    count = await eventually(
        lambda: api.get(f"{platform.segment_url}/v1/profiles/{santiago}/members:count"),
        lambda r: r.json() == {"count": 3},
    )
    assert count.json() == {"count": 3}
    # Found by key prefix, in any case: listed, counted and exported.
    members_url = f"{platform.segment_url}/v1/profiles/{santiago}/members"
    prefixed = await api.get(members_url, params={"key_prefix": "CA"})
    assert [item["key"] for item in prefixed.json()["items"]] == ["caro@x.com"]
    assert (await api.get(f"{members_url}:count", params={"key_prefix": " D"})).json() == {
        "count": 1
    }
    prefixed_export = await api.get(f"{members_url}:export", params={"key_prefix": "Ana"})
    assert [row["email"] for row in csv.DictReader(io.StringIO(prefixed_export.text))] == [
        "ana@x.com"
    ]

    # A page of profiles' statistics in one call, each as its own endpoint answers it; the
    # regular profile is no virtual profile: left out.
    async def page_and_each() -> tuple[Any, dict[str, Any]]:
        page = await api.get(
            f"{platform.segment_url}/v1/stats",
            params={"profile_id": [santiago, active_adults, base["id"]]},
        )
        each = {
            v: (await api.get(f"{platform.segment_url}/v1/profiles/{v}/stats")).json()
            for v in (santiago, active_adults)
        }
        return page.json()["stats"], each

    page_stats, each = await eventually(
        page_and_each, lambda found: found[0] == found[1] and found[1][active_adults]["total"] == 2
    )
    assert page_stats == each
    export = await api.get(f"{platform.segment_url}/v1/profiles/{santiago}/members:export")
    # Laid out as contact-svc exports the base profile, then since when each is a member.
    rows = list(csv.DictReader(io.StringIO(export.text)))
    base_export = await api.get(f"{platform.contact_url}/v1/profiles/{base['id']}/contacts:export")
    base_rows = {row["email"]: row for row in csv.DictReader(io.StringIO(base_export.text))}
    assert export.text.splitlines()[0] == "email,City,Age,status,created_at,updated_at,member_since"
    assert sorted(row["email"] for row in rows) == ["ana@x.com", "caro@x.com", "dora@x.com"]
    for row in rows:
        assert datetime.fromisoformat(row.pop("member_since"))
        assert row == base_rows[row["email"]]

    # Rules changed: the segment is rebuilt, with the differences told and counted.
    changed = await api.patch(
        f"{platform.profile_url}/v1/profiles/{santiago}",
        json={"rules": {"all": [{"field": "Age", "op": "gt", "value": 40}]}},
    )
    assert changed.status_code == 200, changed.text
    assert await eventually(lambda: platform.members(santiago), lambda m: m == {"dora@x.com"}) == {
        "dora@x.com"
    }

    def settled(envelopes: list[EventEnvelope]) -> bool:
        return any(
            e.type == "contacts.segment.rebuilt" and e.data["reason"] == "rules_changed"
            for e in envelopes
        )

    envelopes = await read_envelopes(platform.segments_topic, until=settled)
    assert membership_from(envelopes, santiago) == {"dora@x.com"}
    assert membership_from(envelopes, active_adults) == {"ana@x.com", "dora@x.com"}
    rebuilt = [
        e.data
        for e in envelopes
        if e.type == "contacts.segment.rebuilt" and e.data["segment_id"] == santiago
    ]
    assert rebuilt[-1]["reason"] == "rules_changed"
    assert (rebuilt[-1]["members"], rebuilt[-1]["entered"], rebuilt[-1]["left"]) == (1, 0, 2)
    left = [
        e
        for e in envelopes
        if e.type == "contacts.segment.contact_left" and e.data["key"] == "bea@x.com"
    ]
    assert [e.data["reason"] for e in left] == ["contact_deleted"]
    # One contact's membership events are keyed by the contact: they stay in order.
    assert all(e.subject == f"{base['id']}:{e.data['key']}" for e in envelopes if "key" in e.data)

    preview = await api.post(
        f"{platform.segment_url}/v1/segments:preview",
        json={
            "base_profile_id": base["id"],
            "rules": {"any": [{"field": "City", "op": "starts_with", "value": "san"}]},
        },
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["count"] == 3 and len(preview.json()["sample"]) == 3
    wrong = await api.post(
        f"{platform.segment_url}/v1/segments:preview",
        json={
            "base_profile_id": base["id"],
            "rules": {"all": [{"field": "Town", "op": "equals", "value": "x"}]},
        },
    )
    assert wrong.status_code == 422
    assert wrong.headers["content-type"] == "application/problem+json"
    assert "Town" in wrong.json()["detail"]


async def test_a_killed_worker_resumes_without_losing_or_doubling_membership_events(
    platform: Platform, read_envelopes: Any
) -> None:
    api = platform.api
    base = await platform.base_profile("Kill", [{"name": "Score", "type": "number"}])
    high = await virtual_profile(
        platform, base["id"], "High", {"all": [{"field": "Score", "op": "gte", "value": 50}]}
    )
    contacts = f"{platform.contact_url}/v1/profiles/{base['id']}/contacts"
    rounds = 3
    for round_ in range(rounds):
        batch = [{"email": f"k{i}@x.com", "Score": (i * 7 + round_ * 31) % 100} for i in range(300)]
        answer = await api.post(f"{contacts}:batch", json={"contacts": batch})
        assert answer.status_code == 200 and answer.json()["rejected"] == 0, answer.text
        if round_ == 1:
            await asyncio.sleep(0.3)
            platform.worker.kill(signal.SIGKILL)
            platform.worker.start()
    expected = {f"k{i}@x.com" for i in range(300) if (i * 7 + (rounds - 1) * 31) % 100 >= 50}
    members = await eventually(lambda: platform.members(high), lambda m: m == expected, timeout=90)
    assert members == expected
    # Counted once each, though the kill made the worker publish some events again.
    count = await eventually(
        lambda: api.get(f"{platform.segment_url}/v1/profiles/{high}/members:count"),
        lambda r: r.json() == {"count": len(expected)},
    )
    assert count.json() == {"count": len(expected)}

    def complete(envelopes: list[EventEnvelope]) -> bool:
        return membership_from(envelopes, high) == expected

    envelopes = await read_envelopes(platform.segments_topic, until=complete, timeout=90)
    assert membership_from(envelopes, high) == expected
    # A copy republished after the kill carries its first id; no change is told twice apart.
    transitions = [
        (e.type, e.data["key"], e.data["contact_version"])
        for e in {e.id: e for e in envelopes if e.data.get("segment_id") == high}.values()
        if e.type != "contacts.segment.rebuilt"
    ]
    assert len(transitions) == len(set(transitions))


async def test_a_page_of_profiles_counts_what_their_contacts_and_members_hold(
    platform: Platform, send_webhook: Any
) -> None:
    """The console's List Profiles page: one page of profiles, then the statistics of its
    regular profiles from contact-svc and of its virtual ones from segment-svc, one call each.
    After an import, a webhook, a deletion and a bulk action, every count equals what the
    profile's own statistics say and what listing its contacts or members finds."""
    api = platform.api
    base = await platform.base_profile("Counted", [{"name": "City", "type": "text"}])
    other = await platform.base_profile("Counted too", [])
    lima = await virtual_profile(
        platform, base["id"], "Lima", {"all": [{"field": "City", "op": "equals", "value": "Lima"}]}
    )
    rows = "email,City\n" + "".join(
        f"i{n}@x.com,{'Lima' if n % 2 else 'Quito'}\n" for n in range(8)
    )
    imported = await api.post(
        f"{platform.import_url}/v1/imports",
        data={"profile_id": base["id"], "action": "append"},
        files={"file": ("counted.csv", (rows + "not-an-email,Lima\n").encode())},
    )
    assert imported.status_code == 202, imported.text
    done = await eventually(
        lambda: api.get(f"{platform.import_url}/v1/imports/{imported.json()['id']}"),
        lambda r: r.json()["finished_at"] is not None,
    )
    assert done.json()["counts"]["created"] == 8, done.text
    source = (
        await api.post(
            f"{platform.contact_url}/v1/webhook-sources",
            json={"profile_id": base["id"], "mapping": {"email": "email", "city": "City"}},
        )
    ).json()
    hooked = await send_webhook(
        api,
        f"{platform.contact_url}{source['endpoint']}",
        source["secret"],
        [{"email": "w1@x.com", "city": "Lima"}, {"email": "w2@x.com", "city": "Quito"}],
    )
    assert hooked.status_code == 202, hooked.text
    await platform.contact(other["id"], "o@x.com")
    contacts = f"{platform.contact_url}/v1/profiles/{base['id']}/contacts"
    await eventually(lambda: api.get(f"{contacts}/w1@x.com"), lambda r: r.status_code == 200)
    assert (await api.delete(f"{contacts}/i0@x.com")).status_code == 204
    bulk = await api.post(
        f"{contacts}:bulk",
        json={
            "action": "change_status",
            "status": "bounced",
            "reason": "hard bounce",
            "keys": ["i1@x.com", "i2@x.com"],
        },
    )
    assert bulk.status_code == 202, bulk.text
    await eventually(
        lambda: api.get(f"{platform.contact_url}{bulk.headers['location']}"),
        lambda r: r.json()["state"] == "completed",
    )

    async def truth() -> dict[str, dict[str, int]]:
        """Each profile's contacts (or members) by status, as listing them all finds."""
        found: dict[str, dict[str, int]] = {}
        for profile_id, url in (
            (base["id"], contacts),
            (other["id"], f"{platform.contact_url}/v1/profiles/{other['id']}/contacts"),
            (lima, f"{platform.segment_url}/v1/profiles/{lima}/members"),
        ):
            items = (await api.get(url, params={"limit": 100})).json()["items"]
            found[profile_id] = dict(Counter(item["status"] for item in items))
        return found

    async def page_counts() -> tuple[dict[str, dict[str, int]], dict[str, Any], dict[str, Any]]:
        page = (await api.get(f"{platform.profile_url}/v1/profiles", params={"limit": 50})).json()
        regular = [p["id"] for p in page["items"] if p["type"] == "regular"]
        virtual = [p["id"] for p in page["items"] if p["type"] == "virtual"]
        regular_stats, virtual_stats = await asyncio.gather(
            api.get(f"{platform.contact_url}/v1/stats", params={"profile_id": regular}),
            api.get(f"{platform.segment_url}/v1/stats", params={"profile_id": virtual}),
        )
        counted = regular_stats.json()["stats"] | virtual_stats.json()["stats"]
        each = {
            profile_id: (
                await api.get(
                    f"{platform.contact_url if profile_id in regular else platform.segment_url}"
                    f"/v1/profiles/{profile_id}/stats"
                )
            ).json()
            for profile_id in counted
        }
        by_status = {
            profile_id: {status: n for status, n in stats["by_status"].items() if n}
            for profile_id, stats in counted.items()
        }
        return by_status, counted, each

    expected = {
        base["id"]: {"active": 7, "bounced": 2},
        other["id"]: {"active": 1},
        lima: {"active": 4, "bounced": 1},  # i1 bounced stays a member
    }
    assert await eventually(truth, lambda found: found == expected) == expected
    by_status, counted, each = await eventually(page_counts, lambda found: found[0] == expected)
    assert by_status == expected
    assert counted == each
    assert counted[base["id"]]["total"] == 9 and counted[lima]["total"] == 5
