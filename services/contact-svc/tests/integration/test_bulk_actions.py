"""Bulk actions through the API on the real stack: a status change by filter and a deletion by
keys, answered at once and done through `contacts.commands`, each contact changed once and told
by one event; bad requests refused naming what is wrong; another account touches nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from contact_svc.settings import ContactSettings
from contacts_shared.events import ContactDeleted, ContactStatusChanged, event_of

pytestmark = pytest.mark.integration

CITIES = ["Santiago", "San Antonio", "Valparaíso", "Viña del Mar"]


async def finished(contacts: httpx.AsyncClient, location: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        job: dict[str, Any] = (await contacts.get(location)).json()
        if job["state"] in ("completed", "failed"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.2)


async def keys_listed(contacts: httpx.AsyncClient, base: str, **params: Any) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:
        query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (await contacts.get(base, params=query)).json()
        found |= {item["key"] for item in page["items"]}
        if not (cursor := page["next_cursor"]):
            return found


async def test_a_status_change_by_filter_changes_each_selected_contact_once(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
    known_profile: Any,
    read_envelopes: Any,
    contact_settings: ContactSettings,
) -> None:
    _, contacts = services
    profile = await known_profile(name="Bulk", fields=[{"name": "Ciudad", "type": "text"}])
    base = f"/v1/profiles/{profile['id']}/contacts"
    everyone = [f"c{n:04d}@bulk.example" for n in range(2400)]
    for start in range(0, len(everyone), 1000):
        batch = [
            {"email": key, "Ciudad": CITIES[n % len(CITIES)]}
            for n, key in enumerate(everyone[start : start + 1000], start=start)
        ]
        answer = await contacts.post(f"{base}:batch", json={"contacts": batch})
        assert answer.status_code == 200, answer.text
    san = {key for n, key in enumerate(everyone) if CITIES[n % len(CITIES)].startswith("San")}
    # One of them is unsubscribed already: selected, counted unchanged, not told again.
    already = sorted(san)[0]
    patched = await contacts.patch(f"{base}/{already}", json={"status": "unsubscribed"})
    assert patched.status_code == 200

    started = await contacts.post(
        f"{base}:bulk",
        json={
            "action": "change_status",
            "status": "unsubscribed",
            "reason": "campaign cleanup",
            "filter": {"field": "Ciudad", "value_prefix": "san"},
        },
    )
    assert started.status_code == 202, started.text
    accepted = started.json()
    assert accepted["state"] == "queued" and accepted["total"] == len(san)
    location = started.headers["location"]
    assert location == f"/v1/bulk-actions/{accepted['id']}"

    job = await finished(contacts, location)
    assert job["state"] == "completed", job
    assert job["counts"] == {
        "changed": len(san) - 1,
        "unchanged": 1,
        "deleted": 0,
        "not_found": 0,
    }
    assert job["selected"] == len(san) and job["percent"] == 100.0
    assert await keys_listed(contacts, base, status="unsubscribed") == san
    assert await keys_listed(contacts, base, source=f"bulk:{job['id']}") == san - {already}
    one = (await contacts.get(f"{base}/{sorted(san)[1]}")).json()
    assert one["status_reason"] == "campaign cleanup" and one["version"] == 2

    def told(envelopes: list[Any]) -> Counter[str]:
        return Counter(
            event.contact.key
            for envelope in envelopes
            if (parsed := event_of(envelope.model_dump_json().encode())) is not None
            and isinstance(event := parsed[1], ContactStatusChanged)
            and event.contact.source == f"bulk:{job['id']}"
        )

    events = await read_envelopes(
        contact_settings.topic_contacts_events,
        until=lambda found: sum(told(found).values()) >= len(san) - 1,
    )
    assert told(events) == Counter(dict.fromkeys(san - {already}, 1))
    listed = await contacts.get(f"/v1/profiles/{profile['id']}/bulk-actions")
    assert [item["id"] for item in listed.json()["items"]] == [job["id"]]


async def test_a_deletion_by_keys_counts_what_the_profile_does_not_hold(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
    known_profile: Any,
    read_envelopes: Any,
    contact_settings: ContactSettings,
) -> None:
    _, contacts = services
    profile = await known_profile(name="Delete", fields=[])
    other = await known_profile(name="Other", fields=[])
    base = f"/v1/profiles/{profile['id']}/contacts"
    held = [f"d{n}@bulk.example" for n in range(5)]
    await contacts.post(f"{base}:batch", json={"contacts": [{"email": k} for k in held]})
    await contacts.post(
        f"/v1/profiles/{other['id']}/contacts:batch",
        json={"contacts": [{"email": "elsewhere@bulk.example"}]},
    )

    started = await contacts.post(
        f"{base}:bulk",
        json={
            "action": "delete",
            # Named twice and in capitals: one contact; another profile's: not held here.
            "keys": [*held[:3], "D0@Bulk.Example", "elsewhere@bulk.example"],
        },
    )
    assert started.status_code == 202, started.text
    assert started.json()["total"] == 4
    job = await finished(contacts, started.headers["location"])
    assert job["counts"] == {"changed": 0, "unchanged": 0, "deleted": 3, "not_found": 1}
    assert await keys_listed(contacts, base) == set(held[3:])
    kept = await contacts.get(f"/v1/profiles/{other['id']}/contacts/elsewhere@bulk.example")
    assert kept.status_code == 200

    def deleted(envelopes: list[Any]) -> list[str]:
        return [
            event.key
            for envelope in envelopes
            if (parsed := event_of(envelope.model_dump_json().encode())) is not None
            and isinstance(event := parsed[1], ContactDeleted)
        ]

    events = await read_envelopes(
        contact_settings.topic_contacts_events, until=lambda found: len(deleted(found)) >= 3
    )
    assert sorted(deleted(events)) == held[:3]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "change_status", "keys": ["a@x.io"]}, "status"),
        ({"action": "delete", "keys": ["a@x.io"], "filter": {}}, "keys"),
        ({"action": "delete"}, "keys"),
        ({"action": "delete", "keys": ["a@x.io", "not an email"]}, "keys[1]"),
        ({"action": "delete", "filter": {"field": "Nope", "value": "x"}}, "field"),
        ({"action": "delete", "filter": {"colour": "red"}}, "colour"),
        ({"action": "delete", "filter": {"source": "elsewhere"}}, "source"),
        ({"action": "archive", "filter": {}}, "action"),
    ],
)
async def test_a_bad_bulk_action_is_refused_naming_what_is_wrong(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
    known_profile: Any,
    body: dict[str, Any],
    field: str,
) -> None:
    _, contacts = services
    profile = await known_profile(name="Refusals", fields=[])
    refused = await contacts.post(f"/v1/profiles/{profile['id']}/contacts:bulk", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert field in refused.text
    listed = await contacts.get(f"/v1/profiles/{profile['id']}/bulk-actions")
    assert listed.json()["items"] == []


async def test_another_account_can_neither_start_nor_read_a_bulk_action(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Mine", fields=[])
    base = f"/v1/profiles/{profile['id']}/contacts"
    await contacts.post(f"{base}:batch", json={"contacts": [{"email": "mine@bulk.example"}]})
    started = await contacts.post(f"{base}:bulk", json={"action": "delete", "filter": {}})
    job = await finished(contacts, started.headers["location"])
    assert job["counts"]["deleted"] == 1

    theirs = {"Authorization": "Bearer key-b"}
    refused = await contacts.post(
        f"{base}:bulk", json={"action": "delete", "filter": {}}, headers=theirs
    )
    assert refused.status_code == 404
    assert (await contacts.get(started.headers["location"], headers=theirs)).status_code == 404
    listed = await contacts.get(f"/v1/profiles/{profile['id']}/bulk-actions", headers=theirs)
    assert listed.status_code == 404
