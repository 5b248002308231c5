"""`contacts import FILE --profile ID`: upload a CSV to import-svc and follow the import live
(rows read, applied, refused, rows/s) until it ends, then print the counts and where the
refused rows are. Exit status 0 when the import completed (with or without refused rows),
1 when it failed or was cancelled, 2 when the upload was refused.

`contacts dead-letters list TOPIC` shows the records consumers parked in TOPIC's dead-letter
topic; `contacts dead-letters replay TOPIC --all|--offset P:O|--since|--error-contains` puts
them back on TOPIC, each once (see contacts_shared.dead_letters)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx
from aiokafka.errors import KafkaError

from contacts_shared import dead_letters
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


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


LETTER_COLUMNS = f"{'DLQ P:O':<12} {'ORIGINAL':<40} {'KEY':<24} {'PARKED (UTC)':<19} {'BYTES':>8}"


def _letter_line(letter: dead_letters.DeadLetter) -> str:
    original = f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}"
    parked = letter.timestamp.strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"{letter.position!s:<12} {_cut(original, 40):<40} {_cut(letter.key or '-', 24):<24} "
        f"{parked:<19} {letter.size:>8,}"
    )


async def _list(args: argparse.Namespace, out: TextIO) -> int:
    letters = dead_letters.list_dead_letters(
        args.bootstrap_servers, args.topic, suffix=args.dead_letter_suffix
    )
    count = replayed = 0
    async with aclosing(letters):
        async for letter in letters:
            count, replayed = count + 1, replayed + letter.replayed
            if args.json:
                out.write(json.dumps(letter.as_json()) + "\n")
            else:
                if count == 1:  # not before: an unknown topic shows its error alone
                    out.write(f"{LETTER_COLUMNS} {'REPLAYED':<8} ERROR\n")
                flag = "yes" if letter.replayed else "no"
                out.write(f"{_letter_line(letter)} {flag:<8} {_cut(letter.error, 100)}\n")
    if not args.json:
        out.write(f"{count:,} dead letter{'' if count == 1 else 's'}, {replayed:,} replayed\n")
    return 0


async def _replay(args: argparse.Namespace, out: TextIO) -> int:
    try:
        selection = dead_letters.parse_selection(
            everything=args.all,
            offsets=args.offset,
            since=args.since,
            error_contains=args.error_contains,
            now=datetime.now(UTC),
        )
    except ValueError as exc:
        raise dead_letters.DeadLetterError(str(exc)) from None
    outcomes = dead_letters.replay_dead_letters(
        args.bootstrap_servers,
        args.topic,
        selection,
        suffix=args.dead_letter_suffix,
        dry_run=args.dry_run,
    )
    counts: dict[str, int] = {}
    seen: set[dead_letters.Position] = set()
    async with aclosing(outcomes):
        async for outcome in outcomes:
            if args.json:
                out.write(json.dumps(outcome.as_json()) + "\n")
            else:
                if not seen:
                    out.write(f"{'OUTCOME':<16} {LETTER_COLUMNS} ERROR\n")
                note = outcome.reason or _cut(outcome.letter.error, 100)
                out.write(f"{outcome.outcome:<16} {_letter_line(outcome.letter)} {note}\n")
            counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
            seen.add(outcome.letter.position)
    missing = sorted(selection.positions - seen)
    for position in missing:
        sys.stderr.write(f"contacts: no dead letter at {position} matching the selection\n")
    if not args.json:
        done = ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items())) or "nothing"
        out.write(f"{done}{' (dry run: nothing sent)' if args.dry_run else ''}\n")
    return 1 if missing or counts.get("skipped") else 0


def _run_dead_letters(args: argparse.Namespace, out: TextIO) -> int:
    """Run `list` or `replay`; 2 when the topic or selection is wrong, 1 when Kafka fails."""
    try:
        dead_letters.topics_of(args.topic, args.dead_letter_suffix)
    except ValueError as exc:
        sys.stderr.write(f"contacts: {exc}\n")
        return 2
    try:
        status: int = asyncio.run(args.dead_letters_run(args, out))
        return status
    except dead_letters.DeadLetterError as exc:
        sys.stderr.write(f"contacts: {exc}\n")
        return 2
    except (KafkaError, TimeoutError) as exc:
        sys.stderr.write(f"contacts: Kafka at {args.bootstrap_servers}: {exc!r}\n")
        return 1


def add_dead_letter_commands(commands: Any) -> None:
    """`dead-letters list` and `dead-letters replay`, each with the Kafka options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "topic", help="the original topic (contacts.commands) or its dead-letter topic"
    )
    common.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("CONTACTS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    common.add_argument(
        "--dead-letter-suffix", default=os.environ.get("CONTACTS_DEAD_LETTER_SUFFIX", ".dlq")
    )
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    group = commands.add_parser("dead-letters", help="look at and replay dead-lettered records")
    actions = group.add_subparsers(dest="dead_letters_command", required=True)
    listing = actions.add_parser(
        "list", parents=[common], help="the dead letters of a topic, as of now"
    )
    listing.set_defaults(command_run=_run_dead_letters, dead_letters_run=_list)
    replay = actions.add_parser(
        "replay",
        parents=[common],
        help="put dead letters back on their original topic, each once",
        description="Selects --all, or the dead letters matching every filter given.",
    )
    replay.add_argument("--all", action="store_true", help="every dead letter not yet replayed")
    replay.add_argument(
        "--offset",
        action="append",
        default=[],
        metavar="PARTITION:OFFSET",
        help="a dead letter's position in the dead-letter topic, as list shows it (repeatable)",
    )
    replay.add_argument("--since", help="parked since: 30m, 2h, 7d or an ISO 8601 time")
    replay.add_argument("--error-contains", help="the error mentions this (any case)")
    replay.add_argument("--dry-run", action="store_true", help="show what would go, send nothing")
    replay.set_defaults(command_run=_run_dead_letters, dead_letters_run=_replay)


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
    imports.set_defaults(command_run=run)
    add_dead_letter_commands(commands)
    args = parser.parse_args(argv)
    sys.exit(args.command_run(args, sys.stdout))


if __name__ == "__main__":
    main()
