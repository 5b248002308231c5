"""`contacts import FILE --profile ID`: upload a CSV to import-svc and follow the import live
(rows read, applied, refused, rows/s) until it ends, then print the counts and where the
refused rows are. Exit status 0 when the import completed (with or without refused rows),
1 when it failed or was cancelled, 2 when the upload was refused."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

import httpx

from contacts_shared.commands import ImportAction
from contacts_shared.values import DateOrder

POLL_SECONDS = 0.5


def _line(state: dict[str, Any]) -> str:
    counts = state["counts"]
    rate = state["rows_per_second"]
    return (
        f"{state['status']:<21} read {counts['read']:>10,}  applied {counts['applied']:>10,}  "
        f"refused {counts['refused']:>8,}  {rate or 0:>9,.0f} rows/s"
    )


def follow(
    api: httpx.Client, url: str, out: TextIO, *, live: bool, poll_seconds: float = POLL_SECONDS
) -> dict[str, Any]:
    """Poll the import until it ends, showing its progress on one line (rewritten in place
    on a terminal, a line per change otherwise); its final state."""
    shown = ""
    while True:
        state: dict[str, Any] = api.get(url).raise_for_status().json()
        line = _line(state)
        if line != shown:
            out.write(("\r" + line) if live else (line + "\n"))
            out.flush()
            shown = line
        if state["finished_at"]:
            if live:
                out.write("\n")
            return state
        time.sleep(poll_seconds)


def summary(state: dict[str, Any], refused_url: str) -> str:
    counts = state["counts"]
    outcomes = ", ".join(
        f"{name} {counts[name]:,}"
        for name in ("created", "updated", "unchanged", "unsubscribed", "duplicate", "not_found")
        if counts.get(name)
    )
    lines = [f"import {state['id']}: {state['status']}", f"  {outcomes or 'nothing applied'}"]
    if state.get("error"):
        lines.append(f"  error: {state['error']}")
    lines += [f"  {p['column']}: {p['reason']}" for p in state.get("problems", [])]
    if counts["refused"]:
        lines.append(f"  {counts['refused']:,} rows refused, with reasons: GET {refused_url}")
    lines += [f"  note: {notice}" for notice in state.get("notices", [])]
    return "\n".join(lines)


def run(args: argparse.Namespace, out: TextIO) -> int:
    headers = {"Authorization": f"Bearer {args.api_key}"}
    form = {
        "profile_id": args.profile,
        "action": args.action,
        "date_order": args.date_order,
        **({"reference": args.reference} if args.reference else {}),
        **({"delimiter": args.delimiter} if args.delimiter else {}),
        **({"encoding": args.encoding} if args.encoding else {}),
    }
    with httpx.Client(base_url=args.url, headers=headers, timeout=300) as api:
        with open(args.file, "rb") as upload:
            response = api.post(
                "/v1/imports", data=form, files={"file": (os.path.basename(args.file), upload)}
            )
        if response.status_code != 202:
            out.write(f"import refused ({response.status_code}): {response.text}\n")
            return 2
        url = f"/v1/imports/{response.json()['id']}"
        state = follow(api, url, out, live=out.isatty())
        refused_url = f"{args.logs_url}/v1/logs/imports/{state['id']}/refused"
        out.write(summary(state, refused_url) + "\n")
    return 0 if state["status"] in ("completed", "completed_with_errors") else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="contacts", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    imports = commands.add_parser("import", help="import a CSV file into a profile")
    imports.add_argument("file", help="the CSV file")
    imports.add_argument("--profile", required=True, help="the profile's id")
    imports.add_argument(
        "--action", choices=[a.value for a in ImportAction], default="append_or_update"
    )
    imports.add_argument("--reference", help="a note on the batch, kept in the log")
    imports.add_argument("--delimiter", help="detected when not given (, ; tab |)")
    imports.add_argument("--encoding", help="detected when not given (utf-8, windows-1252)")
    imports.add_argument(
        "--date-order", choices=[o.value for o in DateOrder], default=DateOrder.DAY_FIRST.value
    )
    imports.add_argument(
        "--url", default=os.environ.get("CONTACTS_IMPORT_URL", "http://127.0.0.1:8103")
    )
    imports.add_argument(
        "--logs-url",
        default=os.environ.get("CONTACTS_LOGS_URL", "http://127.0.0.1:8105"),
        help="log-svc, which keeps the refused rows",
    )
    imports.add_argument("--api-key", default=os.environ.get("CONTACTS_API_KEY", "local-dev-key"))
    sys.exit(run(parser.parse_args(argv), sys.stdout))


if __name__ == "__main__":
    main()
