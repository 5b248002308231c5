"""The audit trail served by a real log-svc from profiles.events and contacts.events: fields by
their names, old -> new, newest first or oldest first with cursors by version, and nothing of
a contact erased at the person's request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactStatusChanged,
    ContactUpdated,
    DomainEvent,
    ProfileCreated,
    ProfileFieldRemoved,
    to_envelope,
)
from contacts_shared.kafka import EventPublisher, OutgoingMessage
from contacts_shared.schema import (
    ContactSnapshot,
    ContactStatus,
    FieldSpec,
    FieldType,
    ProfileSnapshot,
    ProfileType,
)
from log_svc.app import create_app
from log_svc.settings import LogSettings

pytestmark = pytest.mark.integration

AT = datetime(2026, 5, 1, tzinfo=UTC)
EMAIL = FieldSpec(name="Email", key="email", type=FieldType.EMAIL, required=True, identity=True)
CITY = FieldSpec(name="Ciudad", key="ciudad", type=FieldType.TEXT)
COLOR = FieldSpec(name="Color favorito", key="color_favorito", type=FieldType.TEXT)
Publish = Callable[..., Awaitable[None]]


@pytest.fixture
async def log_api(
    infrastructure: Any, unique: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Publish, str]]:
    account = f"acct-a-{unique}"
    settings = LogSettings(
        environment="test",
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"log_svc_{unique}",
        topic_imports_events=f"imports.events.{unique}",
        topic_contacts_events=f"contacts.events.{unique}",
        topic_profiles_events=f"profiles.events.{unique}",
        imports_events_group=f"log-i-{unique}",
        contacts_events_group=f"log-c-{unique}",
        profile_events_group=f"log-p-{unique}",
        api_keys={"key-a": account, "key-b": f"acct-b-{unique}"},
    )
    topics = [settings.topic_contacts_events, settings.topic_profiles_events]
    publisher = EventPublisher(
        settings.kafka_bootstrap_servers,
        client_id="test",
        topics=topics,
        partitions=settings.topic_partitions,
    )

    async def publish(topic: str, *events: DomainEvent) -> None:
        for event in events:  # one at a time: their order on the topic is the test's
            envelope = to_envelope(event, account_id=account, source="/test")
            message = OutgoingMessage(topic, envelope.subject, envelope.model_dump_json().encode())
            await publisher.publish([message])

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://log-svc",
            headers={"Authorization": "Bearer key-a"},
        ) as api:
            yield api, publish, account
    await publisher.close()


def profile(account: str, version: int, *fields: FieldSpec) -> ProfileSnapshot:
    return ProfileSnapshot(
        id="p1",
        account_id=account,
        name="Clientes",
        description="",
        type=ProfileType.REGULAR,
        fields=fields,
        version=version,
        created_at=AT,
        updated_at=AT,
    )


def contact(account: str, version: int, status: str = "active", **values: Any) -> ContactSnapshot:
    return ContactSnapshot(
        id="p1:ana@x.cl",
        account_id=account,
        profile_id="p1",
        key="ana@x.cl",
        fields={"email": "ana@x.cl"} | values,
        status=ContactStatus(status),
        status_reason=None if status == "active" else "complained",
        status_source="api",
        status_changed_at=AT,
        source="api",
        version=version,
        created_at=AT,
        updated_at=AT,
    )


def changes(page: dict[str, Any]) -> list[tuple[int, list[tuple[str, Any, Any]]]]:
    return [
        (e["version"], [(c["field"], c["old"], c["new"]) for c in e["changes"]])
        for e in page["items"]
    ]


async def test_the_trail_tells_fields_by_name_old_to_new_newest_first_in_pages(
    log_api: tuple[httpx.AsyncClient, Publish, str], unique: str, eventually: Any
) -> None:
    api, publish, account = log_api
    profiles, contacts = f"profiles.events.{unique}", f"contacts.events.{unique}"
    with_color = profile(account, 2, EMAIL, CITY, COLOR)
    await publish(profiles, ProfileCreated(profile=with_color))
    # Then the color field is removed: its changes keep its key as name.
    await publish(
        profiles, ProfileFieldRemoved(profile=profile(account, 3, EMAIL, CITY), field=COLOR)
    )
    await publish(
        contacts,
        ContactCreated(contact=contact(account, 1, ciudad="Lima")),
        ContactUpdated(
            contact=contact(account, 2, ciudad="Viña del Mar", color_favorito="rojo"),
            changed=("ciudad", "color_favorito"),
        ),
        ContactStatusChanged(
            contact=contact(account, 3, "unsubscribed", ciudad="Viña del Mar"),
            previous_status=ContactStatus.ACTIVE,
        ),
        ContactUpdated(contact=contact(account, 4, "unsubscribed"), changed=("ciudad",)),
    )
    url = "/v1/logs/contacts/p1/ana@x.cl"
    await eventually(api, url, lambda b: len(b["items"]) == 4)
    # The names, once the profile's events are in too.
    await eventually(
        api, f"{url}?limit=1", lambda b: b["items"][0]["changes"][0]["field"] == "Ciudad"
    )

    first = (await api.get(url, params={"order": "newest", "limit": 2})).json()
    assert changes(first) == [
        (4, [("Ciudad", "Viña del Mar", None)]),
        (3, []),
    ]
    status = first["items"][1]
    assert (status["previous_status"], status["status"], status["status_reason"]) == (
        "active",
        "unsubscribed",
        "complained",
    )
    assert first["next_before_version"] == 3 and first["next_after_version"] is None
    rest = (await api.get(url, params={"order": "newest", "before_version": 3})).json()
    assert changes(rest) == [
        (2, [("Ciudad", "Lima", "Viña del Mar"), ("color_favorito", None, "rojo")]),
        (1, [("Ciudad", None, "Lima"), ("Email", None, "ana@x.cl")]),
    ]
    assert rest["next_before_version"] is None

    # Oldest first, the default, pages by after_version; a page's first entry still has its
    # old values.
    page = (await api.get(url, params={"after_version": 1, "limit": 1})).json()
    assert changes(page) == [
        (2, [("Ciudad", "Lima", "Viña del Mar"), ("color_favorito", None, "rojo")])
    ]
    assert page["next_after_version"] == 2 and page["items"][0]["source"] == "api"

    # Another account sees nothing; mixed cursors are refused, naming the parameter.
    other = await api.get(url, headers={"Authorization": "Bearer key-b"})
    assert other.status_code == 200 and other.json()["items"] == []
    refused: list[tuple[dict[str, str | int], str]] = [
        ({"before_version": 3}, "before_version"),
        ({"order": "newest", "after_version": 1}, "after_version"),
        ({"order": "sideways"}, "order"),
        ({"order": "newest", "before_version": 0}, "before_version"),
    ]
    for params, named in refused:
        bad = await api.get(url, params=params)
        assert bad.status_code == 422, params
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert named in bad.json()["detail"], bad.json()


async def test_an_erased_contact_has_no_trail_left(
    log_api: tuple[httpx.AsyncClient, Publish, str], unique: str, eventually: Any
) -> None:
    api, publish, account = log_api
    contacts = f"contacts.events.{unique}"
    await publish(
        contacts,
        ContactCreated(contact=contact(account, 1, ciudad="Lima")),
        ContactUpdated(contact=contact(account, 2, ciudad="Cusco"), changed=("ciudad",)),
    )
    url = "/v1/logs/contacts/p1/ana@x.cl"
    await eventually(api, url, lambda b: len(b["items"]) == 2)
    erasure = ContactDeleted(
        contact_id="p1:ana@x.cl",
        account_id=account,
        profile_id="p1",
        key="ana@x.cl",
        version=3,
        status=ContactStatus.ACTIVE,
        created_at=AT,
        source="webhook:s1",
        erased=True,
    )
    await publish(contacts, erasure)
    await eventually(api, url, lambda b: b["items"] == [])
    newest = (await api.get(url, params={"order": "newest"})).json()
    assert newest == {"items": [], "next_after_version": None, "next_before_version": None}
