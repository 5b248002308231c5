"""Bulk actions end to end, against the running local stack (`make run`).

Adds `--contacts` contacts to a new profile through `contacts:batch`, then changes the status
of all of them with one bulk action by filter, and deletes them all with another, each timed
from the request to the job's completion (contacts/s), with contact-svc's resident memory
sampled meanwhile; then, in the same process, the raw rate of the same status change made
straight on the server: the stored documents copied into a collection with the contacts'
indexes and updated in unordered bulks of 1,000 (status, reason, source, version and the
status's index term), and the ratio (goal >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from figures import Documents, indexed_like, stored_documents
from import_csv import memory_mb
from pymongo import AsyncMongoClient, UpdateOne

from contacts_shared.settings import ServiceSettings

SEPARATOR = "\x1f"  # as contact-svc's index terms join their parts


async def add_contacts(api: httpx.AsyncClient, base: str, count: int) -> float:
    """Adds `count` contacts in batches of 1,000, two requests at a time; contacts/s. Their
    emails are new to the account: a run's status change puts them on its suppression list
    (ADR 15), and the next run's contacts would be added unsubscribed, selecting none."""
    run = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    batches = asyncio.Queue[int]()
    for start in range(0, count, 1000):
        batches.put_nowait(start)

    async def send() -> None:
        while not batches.empty():
            start = batches.get_nowait()
            batch = [
                {"email": f"bulk{n}.{run}@bench.example", "Plan": "gold" if n % 2 else "free"}
                for n in range(start, min(count, start + 1000))
            ]
            (await api.post(f"{base}:batch", json={"contacts": batch})).raise_for_status()

    await asyncio.gather(send(), send())
    return count / (time.perf_counter() - started)


async def timed_bulk(
    api: httpx.AsyncClient, base: str, body: dict[str, Any], pid_file: Path
) -> tuple[float, dict[str, Any], float]:
    """Start a bulk action and follow it to its end: seconds, the final job, and contact-svc's
    highest resident memory meanwhile less what it held before (MB)."""
    before = peak = memory_mb(pid_file, "VmRSS")
    started = time.perf_counter()
    answer = (await api.post(f"{base}:bulk", json=body)).raise_for_status()
    url = str(answer.url.copy_with(path=answer.headers["location"], query=None))
    while (job := (await api.get(url)).json())["state"] not in ("completed", "failed"):
        peak = max(peak, memory_mb(pid_file, "VmRSS"))
        await asyncio.sleep(0.25)
    return time.perf_counter() - started, job, peak - before


async def raw_status_change(documents: Documents, query: dict[str, Any]) -> float:
    """Documents a second: the status change written straight, in unordered bulks of 1,000
    (only the writes are timed)."""
    written, seconds = 0, 0.0
    async for chunk in stored_documents(documents, query):
        writes = []
        for document in chunk:
            old = SEPARATOR.join(("status", document["profile_id"], document["status"]))
            new = SEPARATOR.join(("status", document["profile_id"], "bounced"))
            terms = [new if term == old else term for term in document["search_terms"]]
            writes.append(
                UpdateOne(
                    {"_id": document["_id"], "version": document["version"]},
                    {
                        "$set": {
                            "status": "bounced",
                            "status_reason": "raw",
                            "status_source": "raw",
                            "source": "raw",
                            "search_terms": terms,
                        },
                        "$inc": {"version": 1},
                    },
                )
            )
        started = time.perf_counter()
        await documents.bulk_write(writes, ordered=False)
        seconds += time.perf_counter() - started
        written += len(chunk)
    return written / seconds


async def main(args: argparse.Namespace) -> None:
    settings = ServiceSettings()
    pid_file = Path(args.stack_dir) / "run" / "contact-svc.pid"
    auth = {"Authorization": f"Bearer {args.api_key}"}
    async with httpx.AsyncClient(headers=auth, timeout=600) as api:
        profile = (
            (
                await api.post(
                    f"{args.profiles}/v1/profiles",
                    json={
                        "name": f"bulk bench {uuid.uuid4().hex[:8]}",
                        "fields": [{"name": "Plan"}],
                    },
                )
            )
            .raise_for_status()
            .json()
        )
        base = f"{args.contacts_url}/v1/profiles/{profile['id']}/contacts"
        deadline = time.monotonic() + 30
        while (await api.get(base)).status_code == 404:  # contact-svc learns of it by event
            assert time.monotonic() < deadline, "contact-svc never learnt of the profile"
            await asyncio.sleep(0.2)
        added = await add_contacts(api, base, args.contacts)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url)
        contacts = client["contact_svc"]["contacts"]
        change = await timed_bulk(
            api,
            base,
            {
                "action": "change_status",
                "status": "unsubscribed",
                "reason": "bench",
                "filter": {"status": "active"},
            },
            pid_file,
        )

        raw = await indexed_like(contacts, client["bench"][f"bulk_{uuid.uuid4().hex[:8]}"])
        async for chunk in stored_documents(contacts, {"profile_id": profile["id"]}):
            await raw.insert_many(chunk)
        raw_rate = await raw_status_change(raw, {})
        await client.drop_database("bench")

        delete = await timed_bulk(api, base, {"action": "delete", "filter": {}}, pid_file)
    await contacts.delete_many({"profile_id": profile["id"]})  # keep the dev database small
    await client.close()

    print(f"bulk actions ({settings.mongodb_url}): {args.contacts:,} contacts")
    print(f"added through contacts:batch       {added:9.1f} contacts/s")
    for label, (seconds, job, memory) in (
        ("status change by filter", change),
        ("deletion of all", delete),
    ):
        print(
            f"{label:<34} {seconds:8.1f} s  {args.contacts / seconds:9.1f} contacts/s   "
            f"{job['state']} {job['counts']}   contact-svc +{memory:.0f} MB resident"
        )
    print(f"baseline: raw bulk status update, same documents and indexes {raw_rate:9.1f}/s")
    rate = args.contacts / change[0]
    print(f"ratio status change / raw   {rate / raw_rate:6.2f}   (goal >= 0.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--profiles", default="http://127.0.0.1:8101")
    parser.add_argument("--contacts-url", default="http://127.0.0.1:8102")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument("--stack-dir", default=".local")
    asyncio.run(main(parser.parse_args()))
