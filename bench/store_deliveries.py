"""Stores' deliveries (one customer each, as Shopify sends them), end to end, against the
running local stack (`make run`).

`--senders` concurrent senders post for `--seconds` each of: Shopify `customers/create`
deliveries signed with `X-Shopify-Hmac-Sha256` (the store path: delivery id looked up and
recorded, store customer id kept with its change time), and the same customers one a request in
the generic format with our own headers (none of those steps). Reports deliveries/s answered
and written, and answer latency; then, in the same process, the raw rate of inserting the same
number of single documents one a request into the same server with the same concurrency, and
the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from figures import p50_p99
from pymongo import AsyncMongoClient

from contact_svc.webhooks import signature
from contacts_shared.settings import ServiceSettings

Send = Callable[[int, str], Awaitable[httpx.Response]]


def shopify_headers(secret: str, body: bytes) -> dict[str, str]:
    """As a shop sends a delivery (the signature computed here, as Shopify documents it)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "X-Shopify-Topic": "customers/create",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "bench.myshopify.com",
        "X-Shopify-API-Version": "2025-01",
    }


def own_headers(secret: str, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "x-webhook-timestamp": stamp,
        "x-webhook-signature": signature(secret, stamp, body),
    }


def customer(n: int, email: str) -> dict[str, Any]:
    return {
        "id": n,
        "email": email,
        "first_name": "Bench",
        "updated_at": datetime.now(UTC).isoformat(),
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
    }


async def drive(
    args: argparse.Namespace, send: Send, prefix: str
) -> tuple[int, float, list[float]]:
    """Deliveries sent, seconds taken, answer latencies (ms)."""
    sent, latencies = 0, []
    stop_at = time.monotonic() + args.seconds

    async def sender(worker: int) -> None:
        nonlocal sent
        n = 0
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            response = await send(worker * 10_000_000 + n, f"{prefix}w{worker}n{n}@bench.example")
            response.raise_for_status()
            latencies.append((time.perf_counter() - began) * 1000)
            sent, n = sent + 1, n + 1

    started = time.monotonic()
    await asyncio.gather(*(sender(w) for w in range(args.senders)))
    return sent, time.monotonic() - started, latencies


async def written_rate(
    contacts: Any, profile_id: str, prefix: str, sent: int, began: float
) -> float:
    """Contacts written a second, from the first answer's start to the last one written."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        count = await contacts.count_documents(
            {"profile_id": profile_id, "key": {"$regex": f"^{prefix}"}}
        )
        if count >= sent:
            break
        await asyncio.sleep(1)
    last = await contacts.find_one(
        {"profile_id": profile_id, "key": {"$regex": f"^{prefix}"}}, sort=[("created_at", -1)]
    )
    return float(sent) / (last["created_at"].timestamp() - began) if last else 0.0


async def main(args: argparse.Namespace) -> None:
    settings = ServiceSettings()
    run = uuid.uuid4().hex[:8]
    store_secret = secrets.token_hex(32)
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {args.api_key}"}, timeout=60
    ) as api:
        profile = (
            await api.post(
                f"{args.profiles}/v1/profiles",
                json={"name": f"bench stores {run}", "fields": [{"name": "Nombre"}]},
            )
        ).json()
        while (
            await api.get(f"{args.contacts}/v1/profiles/{profile['id']}/contacts")
        ).status_code == 404:
            await asyncio.sleep(0.2)

        async def source(**body: Any) -> dict[str, Any]:
            created = await api.post(
                f"{args.contacts}/v1/webhook-sources", json={"profile_id": profile["id"], **body}
            )
            created.raise_for_status()
            return dict(created.json())

        shop = await source(format="shopify", secret=store_secret, mapping={"first_name": "Nombre"})
        generic = await source(format="generic", mapping={"email": "email", "first_name": "Nombre"})

        async def send_shopify(n: int, email: str) -> httpx.Response:
            body = json.dumps(customer(n, email)).encode()
            return await api.post(
                f"{args.contacts}{shop['endpoint']}",
                content=body,
                headers=shopify_headers(store_secret, body),
            )

        async def send_generic(n: int, email: str) -> httpx.Response:
            body = json.dumps(customer(n, email)).encode()
            return await api.post(
                f"{args.contacts}{generic['endpoint']}",
                content=body,
                headers=own_headers(generic["secret"], body),
            )

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_url, tz_aware=True
        )
        contacts = client["contact_svc"]["contacts"]
        figures = {}
        for name, send in (("generic", send_generic), ("shopify", send_shopify)):
            began = time.time()
            sent, seconds, latencies = await drive(args, send, name)
            figures[name] = (
                sent / seconds,
                await written_rate(contacts, profile["id"], name, sent, began),
                latencies,
            )

    # Baseline: single-document inserts, one a request, at the same concurrency, into the
    # same server: the least a write per delivery costs there.
    raw = client["bench"][f"raw_{run}"]
    inserted = 0
    stop_at = time.monotonic() + args.seconds

    async def inserter(worker: int) -> None:
        nonlocal inserted
        n = 0
        while time.monotonic() < stop_at:
            email = f"w{worker}n{n}@bench.example"
            await raw.insert_one(
                {
                    "_id": f"{profile['id']}:{email}",
                    "key": email,
                    "fields": {"email": email, "nombre": "Bench"},
                    "created_at": datetime.now(UTC),
                }
            )
            inserted, n = inserted + 1, n + 1

    started = time.monotonic()
    await asyncio.gather(*(inserter(w) for w in range(args.senders)))
    raw_rate = inserted / (time.monotonic() - started)
    await client.drop_database("bench")
    await contacts.delete_many({"profile_id": profile["id"]})
    await client.close()

    print(
        f"store deliveries ({settings.mongodb_url}): {args.senders} senders x "
        f"{args.seconds:.0f} s each, one customer a delivery"
    )
    for name, (answered, written, latencies) in figures.items():
        print(
            f"{name:8} answered {answered:8.1f}/s   written {written:8.1f}/s   "
            f"answer {p50_p99(latencies)}"
        )
    print(f"baseline: raw single-document inserts, {args.senders} at a time   {raw_rate:8.1f}/s")
    shopify_written, generic_written = figures["shopify"][1], figures["generic"][1]
    print(f"ratio shopify written / raw inserts        {shopify_written / raw_rate:6.2f}")
    print(
        f"ratio shopify written / generic written    {shopify_written / generic_written:6.2f}"
        "   (the store path's own cost)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--profiles", default="http://127.0.0.1:8101")
    parser.add_argument("--contacts", default="http://127.0.0.1:8102")
    parser.add_argument("--api-key", default="local-dev-key")
    asyncio.run(main(parser.parse_args()))
