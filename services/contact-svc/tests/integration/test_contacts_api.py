"""contact-svc over HTTP against the real MongoDB-protocol server and Kafka, with the profile
schemas arriving from profile-svc's events."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from contact_svc.contact_documents import in_sample
from contact_svc.contact_repository import MongoContactRepository
from contact_svc.domain import Contact
from contact_svc.settings import ContactSettings
from contact_svc.suppression_repository import MongoSuppressionStore
from contacts_shared.events import ContactCreated, ContactDeleted, parse_event
from contacts_shared.journal import EventJournal
from contacts_shared.outbox import PENDING_FILTER
from contacts_shared.schema import ContactStatus

pytestmark = pytest.mark.integration

Services = tuple[httpx.AsyncClient, httpx.AsyncClient]
FIELDS = [
    {"name": "Nombre", "required": True},
    {"name": "Ciudad"},
    {"name": "Edad", "type": "number"},
    {"name": "Fecha de Nacimiento", "type": "date"},
]


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


async def test_concurrent_patches_of_one_contact_all_succeed_and_all_stay(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    fields = [{"name": f"Campo {n}"} for n in range(40)]
    profile = await known_profile(name="Concurrida", fields=fields)
    base = f"/v1/profiles/{profile['id']}/contacts"
    assert (await contacts.post(base, json={"fields": {"email": "ana@example.com"}})).is_success
    responses = await asyncio.gather(
        *(
            contacts.patch(f"{base}/ana@example.com", json={"fields": {f"Campo {n}": f"v{n}"}})
            for n in range(40)
        )
    )
    assert [r.status_code for r in responses] == [200] * 40, [r.text for r in responses]
    final = (await contacts.get(f"{base}/ana@example.com")).json()
    assert final["version"] == 41
    assert final["fields"] == {"email": "ana@example.com"} | {
        f"Campo {n}": f"v{n}" for n in range(40)
    }


async def test_contacts_are_created_read_patched_replaced_and_deleted(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Clientes", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    created = await contacts.post(
        base,
        json={
            "fields": {
                "email": " Ana@Example.com ",
                "Nombre": "Ana",
                "edad": "41",
                "Fecha de Nacimiento": "05/03/1985",
            }
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["key"] == "ana@example.com"
    assert created.json()["fields"] == {
        "email": "ana@example.com",
        "Nombre": "Ana",
        "Edad": 41,
        "Fecha de Nacimiento": "1985-03-05",
    }
    assert created.headers["location"] == f"{base}/ana@example.com"
    again = await contacts.post(
        base, json={"fields": {"email": "ana@example.com", "Nombre": "Ana"}}
    )
    problem(again, 409)
    assert [e["field"] for e in again.json()["errors"]] == ["email"]  # a form shows it there

    patched = await contacts.patch(f"{base}/ANA@example.com", json={"fields": {"Ciudad": "Lima"}})
    assert patched.status_code == 200 and patched.json()["version"] == 2
    assert patched.json()["fields"]["Ciudad"] == "Lima" and patched.json()["fields"]["Edad"] == 41

    replaced = await contacts.put(f"{base}/ana@example.com", json={"fields": {"Nombre": "Ana M"}})
    assert replaced.status_code == 200
    assert replaced.json()["fields"] == {"email": "ana@example.com", "Nombre": "Ana M"}

    unsubscribed = await contacts.patch(
        f"{base}/ana@example.com", json={"status": "unsubscribed", "status_reason": "asked"}
    )
    body = unsubscribed.json()
    assert (body["status"], body["status_reason"], body["version"]) == ("unsubscribed", "asked", 4)

    assert (await contacts.delete(f"{base}/ana@example.com")).status_code == 204
    problem(await contacts.get(f"{base}/ana@example.com"), 404)
    again = await contacts.put(f"{base}/ana@example.com", json={"fields": {"Nombre": "Ana"}})
    assert again.status_code == 201 and again.json()["version"] == 6  # continues after deletion


async def test_bad_values_are_named_and_nothing_is_written(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Strict", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    body = problem(
        await contacts.post(
            base, json={"fields": {"email": "not-an-email", "Edad": "old", "Color": "red"}}
        ),
        422,
    )
    assert {e["field"] for e in body["errors"]} == {"email"}
    body = problem(
        await contacts.post(
            base,
            json={
                "fields": {
                    "email": "b@example.com",
                    "Edad": "old",
                    "Color": "red",
                    "Fecha de Nacimiento": "31/02/2020",
                }
            },
        ),
        422,
    )
    assert {e["field"] for e in body["errors"]} == {
        "Edad",
        "Color",
        "Fecha de Nacimiento",
        "Nombre",
    }
    problem(await contacts.get(f"{base}/b@example.com"), 404)
    problem(await contacts.post(base, json={"fields": {"Nombre": "No email"}}), 422)
    problem(
        await contacts.post(base, content=b"{", headers={"content-type": "application/json"}), 400
    )
    problem(
        await contacts.put(
            f"{base}/a@example.com", json={"fields": {"email": "b@example.com", "Nombre": "x"}}
        ),
        422,
    )


async def test_unknown_foreign_and_virtual_profiles_are_refused(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Mine", fields=FIELDS)
    segment = await known_profile(
        name="Seg",
        type="virtual",
        base_profile_id=profile["id"],
        rules={"all": [{"field": "Edad", "op": "gt", "value": 1}]},
    )
    body = {"fields": {"email": "a@example.com", "Nombre": "A"}}
    problem(await contacts.post("/v1/profiles/000000000000000000000000/contacts", json=body), 404)
    other = {"Authorization": "Bearer key-b"}
    problem(
        await contacts.post(f"/v1/profiles/{profile['id']}/contacts", json=body, headers=other), 404
    )
    problem(await contacts.post(f"/v1/profiles/{segment['id']}/contacts", json=body), 409)


async def test_an_unknown_old_profile_is_answered_at_once(services: Services) -> None:
    """Only a profile minted in the last seconds may still be on its way from profile-svc: any
    other id is 404 without the wait (a mistyped id held a connection 3 s)."""
    _, contacts = services
    old = str(ObjectId.from_datetime(datetime.now(UTC) - timedelta(minutes=1)))
    body = {"fields": {"email": "a@example.com"}}
    problem(await contacts.get(f"/v1/profiles/{old}/contacts"), 404)  # connections warmed
    took = []
    for path in (f"/v1/profiles/{old}/contacts", "/v1/profiles/not-an-id/contacts"):
        started = time.perf_counter()
        problem(await contacts.post(path, json=body), 404)
        took.append(time.perf_counter() - started)
    # The wait for a profile on its way is 3 s (`profile_wait_seconds`): well under it, the
    # answer did not wait, however loaded the machine running the tests.
    assert max(took) < 1.0, took


async def test_mobile_only_contacts_are_keyed_by_e164(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="SMS", type="mobile_only")
    base = f"/v1/profiles/{profile['id']}/contacts"
    created = await contacts.post(base, json={"fields": {"phone": "9 8765 4321"}})
    assert created.status_code == 201, created.text
    assert created.json()["key"] == "+56987654321"
    assert (await contacts.get(f"{base}/+56 9 8765 4321")).json()["key"] == "+56987654321"


async def test_listing_filters_and_pages(services: Services, known_profile: Any) -> None:
    _, contacts = services
    profile = await known_profile(name="List", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    for index in range(7):
        city = "Lima" if index % 2 else "Quito"
        response = await contacts.post(
            base,
            json={
                "fields": {
                    "email": f"user{index}@example.com",
                    "Nombre": f"U{index}",
                    "Ciudad": city,
                    "Edad": 20 + index,
                }
            },
        )
        assert response.status_code == 201, response.text
    await contacts.patch(f"{base}/user3@example.com", json={"status": "bounced"})

    keys: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await contacts.get(base, params=params)).json()
        keys += [item["key"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert keys == [f"user{i}@example.com" for i in range(7)]
    lima = (await contacts.get(base, params={"field": "ciudad", "value": "Lima"})).json()
    assert [i["key"] for i in lima["items"]] == [
        "user1@example.com",
        "user3@example.com",
        "user5@example.com",
    ]
    aged = (await contacts.get(base, params={"field": "Edad", "value": "22"})).json()
    assert [i["key"] for i in aged["items"]] == ["user2@example.com"]
    bounced = (await contacts.get(base, params={"status": "bounced"})).json()
    assert [i["key"] for i in bounced["items"]] == ["user3@example.com"]
    prefix = (await contacts.get(base, params={"key_prefix": "USER6"})).json()
    assert [i["key"] for i in prefix["items"]] == ["user6@example.com"]

    async def by_email(**params: str) -> list[str]:
        found = await contacts.get(base, params={"field": "email", **params})
        return [i["key"] for i in found.json()["items"]]

    assert await by_email(value=" User4@Example.com") == ["user4@example.com"]
    assert await by_email(value="user4@example.com", key_prefix="user4") == ["user4@example.com"]
    assert await by_email(value="user4@example.com", key_prefix="user5") == []
    newest: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "sort": "-created_at", **({"cursor": cursor} if cursor else {})}
        page = (await contacts.get(base, params=params)).json()
        newest += [item["key"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    everyone = (await contacts.get(base, params={"limit": 100})).json()["items"]
    by_time = sorted(everyone, key=lambda c: c["key"])  # ties (same millisecond) go by key
    by_time.sort(key=lambda c: c["created_at"], reverse=True)
    assert newest == [c["key"] for c in by_time]
    first_page = (await contacts.get(base, params={"limit": 2})).json()
    mixed = await contacts.get(
        base, params={"sort": "-created_at", "cursor": first_page["next_cursor"]}
    )
    assert problem(mixed, 422)["errors"][0]["field"] == "cursor"
    problem(await contacts.get(base, params={"cursor": "garbage"}), 422)
    problem(await contacts.get(base, params={"field": "Nope", "value": "x"}), 422)
    problem(await contacts.get(base, params={"field": "Edad"}), 422)


async def test_contact_events_are_published_in_order(
    services: Services,
    known_profile: Any,
    contact_settings: ContactSettings,
    read_envelopes: Any,
) -> None:
    _, contacts = services
    profile = await known_profile(name="Evented", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    await contacts.post(base, json={"fields": {"email": "e@example.com", "Nombre": "E"}})
    await contacts.patch(f"{base}/e@example.com", json={"fields": {"Edad": 9}})
    await contacts.patch(f"{base}/e@example.com", json={"status": "unsubscribed"})
    await contacts.delete(f"{base}/e@example.com")
    envelopes = await read_envelopes(
        contact_settings.topic_contacts_events, until=lambda found: len(found) >= 4
    )
    assert [e.type for e in envelopes] == [
        "contacts.contact.created",
        "contacts.contact.updated",
        "contacts.contact.status_changed",
        "contacts.contact.deleted",
    ]
    assert {e.subject for e in envelopes} == {f"{profile['id']}:e@example.com"}
    assert {e.accountid for e in envelopes} == {contact_settings.api_keys["key-a"]}
    deleted = parse_event(envelopes[-1])
    assert isinstance(deleted, ContactDeleted) and deleted.version == 4
    updated = parse_event(envelopes[1]).model_dump()
    assert updated["changed"] == ("edad",) and updated["contact"]["fields"]["edad"] == 9


async def test_contact_events_are_cloud_events_in_structured_mode(
    services: Services,
    known_profile: Any,
    contact_settings: ContactSettings,
    read_envelopes: Any,
    read_cloud_events: Any,
) -> None:
    _, contacts = services
    profile = await known_profile(name="Cloud", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    started = datetime.now(UTC)
    # One created through its outbox, a batch's through the journal of the bulk insert.
    one = {"email": "one@example.com", "Nombre": "One"}
    batch = [{"email": f"b{n}@example.com", "Nombre": f"B{n}"} for n in range(3)]
    await contacts.post(base, json={"fields": one})
    assert (await contacts.post(f"{base}:batch", json={"contacts": batch})).is_success
    topic = contact_settings.topic_contacts_events
    read = await read_cloud_events(topic, count=4)
    envelopes = await read_envelopes(topic, until=lambda found: len(found) >= 4)

    assert {r.content_type for r in read} == {"application/cloudevents+json"}
    # The SDK reads every attribute and the data as the services do, none lost or changed.
    assert sorted((r.event for r in read), key=lambda event: event["id"]) == sorted(
        ({**e.model_dump(), "partitionkey": e.subject} for e in envelopes),
        key=lambda event: event["id"],
    )
    events = {event["data"]["contact"]["key"]: event for event in (r.event for r in read)}
    assert sorted(events) == sorted(item["email"] for item in [one, *batch])
    for item in [one, *batch]:
        key, event = item["email"], events[item["email"]]
        assert event["specversion"] == "1.0" and event["id"]
        assert (event["type"], event["source"]) == ("contacts.contact.created", "/contact-svc")
        assert event["subject"] == event["partitionkey"] == f"{profile['id']}:{key}"
        assert started <= event["time"] <= datetime.now(UTC)
        assert event["datacontenttype"] == "application/json"
        assert (event["accountid"], event["dataversion"]) == (
            contact_settings.api_keys["key-a"],
            "1",
        )
        assert event["data"]["contact"]["fields"] == {"email": key, "nombre": item["Nombre"]}
    assert len({event["id"] for event in events.values()}) == 4


async def test_batches_upsert_each_item_and_name_the_bad_ones(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Batch", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    await contacts.post(
        base, json={"fields": {"email": "old@example.com", "Nombre": "Old", "Ciudad": "Quito"}}
    )
    batch = [
        {"email": "new@example.com", "Nombre": "New"},
        {"email": "OLD@example.com", "Edad": 50},
        {"email": "bad", "Edad": "x"},
        {"email": "old@example.com", "Edad": 50},
    ]
    response = await contacts.post(f"{base}:batch", json={"contacts": batch})
    assert response.status_code == 200, response.text
    body = response.json()
    # The two items naming old@ are one change, and both report it.
    assert (body["created"], body["updated"], body["unchanged"], body["rejected"]) == (1, 2, 0, 1)
    assert [item["outcome"] for item in body["items"]] == [
        "created",
        "updated",
        "rejected",
        "updated",
    ]
    again = (await contacts.post(f"{base}:batch", json={"contacts": batch})).json()
    assert [item["outcome"] for item in again["items"]] == [
        "unchanged",
        "unchanged",
        "rejected",
        "unchanged",
    ]
    assert {e["field"] for e in body["items"][2]["errors"]} == {"email"}
    old = (await contacts.get(f"{base}/old@example.com")).json()
    assert old["fields"] == {
        "email": "old@example.com",
        "Nombre": "Old",
        "Ciudad": "Quito",
        "Edad": 50,
    }
    too_many = {"contacts": [{"email": f"u{i}@example.com"} for i in range(1001)]}
    body = problem(await contacts.post(f"{base}:batch", json=too_many), 422)
    assert body["errors"][0]["field"] == "contacts" and "1000" in body["detail"]


async def test_a_batch_is_answered_once_its_events_are_on_kafka(
    services: Services,
    known_profile: Any,
    contact_settings: ContactSettings,
    infrastructure: Any,
    read_envelopes: Any,
) -> None:
    _, contacts = services
    profile = await known_profile(name="Batch events", fields=FIELDS)
    batch = [{"email": f"u{n}@example.com", "Nombre": f"U{n}"} for n in range(1000)]
    response = await contacts.post(
        f"/v1/profiles/{profile['id']}/contacts:batch", json={"contacts": batch}
    )
    assert response.json()["created"] == 1000
    # Answered: every contact's events published and cleared from its outbox already, not
    # left to the relay's loop (which takes 200 documents a pass).
    client = AsyncMongoClient(infrastructure.mongodb_url)
    stored = client[contact_settings.mongodb_database]["contacts"]
    assert await stored.count_documents({"profile_id": profile["id"]}) == 1000
    assert await stored.count_documents({"profile_id": profile["id"], **PENDING_FILTER}) == 0
    await client.close()
    envelopes = await read_envelopes(
        contact_settings.topic_contacts_events,
        until=lambda found: len({e.subject for e in found if e.type.endswith(".created")}) >= 1000,
    )
    assert len({e.subject for e in envelopes if e.type.endswith(".created")}) == 1000


async def test_removed_fields_and_deleted_profiles_reach_the_contacts(
    services: Services,
    known_profile: Any,
    eventually: Any,
    contact_settings: ContactSettings,
    read_envelopes: Any,
) -> None:
    profiles, contacts = services
    profile = await known_profile(name="Doomed", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    for index in range(3):
        response = await contacts.post(
            base,
            json={"fields": {"email": f"d{index}@example.com", "Nombre": "D", "Ciudad": "Lima"}},
        )
        assert response.status_code == 201

    assert (await profiles.delete(f"/v1/profiles/{profile['id']}/fields/Ciudad")).is_success

    async def city_dropped() -> bool:
        found = await contacts.get(f"{base}/d0@example.com")
        return found.status_code == 200 and "Ciudad" not in found.json()["fields"]

    assert await eventually(city_dropped)

    assert (await profiles.delete(f"/v1/profiles/{profile['id']}")).status_code == 204

    async def profile_gone() -> bool:
        return (await contacts.get(base)).status_code == 404

    assert await eventually(profile_gone)
    envelopes = await read_envelopes(
        contact_settings.topic_contacts_events,
        until=lambda found: sum(e.type == "contacts.contact.deleted" for e in found) >= 3,
    )
    deleted = {e.subject for e in envelopes if e.type == "contacts.contact.deleted"}
    assert deleted == {f"{profile['id']}:d{i}@example.com" for i in range(3)}


async def test_export_streams_csv_an_import_would_accept(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Exported", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    for index, city in enumerate(["Lima", "Quito, Centro", "Lima"]):
        await contacts.post(
            base,
            json={
                "fields": {
                    "email": f"x{index}@example.com",
                    "Nombre": f"X{index}",
                    "Ciudad": city,
                    "Edad": 30 + index,
                }
            },
        )
    await contacts.patch(f"{base}/x1@example.com", json={"status": "unsubscribed"})

    export = await contacts.get(f"{base}:export")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0] == [
        "email",
        "Nombre",
        "Ciudad",
        "Edad",
        "Fecha de Nacimiento",
        "status",
        "created_at",
        "updated_at",
    ]
    assert [row[:6] for row in rows[1:]] == [
        ["x0@example.com", "X0", "Lima", "30", "", "active"],
        ["x1@example.com", "X1", "Quito, Centro", "31", "", "unsubscribed"],
        ["x2@example.com", "X2", "Lima", "32", "", "active"],
    ]

    other = {"Authorization": "Bearer key-b"}
    problem(await contacts.get(f"{base}:export", headers=other), 404)


async def test_an_unsubscribe_anywhere_suppresses_the_email_in_the_account(
    services: Services, known_profile: Any, eventually: Any
) -> None:
    _, contacts = services
    first = await known_profile(name="Newsletter", fields=FIELDS)
    second = await known_profile(name="Promos", fields=FIELDS)
    third = await known_profile(name="Later", fields=FIELDS)
    body = {"fields": {"email": "gone@example.com", "Nombre": "G"}}
    assert (await contacts.post(f"/v1/profiles/{first['id']}/contacts", json=body)).is_success
    await contacts.patch(
        f"/v1/profiles/{first['id']}/contacts/gone@example.com",
        json={"status": "unsubscribed", "status_reason": "link in email"},
    )

    async def suppressed_when_added() -> bool:
        path = f"/v1/profiles/{second['id']}/contacts"
        created = await contacts.put(f"{path}/gone@example.com", json=body)
        if created.json()["status"] == "unsubscribed":
            return True
        await contacts.delete(f"{path}/gone@example.com")  # too early: try again
        return False

    assert await eventually(suppressed_when_added)
    added = (await contacts.get(f"/v1/profiles/{second['id']}/contacts/gone@example.com")).json()
    assert added["status_source"] == "suppression" and first["id"] in added["status_reason"]
    other = {"Authorization": "Bearer key-b"}  # another account knows nothing of it
    assert (
        await contacts.post(f"/v1/profiles/{first['id']}/contacts", json=body, headers=other)
    ).status_code == 404

    # A manual re-activation lifts the suppression for later additions.
    await contacts.patch(
        f"/v1/profiles/{first['id']}/contacts/gone@example.com", json={"status": "active"}
    )

    async def active_when_added() -> bool:
        path = f"/v1/profiles/{third['id']}/contacts"
        created = await contacts.put(f"{path}/gone@example.com", json=body)
        if created.json()["status"] == "active":
            return True
        await contacts.delete(f"{path}/gone@example.com")
        return False

    assert await eventually(active_when_added)


async def test_source_filters_combine_and_counts_agree_with_the_listing(
    services: Services,
    known_profile: Any,
    contact_settings: ContactSettings,
    eventually: Any,
) -> None:
    _, contacts = services
    profile = await known_profile(name="Sources", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    for index in range(4):
        fields = {"email": f"api{index}@example.com", "Nombre": "A", "Ciudad": "Lima"}
        assert (await contacts.post(base, json={"fields": fields})).status_code == 201
    await contacts.patch(f"{base}/api1@example.com", json={"status": "bounced"})
    # Contacts an import wrote, through the repository an import's rows are applied by.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        contact_settings.mongodb_url, tz_aware=True
    )
    database = client[contact_settings.mongodb_database]
    imported = MongoContactRepository(
        database["contacts"],
        contact_settings,
        suppressions=MongoSuppressionStore(database["suppressions"]),
        events_queued=lambda *_: None,
        journal=EventJournal(database["contacts_journal"], database["contacts"], lease_seconds=30),
    )
    now = datetime.now(UTC)
    written = [
        Contact(
            account_id=contact_settings.api_keys["key-a"],
            profile_id=profile["id"],
            key=key,
            fields={"email": key, "nombre": "I", "ciudad": city},
            status=ContactStatus.ACTIVE,
            status_source="import:imp-1",
            status_changed_at=now,
            source="import:imp-1",
            created_at=now,
            updated_at=now,
        )
        for key, city in (("api9@example.com", "Quito"), ("imp@example.com", "Lima"))
    ]
    for contact in written:  # published, so that the statistics count them
        contact.events.append(ContactCreated(contact=contact.snapshot()))
    await imported.add_many(written)
    await client.close()
    # The source is the last change's: an imported contact edited through the API is `api`.
    await contacts.patch(f"{base}/imp@example.com", json={"fields": {"Nombre": "Edited"}})

    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"source": "import:imp-1"}, ["api9@example.com"]),
        ({"source": "api"}, [f"api{i}@example.com" for i in range(4)] + ["imp@example.com"]),
        ({"source": "api", "status": "bounced"}, ["api1@example.com"]),
        ({"source": "api", "key_prefix": "API"}, [f"api{i}@example.com" for i in range(4)]),
        ({"source": "import:imp-1", "key_prefix": "api"}, ["api9@example.com"]),
        (
            {"source": "api", "field": "Ciudad", "value": "Lima", "key_prefix": "imp"},
            ["imp@example.com"],
        ),
        ({"source": "webhook:none"}, []),
        ({"key_prefix": "api"}, [f"api{i}@example.com" for i in range(4)] + ["api9@example.com"]),
        ({"field": "Ciudad", "value": "Quito"}, ["api9@example.com"]),
        ({"status": "bounced"}, ["api1@example.com"]),
        (
            {},
            sorted(
                [f"api{i}@example.com" for i in range(4)] + ["api9@example.com", "imp@example.com"]
            ),
        ),
    ]
    for params, expected in cases:
        for sort in ("key", "-created_at"):
            listed = await contacts.get(base, params={**params, "sort": sort, "limit": 100})
            assert sorted(i["key"] for i in listed.json()["items"]) == expected, (params, sort)

        async def agrees(params: dict[str, str] = params, expected: list[str] = expected) -> bool:
            counted = await contacts.get(f"{base}:count", params=params)
            assert counted.status_code == 200, counted.text
            return bool(counted.json()["count"] == len(expected))

        # None or a status alone is read from the statistics, which follow the events.
        assert await eventually(agrees), params

    for bad in ("imports:x", "webhook:", "API", "import: x"):
        for path in (base, f"{base}:count"):
            refused = problem(await contacts.get(path, params={"source": bad}), 422)
            assert refused["errors"][0]["field"] == "source", refused


async def test_value_prefix_search_ignores_case_and_accents_and_counts_agree(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Towns", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    towns = ["Viña del Mar", "VIÑAS", "Ñuñoa", "Valparaíso", "Viña del Mar", "vina"]
    for index, town in enumerate(towns):
        fields = {"email": f"t{index}@example.com", "Nombre": "T", "Ciudad": town}
        assert (await contacts.post(base, json={"fields": fields})).status_code == 201
    await contacts.patch(f"{base}/t4@example.com", json={"status": "bounced"})

    cases: list[tuple[dict[str, str], list[int]]] = [
        ({"value_prefix": "vina"}, [0, 1, 4, 5]),
        ({"value_prefix": "VIÑA"}, [0, 1, 4, 5]),
        ({"value_prefix": "viña d"}, [0, 4]),
        ({"value_prefix": "nunoa"}, [2]),
        ({"value_prefix": "VALPARAISO"}, [3]),
        ({"value_prefix": "vina", "status": "bounced"}, [4]),
        ({"value_prefix": "vina", "key_prefix": "T1"}, [1]),
        ({"value_prefix": "lima"}, []),
    ]
    for params, indexes in cases:
        expected = [f"t{i}@example.com" for i in indexes]
        query = {"field": "ciudad", **params}
        walked: list[str] = []
        cursor = None
        while True:  # one contact a page: the cursor carries on in key order
            paged = {**query, "limit": "1", **({"cursor": cursor} if cursor else {})}
            page = (await contacts.get(base, params=paged)).json()
            walked += [item["key"] for item in page["items"]]
            if not (cursor := page["next_cursor"]):
                break
        assert walked == expected, params
        counted = await contacts.get(f"{base}:count", params=query)
        assert counted.json()["count"] == len(expected), (params, counted.text)
    by_email = await contacts.get(base, params={"field": "email", "value_prefix": "T3@EX"})
    assert [i["key"] for i in by_email.json()["items"]] == ["t3@example.com"]

    refusals = [
        ({"field": "Edad", "value_prefix": "4"}, "value_prefix"),
        ({"field": "Fecha de Nacimiento", "value_prefix": "2020"}, "value_prefix"),
        ({"field": "Ciudad", "value": "Lima", "value_prefix": "li"}, "value_prefix"),
        ({"value_prefix": "li"}, "field"),
        ({"field": "Ciudad", "value_prefix": "ß" * 33}, "value_prefix"),  # 66 once folded
    ]
    for params, named in refusals:
        for path in (base, f"{base}:count"):
            refused = problem(await contacts.get(path, params=params), 422)
            assert refused["errors"][0]["field"] == named, (params, refused)


async def test_openapi_shows_the_value_prefix_parameter(services: Services) -> None:
    _, contacts = services
    paths = (await contacts.get("/openapi.json")).json()["paths"]
    for path in ("/v1/profiles/{profile_id}/contacts", "/v1/profiles/{profile_id}/contacts:count"):
        parameters = {p["name"]: p for p in paths[path]["get"]["parameters"]}
        assert "accents" in parameters["value_prefix"]["description"]


async def walk(contacts: httpx.AsyncClient, base: str, **params: str) -> list[str]:
    """The keys of every page of the listing, two contacts a page, following the cursors."""
    walked: list[str] = []
    cursor = None
    while True:
        paged = {**params, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await contacts.get(base, params=paged)).json()
        walked += [item["key"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            return walked


async def test_contacts_sort_by_a_field_named_as_the_api_names_it(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Sorted", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    people = [  # key, Ciudad, Edad, Fecha de Nacimiento
        ("a", "Ñuñoa", 9, "1990-05-01"),
        ("b", "lima", 10, None),
        ("c", "Arica", None, "2001-01-31"),
        ("d", "Valparaíso", 10.0, "1985-12-24"),
        ("e", None, -3.5, "1990-05-02"),
        ("f", "LIMA", 100, "1979-07-07"),
    ]
    batch = []
    for key, city, age, born in people:
        values = {"Ciudad": city, "Edad": age, "Fecha de Nacimiento": born}
        given = {name: value for name, value in values.items() if value is not None}
        batch.append({"email": f"{key}@example.com", "Nombre": key.upper(), **given})
    assert (await contacts.post(f"{base}:batch", json={"contacts": batch})).is_success
    await contacts.patch(f"{base}/d@example.com", json={"status": "bounced"})
    await contacts.patch(f"{base}/f@example.com", json={"status": "bounced"})

    cases: list[tuple[dict[str, str], str]] = [
        ({"sort": "Edad"}, "eabdfc"),  # numbers as numbers (10 after 9), ties (10, 10.0) by key
        ({"sort": "-Edad"}, "fdbaec"),  # reversed; those without an age still last
        ({"sort": "ciudad"}, "cbfade"),  # case and accents ignored: arica, lima, lima, ...
        ({"sort": "-Fecha de Nacimiento"}, "ceadfb"),
        ({"sort": "Edad", "status": "bounced"}, "df"),
        ({"sort": "-Ciudad", "field": "Ciudad", "value_prefix": "li"}, "fb"),
        ({"sort": "Edad", "key_prefix": "C"}, "c"),
    ]
    for params, order in cases:
        assert await walk(contacts, base, **params) == [f"{k}@example.com" for k in order], params

    unknown = problem(await contacts.get(base, params={"sort": "-Edades"}), 422)
    assert unknown["errors"][0]["field"] == "sort" and "Edades" in unknown["errors"][0]["message"]
    by_age = (await contacts.get(base, params={"sort": "Edad", "limit": 1})).json()
    other = await contacts.get(base, params={"sort": "-Edad", "cursor": by_age["next_cursor"]})
    assert problem(other, 422)["errors"][0]["field"] == "cursor"
    by_key = await contacts.get(base, params={"sort": "key", "cursor": by_age["next_cursor"]})
    assert problem(by_key, 422)["errors"][0]["field"] == "cursor"

    paths = (await contacts.get("/openapi.json")).json()["paths"]
    parameters = {
        p["name"]: p for p in paths["/v1/profiles/{profile_id}/contacts"]["get"]["parameters"]
    }
    assert "a field's name" in parameters["sort"]["description"]


async def test_a_count_of_many_matches_is_estimated_unless_asked_exactly(
    services: Services, known_profile: Any
) -> None:
    """Contacts whose keys are all in the profile's sample: 30 of them count as 30 * 256."""
    _, contacts = services
    profile = await known_profile(name="Sampled", fields=FIELDS)
    base = f"/v1/profiles/{profile['id']}/contacts"
    keys = [f"s{n}@example.com" for n in range(20000) if in_sample(f"s{n}@example.com")][:30]
    assert len(keys) == 30
    batch = [{"email": key, "Nombre": "S", "Ciudad": "Lima"} for key in keys]
    assert (await contacts.post(f"{base}:batch", json={"contacts": batch})).is_success

    by_city = {"field": "Ciudad", "value": "Lima"}
    estimated = (await contacts.get(f"{base}:count", params=by_city)).json()
    assert estimated == {"count": 7700, "exact": False, "status": None}  # 30 * 256 = 7,680
    exact = await contacts.get(f"{base}:count", params={**by_city, "exact": "true"})
    assert exact.json() == {"count": 30, "exact": True, "status": None}
    few = (await contacts.get(f"{base}:count", params={"key_prefix": "s1"})).json()
    assert few == {
        "count": len([k for k in keys if k.startswith("s1")]),
        "exact": True,
        "status": None,
    }
