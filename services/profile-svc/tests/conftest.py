"""profile-svc fixtures: settings isolated per test, and the app served in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from profile_svc.app import create_app
from profile_svc.settings import ProfileSettings


@pytest.fixture
def profile_settings(infrastructure: Any, unique: str) -> ProfileSettings:
    return ProfileSettings(
        environment="test",
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"profile_svc_{unique}",
        topic_profiles_events=f"profiles.events.{unique}",
        api_keys={"key-a": f"account-a-{unique}", "key-b": f"account-b-{unique}"},
        outbox_scan_seconds=0.5,
        max_request_bytes=64 * 1024,
    )


@pytest.fixture
async def api(profile_settings: ProfileSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of profile-svc, authenticated as account A, with the app's lifespan running."""
    app = create_app(profile_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://profile-svc",
            headers={"Authorization": "Bearer key-a"},
        ) as client:
            yield client
