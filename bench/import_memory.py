"""import-svc's memory over one long import, against the running local stack (`make run`).

Generates a CSV of `--rows` rows (10 columns, as bench/import_csv.py), imports it into an
empty profile and samples import-svc's resident memory while the import runs, printing it at
each tenth of the rows read and its peak (VmHWM, since import-svc started: restart it first for
a clean figure). The default action, `unsubscribe`, walks import-svc's whole path (upload into
GridFS, reading, checking, commands, outcomes, progress) while contact-svc only looks the
contacts up (none exist: `not_found`), so ten million rows fit in an hour on a small machine;
`--action append_or_update` writes them too.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import httpx
from import_csv import memory_mb, new_profile, timed_import, write_csv


async def main(args: argparse.Namespace) -> None:
    pid_file = Path(args.stack_dir) / "run" / "import-svc.pid"
    auth = {"Authorization": f"Bearer {args.api_key}"}
    at_start = memory_mb(pid_file, "VmRSS")
    samples: list[tuple[int, float]] = []  # (rows read, resident MB)
    next_tenth = 1

    def watch(state: dict[str, Any]) -> None:
        nonlocal next_tenth
        read = state["counts"]["read"]
        resident = memory_mb(pid_file, "VmRSS")
        if read >= next_tenth * args.rows // 10:
            samples.append((read, resident))
            print(f"  read {read:>12,}  import-svc resident {resident:6.0f} MB", flush=True)
            next_tenth = read * 10 // args.rows + 1

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clientes.csv"
        write_csv(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"{args.rows:,} rows, {size_mb:,.0f} MB, action {args.action}", flush=True)
        async with httpx.AsyncClient(headers=auth, timeout=3600) as api:
            profile = await new_profile(api, args.profiles, "memory bench")
            seconds, state = await timed_import(
                api, args.imports, profile["id"], path, args.action, watch
            )
    counts = state["counts"]
    print(
        f"import-svc memory over {counts['read']:,} rows ({state['status']}, "
        f"{seconds:,.0f} s, {counts['read'] / seconds:,.0f} rows/s): resident at the start "
        f"{at_start:.0f} MB, at the end {memory_mb(pid_file, 'VmRSS'):.0f} MB, "
        f"peak {memory_mb(pid_file):.0f} MB (goal < 300 MB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--action", default="unsubscribe")
    parser.add_argument("--profiles", default="http://127.0.0.1:8101")
    parser.add_argument("--imports", default="http://127.0.0.1:8103")
    parser.add_argument("--api-key", default="local-dev-key")
    parser.add_argument("--stack-dir", default=".local")
    asyncio.run(main(parser.parse_args()))
