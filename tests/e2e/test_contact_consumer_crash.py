"""A SIGKILL of contact-svc while it applies webhook commands loses nothing and applies
nothing twice: after a restart every accepted contact is there once, as last written, and the
statistics count each once."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

BATCHES, PER_BATCH, STRIDE = 20, 50, 40  # consecutive batches overlap by 10 contacts


def expected_purchases() -> dict[str, int]:
    """Each contact's value in the last batch that carried it."""
    last: dict[str, int] = {}
    for batch in range(BATCHES):
        for index in range(batch * STRIDE, batch * STRIDE + PER_BATCH):
            last[f"c{index:04d}@crash.example"] = batch
    return last


async def count_contacts(api: httpx.AsyncClient, base: str) -> dict[str, int]:
    found: dict[str, int] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(base, params=params)).json()
        for item in page["items"]:
            assert item["key"] not in found, f"{item['key']} listed twice"
            found[item["key"]] = item["fields"].get("Compras")
        cursor = page["next_cursor"]
        if not cursor:
            return found


async def test_a_killed_consumer_resumes_without_loss_or_duplicates(
    infrastructure: Any, unique: str, service_process: Any, send_webhook: Any
) -> None:
    env = {
        "CONTACTS_ENVIRONMENT": "test",
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap_servers,
        "CONTACTS_MONGODB_URL": infrastructure.mongodb_url,
        "CONTACTS_TOPIC_PROFILES_EVENTS": f"profiles.events.kill.{unique}",
        "CONTACTS_TOPIC_CONTACTS_EVENTS": f"contacts.events.kill.{unique}",
        "CONTACTS_TOPIC_CONTACTS_COMMANDS": f"contacts.commands.kill.{unique}",
        "CONTACTS_API_KEYS": f"kill-key=acct-{unique}",
    }
    profile_svc = service_process(
        "profile_svc.app:create_app",
        {**env, "CONTACTS_MONGODB_DATABASE": f"profile_svc_kill_{unique}"},
    )
    contact_env = {
        **env,
        "CONTACTS_MONGODB_DATABASE": f"contact_svc_kill_{unique}",
        "CONTACTS_PROFILE_EVENTS_GROUP": f"schemas-{unique}",
        "CONTACTS_CONTACT_COMMANDS_GROUP": f"commands-{unique}",
        "CONTACTS_CONTACT_EVENTS_GROUP": f"contact-events-{unique}",
    }
    first = service_process("contact_svc.app:create_app", contact_env)
    profile_svc.start()
    first.start()
    auth = {"Authorization": "Bearer kill-key"}
    async with httpx.AsyncClient(headers=auth, timeout=30) as api:
        profile = (
            await api.post(
                f"{profile_svc.url}/v1/profiles",
                json={"name": "Crash", "fields": [{"name": "Compras", "type": "number"}]},
            )
        ).json()
        base = f"/v1/profiles/{profile['id']}/contacts"
        deadline = time.monotonic() + 30
        while (await api.get(f"{first.url}{base}")).status_code == 404:
            assert time.monotonic() < deadline, "contact-svc never learnt of the profile"
            await asyncio.sleep(0.1)
        source = (
            await api.post(
                f"{first.url}/v1/webhook-sources",
                json={"profile_id": profile["id"], "mapping": {"email": "email", "n": "Compras"}},
            )
        ).json()

        for batch in range(BATCHES):
            records: list[dict[str, object]] = [
                {"email": f"c{index:04d}@crash.example", "n": batch}
                for index in range(batch * STRIDE, batch * STRIDE + PER_BATCH)
            ]
            response = await send_webhook(
                api, f"{first.url}{source['endpoint']}", source["secret"], records
            )
            assert response.status_code == 202 and response.json()["accepted"] == PER_BATCH

        # Kill it while it is applying: some contacts are in, most are not.
        while (applied := len(await count_contacts(api, f"{first.url}{base}"))) < 100:
            await asyncio.sleep(0.05)
        first.kill(signal.SIGKILL)
        assert applied < 810, "all applied before the kill: the test proved nothing"
        second = service_process("contact_svc.app:create_app", contact_env)
        second.start()

        expected = expected_purchases()
        deadline = time.monotonic() + 120
        while (found := await count_contacts(api, f"{second.url}{base}")) != expected:
            assert time.monotonic() < deadline, f"{len(found)} of {len(expected)} contacts"
            await asyncio.sleep(0.5)
        # The statistics, folded from events some of which were delivered twice, count each
        # contact once.
        stats_url = f"{second.url}/v1/profiles/{profile['id']}/stats"
        while (stats := (await api.get(stats_url)).json())["total"] != len(expected):
            assert stats["total"] < len(expected), f"counted twice: {stats}"
            assert time.monotonic() < deadline, f"stats never caught up: {stats}"
            await asyncio.sleep(0.5)
    assert len(found) == len(expected) == 810
    assert stats["by_status"]["active"] == stats["added_last_7_days"] == 810
