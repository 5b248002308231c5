"""The console's pages at scale, against the running local stack (`make run`).

Loads `--contacts-count` synthetic contacts (a million by default) into one new profile
(bench/synthetic_contacts.py: straight into contact-svc's database, with the statistics their
events would have produced), then serves the console in this process (its ASGI app, calling
the running services) as a signed-in browser would ask for each page, `--repeat` times each:
the server time of each page, p50 and p95 (goal: p95 < 300 ms), and beside it, as the
baseline measured in the same run, the service call that page depends on most, made
straight (the ratio is the console's own cost around it).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import time
import uuid
from typing import Any

import httpx
from console.app import create_app
from console.settings import ConsoleSettings
from figures import percentile, timed
from pymongo import AsyncMongoClient
from synthetic_contacts import load

from contact_svc.settings import ContactSettings

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def pages(profile_id: str, key: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, console path, its main service call: base URL setting and path, params)."""
    contacts = f"/v1/profiles/{profile_id}/contacts"
    return [
        ("List Profiles", "/profiles", "profiles", {"path": "/v1/profiles", "limit": 50}),
        (
            "List Contacts",
            f"/contacts?profile_id={profile_id}",
            "contacts",
            {"path": contacts, "limit": 50},
        ),
        (
            "List Contacts, bounced",
            f"/contacts?profile_id={profile_id}&status=bounced",
            "contacts",
            {"path": contacts, "limit": 50, "status": "bounced"},
        ),
        (
            "List Contacts, Ciudad starts with cus",
            f"/contacts?profile_id={profile_id}&field=Ciudad&value_prefix=cus",
            "contacts",
            {"path": f"{contacts}:count", "field": "Ciudad", "value_prefix": "cus"},
        ),
        (
            "a contact",
            f"/contacts/{profile_id}/{key}",
            "contacts",
            {"path": f"{contacts}/{key}"},
        ),
        (
            "profile statistics",
            f"/profiles/{profile_id}",
            "contacts",
            {"path": f"/v1/profiles/{profile_id}/stats"},
        ),
        (
            "New Contact",
            f"/contacts/new?profile_id={profile_id}",
            "profiles",
            {"path": f"/v1/profiles/{profile_id}"},
        ),
        ("Import Contacts", "/imports/new", "profiles", {"path": "/v1/profiles", "limit": 50}),
        ("Logs", "/logs", "logs", {"path": "/v1/logs/imports", "limit": 50}),
    ]


async def main(args: argparse.Namespace) -> None:
    settings = ContactSettings()
    console_settings = ConsoleSettings(environment="test")
    services = {
        "profiles": console_settings.profile_svc_url,
        "contacts": console_settings.contact_svc_url,
        "logs": console_settings.log_svc_url,
    }
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    contact_db = client[settings.mongodb_database]
    auth = {"Authorization": f"Bearer {args.api_key}"}
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    app = create_app(console_settings)
    async with httpx.AsyncClient(headers=auth, timeout=120) as api:
        profile = (
            (
                await api.post(
                    f"{services['profiles']}/v1/profiles",
                    json={
                        "name": f"console bench {uuid.uuid4().hex[:8]}",
                        "fields": [{"name": "Nombre"}, {"name": "Ciudad"}],
                    },
                )
            )
            .raise_for_status()
            .json()
        )
        profile_id = profile["id"]
        try:
            while (
                schema := await contact_db["profile_schemas"].find_one({"_id": profile_id})
            ) is None:
                await asyncio.sleep(0.2)
            await load(
                contact_db,
                {"id": profile_id, "account_id": schema["account_id"]},
                args.contacts_count,
                partitions=settings.topic_partitions,
            )
            key = f"c{args.contacts_count // 2:07d}@bench.example"
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://console"
                ) as browser:
                    form = await browser.get("/sign-in")
                    token = CSRF.search(form.text)
                    assert token is not None
                    signed = await browser.post(
                        "/sign-in",
                        data={"api_key": args.api_key, "csrf_token": token.group(1)},
                    )
                    assert signed.status_code == 303, signed.text
                    print(
                        f"console pages ({settings.mongodb_url}): a profile of "
                        f"{args.contacts_count:,} contacts, {args.repeat} requests each, "
                        "server time in ms (console | its main service call straight)"
                    )
                    for name, path, service, call in pages(profile_id, key):
                        call = dict(call)
                        url = services[service] + call.pop("path")

                        async def page(path: str = path) -> None:
                            answer = await browser.get(path)
                            assert answer.status_code == 200, (path, answer.status_code)

                        async def straight(url: str = url, call: dict[str, Any] = call) -> None:
                            (await api.get(url, params=call)).raise_for_status()

                        await page()  # warm
                        console_ms = await timed(page, args.repeat)
                        api_ms = await timed(straight, args.repeat)
                        p50, p95 = percentile(console_ms, 0.5), percentile(console_ms, 0.95)
                        a50, a95 = percentile(api_ms, 0.5), percentile(api_ms, 0.95)
                        print(
                            f"{name:<38} p50 {p50:7.1f} p95 {p95:7.1f}   |  p50 {a50:7.1f} "
                            f"p95 {a95:7.1f}   ratio p95 {p95 / a95:5.2f}   "
                            f"{'ok' if p95 < 300 else 'OVER 300 ms'}"
                        )
        finally:
            started = time.perf_counter()
            await contact_db["contacts"].delete_many(
                {"_id": {"$gt": f"{profile_id}:", "$lt": f"{profile_id};"}}
            )
            shares = [f"{profile_id}|{n}" for n in range(settings.topic_partitions)]
            await contact_db["profile_stats"].delete_many({"_id": {"$in": [profile_id, *shares]}})
            await api.delete(f"{services['profiles']}/v1/profiles/{profile_id}")
            print(f"removed the loaded contacts in {time.perf_counter() - started:.1f} s")
    await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts-count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--api-key", default="local-dev-key")
    asyncio.run(main(parser.parse_args()))
