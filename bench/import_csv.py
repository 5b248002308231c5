"""CSV import end to end, against the running local stack (`make run`).

Generates a CSV of `--rows` rows with 10 columns (email, text, numbers, a date, a phone, a
yes/no), imports it with `append_or_update` into an empty profile, then again into the full
one (nothing changes), then an edition with every row's notes changed (every contact is
updated), each timed from the start of the upload to the import's end (rows/s), with import-svc's
peak memory; then, in the same process, the raw rate of bulk-upserting the documents the
import stored straight into the same server, into a collection with the contacts' indexes,
and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from figures import bulk_upsert_rate, indexed_like, stored_documents
from pymongo import AsyncMongoClient

from contacts_shared.settings import ServiceSettings

CITIES = ["Santiago", "Lima", "Quito", "Bogotá", "Concepción", "Viña del Mar", "Cusco"]
FIELDS = [
    {"name": "Nombre"},
    {"name": "Apellido"},
    {"name": "Ciudad"},
    {"name": "Edad", "type": "number"},
    {"name": "Compras", "type": "number"},
    {"name": "Fecha de Nacimiento", "type": "date"},
    {"name": "Teléfono", "type": "phone"},
    {"name": "VIP", "type": "boolean"},
    {"name": "Notas"},
]


def write_csv(path: Path, rows: int, edition: int = 0) -> None:
    """Streamed to disk: the bench holds no more of it than import-svc may. Every row is
    valid (mobile numbers in ranges libphonenumber knows), so all of them are written. Another
    `edition` changes every row's notes, so importing it updates every contact."""
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as out:
        out.write("email," + ",".join(f["name"] for f in FIELDS) + "\n")
        for i in range(rows):
            born = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1950, 2005)}"
            out.write(
                f"cliente{i}@bench.example,Nombre {i},Apellido {i},{rng.choice(CITIES)},"
                f"{rng.randint(18, 90)},{rng.randint(0, 500)},{born},"
                f"+56 9 {rng.choice('2458')}{rng.randint(100, 999)} {rng.randint(1000, 9999)},"
                f"{rng.choice(['sí', 'no'])},nota {i}{' v' + str(edition) if edition else ''}\n"
            )


def memory_mb(pid_file: Path, kind: str = "VmHWM") -> float:
    """import-svc's resident memory in MB: its peak so far (VmHWM) or now (VmRSS)."""
    pid = pid_file.read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {kind}")


async def new_profile(api: httpx.AsyncClient, url: str, name: str) -> dict[str, Any]:
    """A new profile with the CSV's fields, named `name` and a random tail."""
    response = await api.post(
        f"{url}/v1/profiles", json={"name": f"{name} {uuid.uuid4().hex[:8]}", "fields": FIELDS}
    )
    profile: dict[str, Any] = response.raise_for_status().json()
    return profile


async def timed_import(
    api: httpx.AsyncClient,
    url: str,
    profile_id: str,
    path: Path,
    action: str = "append_or_update",
    watch: Callable[[dict[str, Any]], None] = lambda state: None,
) -> tuple[float, dict[str, Any]]:
    """Upload and follow an import to its end (`watch` sees each state polled): seconds from
    the start of the upload, and the final state."""
    deadline = time.monotonic() + 30
    while True:
        started = time.perf_counter()
        with path.open("rb") as upload:
            response = await api.post(
                f"{url}/v1/imports",
                data={"profile_id": profile_id, "action": action},
                files={"file": (path.name, upload)},
            )
        if response.status_code != 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)  # import-svc learns of a new profile from its events
    response.raise_for_status()
    state_url = f"{url}/v1/imports/{response.json()['id']}"
    while not (state := (await api.get(state_url)).json())["finished_at"]:
        watch(state)
        await asyncio.sleep(0.5)
    return time.perf_counter() - started, state


async def main(args: argparse.Namespace) -> None:
    settings = ServiceSettings()
    pid_file = Path(args.stack_dir) / "run" / "import-svc.pid"
    auth = {"Authorization": f"Bearer {args.api_key}"}
    with tempfile.TemporaryDirectory() as folder:
        path, changed = Path(folder) / "clientes.csv", Path(folder) / "clientes-2.csv"
        write_csv(path, args.rows)
        write_csv(changed, args.rows, edition=2)
        size_mb = path.stat().st_size / 1e6
        async with httpx.AsyncClient(headers=auth, timeout=600) as api:
            profile = await new_profile(api, args.profiles, "import bench")
            runs = []
            for label, upload in (
                ("into the empty profile", path),
                ("again, into the full one", path),
                ("changed, into the full one", changed),
            ):
                seconds, state = await timed_import(api, args.imports, profile["id"], upload)
                runs.append((label, seconds, state, memory_mb(pid_file)))

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url)
    contacts = client["contact_svc"]["contacts"]
    raw = await indexed_like(contacts, client["bench"][f"import_{uuid.uuid4().hex[:8]}"])
    raw_rate = await bulk_upsert_rate(
        raw, stored_documents(contacts, {"profile_id": profile["id"]})
    )
    await client.drop_database("bench")
    await contacts.delete_many({"profile_id": profile["id"]})  # keep the dev database small
    await client.close()

    print(
        f"CSV import ({settings.mongodb_url}): {args.rows:,} rows x 10 columns, "
        f"{size_mb:.1f} MB, append_or_update"
    )
    for label, seconds, state, memory in runs:
        counts = state["counts"]
        print(
            f"{label:<26} {seconds:8.1f} s  {args.rows / seconds:9.1f} rows/s   "
            f"created {counts['created']:,} updated {counts['updated']:,} "
            f"unchanged {counts['unchanged']:,} refused {counts['refused']:,}   "
            f"import-svc peak {memory:.0f} MB   ({state['status']})"
        )
    print(f"baseline: raw bulk upsert, stored documents, contacts' indexes {raw_rate:9.1f}/s")
    first = args.rows / runs[0][1]
    print(f"ratio first import / raw   {first / raw_rate:6.2f}   (goal >= 0.5; 1M in 60 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--profiles", default="http://127.0.0.1:8101")
    parser.add_argument("--imports", default="http://127.0.0.1:8103")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument("--stack-dir", default=".local")
    asyncio.run(main(parser.parse_args()))
