"""profile-svc outside local development: a missing topic is never created by the service; it
says which topic is missing and how to fix it, and is not ready until the topic is there as
declared, then ready by itself with no restart (docs/adr/0020)."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from contacts_shared.topics import DECLARED_RETENTION
from contacts_shared.topics.__main__ import run
from profile_svc.app import create_app
from profile_svc.settings import ProfileSettings

pytestmark = pytest.mark.integration


def of_this_test(settings: ProfileSettings, unique: str, **update: Any) -> ProfileSettings:
    """The settings with every declared topic of this test's own: `apply` touches no other."""
    names = {setting: f"{getattr(settings, setting)}.{unique}" for setting, _ in DECLARED_RETENTION}
    return settings.model_copy(update={**names, **update})


async def topic_names(bootstrap_servers: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_in_production_a_missing_topic_is_not_created_and_readiness_names_it(
    profile_settings: ProfileSettings, unique: str
) -> None:
    production = of_this_test(
        profile_settings,
        unique,
        environment="production",
        api_keys={f"s3cr3t-{unique}": f"account-{unique}"},
        # One broker here: the setting a one-broker cluster would carry.
        topic_replication_factor=1,
    )
    topic = production.topic_profiles_events
    app = create_app(production)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://profile-svc"
        ) as api:
            for _ in range(3):  # asked again, still refused, never created
                ready = await api.get("/readyz")
                assert ready.status_code == 503, ready.text
            [problem] = ready.json()["errors"]
            assert problem["field"] == "topics"
            assert f"{topic} is missing" in problem["message"]
            assert "python -m contacts_shared.topics apply" in problem["message"]
            assert topic not in await topic_names(production.kafka_bootstrap_servers)

            # The operator's fix: the topics Job, with the same settings.
            out = io.StringIO()
            assert await run("apply", production, out) == 0, out.getvalue()
            assert f"created {topic} " in out.getvalue()
            deadline = time.monotonic() + 30
            while (ready := await api.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                await asyncio.sleep(0.2)


async def test_a_topic_with_another_replication_factor_keeps_the_service_not_ready(
    profile_settings: ProfileSettings, unique: str
) -> None:
    # Made as a one-broker cluster makes it; declared for production's three brokers.
    local = of_this_test(profile_settings, unique)
    out = io.StringIO()
    assert await run("apply", local, out) == 0, out.getvalue()
    deadline = time.monotonic() + 30
    while await run("check", local, io.StringIO()):  # the broker's metadata catches up
        assert time.monotonic() < deadline, "the topics applied never showed as declared"
        await asyncio.sleep(0.1)
    production = local.model_copy(
        update={"environment": "production", "api_keys": {f"s3cr3t-{unique}": "account"}}
    )
    app = create_app(production)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://profile-svc"
        ) as api:
            ready = await api.get("/readyz")
    assert ready.status_code == 503
    [problem] = ready.json()["errors"]
    assert (
        f"{production.topic_profiles_events} has replication factor 1, declared 3"
        in problem["message"]
    )
