"""A webhook source over its rate is told to retry later, and nothing of that request lands."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from contact_svc.settings import ContactSettings
from contact_svc.webhooks import signature

pytestmark = pytest.mark.integration


@pytest.fixture
def contact_settings(contact_settings: ContactSettings) -> ContactSettings:
    return contact_settings.model_copy(
        update={"webhook_records_per_second": 0.01, "webhook_burst_records": 1000}
    )


def signed(secret: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps(records).encode()
    timestamp = str(int(time.time()))
    return {
        "content": body,
        "headers": {
            "content-type": "application/json",
            "x-webhook-timestamp": timestamp,
            "x-webhook-signature": signature(secret, timestamp, body),
        },
    }


async def test_a_source_over_its_rate_gets_429_with_retry_after(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], known_profile: Any, eventually: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Busy store", fields=[{"name": "Nombre"}])
    source = (
        await contacts.post(
            "/v1/webhook-sources",
            json={"profile_id": profile["id"], "mapping": {"email": "email"}},
        )
    ).json()
    burst = [{"email": f"b{i}@shop.example"} for i in range(1000)]
    accepted = await contacts.post(source["endpoint"], **signed(source["secret"], burst))
    assert accepted.status_code == 202, accepted.text

    refused = await contacts.post(
        source["endpoint"], **signed(source["secret"], [{"email": "late@shop.example"}])
    )
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) >= 1
    assert source["id"] in refused.json()["detail"]

    base = f"/v1/profiles/{profile['id']}"

    async def burst_applied() -> bool:
        stats = (await contacts.get(f"{base}/stats")).json()
        return bool(stats["total"] == 1000)

    assert await eventually(burst_applied)
    assert (await contacts.get(f"{base}/contacts/late@shop.example")).status_code == 404
