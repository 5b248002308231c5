"""contact-svc fixtures: profile-svc and contact-svc served in-process, sharing topics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from contact_svc.app import create_app as create_contact_app
from contact_svc.settings import ContactSettings
from contacts_shared.profiles import ProfileSchema
from contacts_shared.schema import FieldSpec, FieldType, ProfileType
from profile_svc.app import create_app as create_profile_app
from profile_svc.settings import ProfileSettings


@pytest.fixture
def shared_settings(infrastructure: Any, unique: str) -> dict[str, Any]:
    return {
        "environment": "test",
        "kafka_bootstrap_servers": infrastructure.kafka_bootstrap_servers,
        "mongodb_url": infrastructure.mongodb_url,
        "topic_profiles_events": f"profiles.events.{unique}",
        "topic_contacts_events": f"contacts.events.{unique}",
        "topic_contacts_commands": f"contacts.commands.{unique}",
        "api_keys": {"key-a": f"account-a-{unique}", "key-b": f"account-b-{unique}"},
        "outbox_scan_seconds": 0.5,
    }


@pytest.fixture
def contact_settings(
    shared_settings: dict[str, Any], unique: str, request: pytest.FixtureRequest
) -> ContactSettings:
    """contact-svc's settings; a test changes some with
    `@pytest.mark.parametrize("contact_settings", [{...}], indirect=True)`."""
    return ContactSettings(
        **getattr(request, "param", {}),
        **shared_settings,
        mongodb_database=f"contact_svc_{unique}",
        profile_events_group=f"contact-svc-{unique}",
        contact_commands_group=f"contact-svc-commands-{unique}",
        contact_events_group=f"contact-svc-events-{unique}",
    )


def client(app: Any, name: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"http://{name}",
        headers={"Authorization": "Bearer key-a"},
    )


@pytest.fixture
async def services(
    shared_settings: dict[str, Any], contact_settings: ContactSettings, unique: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(profiles, contacts) clients, authenticated as account A, with both lifespans running."""
    profile_app = create_profile_app(
        ProfileSettings(**shared_settings, mongodb_database=f"profile_svc_{unique}")
    )
    contact_app = create_contact_app(contact_settings)
    async with profile_app.router.lifespan_context(profile_app):
        async with contact_app.router.lifespan_context(contact_app):
            async with client(profile_app, "profile-svc") as profiles:
                async with client(contact_app, "contact-svc") as contacts:
                    yield profiles, contacts


ProfileMaker = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def known_profile(services: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> ProfileMaker:
    """Creates a profile in profile-svc and waits until contact-svc has its schema."""
    profiles, contacts = services

    async def make(**body: Any) -> dict[str, Any]:
        created = await profiles.post("/v1/profiles", json=body)
        assert created.status_code == 201, created.text
        profile: dict[str, Any] = created.json()
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            listed = await contacts.get(f"/v1/profiles/{profile['id']}/contacts")
            if listed.status_code != 404:  # known: 200, or 409 for a virtual profile
                return profile
            await asyncio.sleep(0.1)
        raise AssertionError(f"contact-svc never learnt of profile {profile['id']}")

    return make


Probe = Callable[[], Awaitable[bool]]


@pytest.fixture
def eventually() -> Callable[[Probe], Awaitable[bool]]:
    """Polls `probe` until it holds (True) or 30 s pass (False)."""

    async def poll(probe: Probe, timeout: float = 30) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await probe():
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    return poll


@pytest.fixture
def regular_schema() -> ProfileSchema:
    """A regular profile's schema (`p1` in account `a1`): email, Nombre, Ciudad."""
    return ProfileSchema(
        profile_id="p1",
        account_id="a1",
        type=ProfileType.REGULAR,
        fields=(
            FieldSpec(
                name="email", key="email", type=FieldType.EMAIL, required=True, identity=True
            ),
            FieldSpec(name="Nombre", key="nombre", type=FieldType.TEXT),
            FieldSpec(name="Ciudad", key="ciudad", type=FieldType.TEXT),
        ),
        version=1,
    )


Sample = Callable[[str], dict[str, Any]]
SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture(scope="session")
def sample() -> Sample:
    """A store platform's documented payload from `samples/`, by platform and topic
    (`sample("shopify/customers_create")`), read anew at each call so a test may change it."""

    def read(name: str) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
        return payload

    return read
