"""Crash safety and cost of the local server's PostgreSQL settings (docs/adr/0014).

On a private cluster of its own (under `.local/`, free ports, a FerretDB of its own; the running
stack is not touched), created and started by devstack's own functions:

- `crash`: under a write load shaped like contact-svc's (bulk upserts of contact documents into
  a collection with its indexes), SIGKILL of every PostgreSQL process, `--kills` times, each
  followed by a plain restart (no devstack check, to see what the settings alone do): whether
  writes resume within seconds, whether a backend spins, what amcheck and a write probe find.
- `rate`: the raw bulk write rate of the same load under each setting, alternating the
  settings run by run in one process (settings reloaded, a checkpoint before each run), for
  `--rounds` rounds; medians.

    uv run --frozen python bench/local_server_crash.py crash --variant "fsync=off fpw=off"
    uv run --frozen python bench/local_server_crash.py rate --rounds 5 --seconds 8
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import statistics
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, IndexModel, MongoClient, UpdateOne
from pymongo.errors import PyMongoError

from contacts_devstack import documentdb, recovery
from contacts_devstack.processes import (
    REPO_ROOT,
    StackConfig,
    free_port,
    start_processes,
    stop_process,
)
from contacts_devstack.stack import start_local_server

SAFE = {"fsync": "off", "full_page_writes": "on"}
VARIANTS: dict[str, dict[str, str]] = {
    "fsync=off fpw=off": {"fsync": "off", "full_page_writes": "off"},
    "fsync=off fpw=on": SAFE,
    "fsync=on fpw=on": {"fsync": "on", "full_page_writes": "on"},
    "fsync=off fpw=on lz4": {**SAFE, "wal_compression": "lz4"},
    "fsync=off fpw=on lz4 4GB/15min": {
        **SAFE,
        "wal_compression": "lz4",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
    },
}
COLLECTION_INDEXES = [  # as contact-svc's repository creates them
    IndexModel([("search_terms", ASCENDING)], name="search_terms_1"),
    IndexModel([("created_order", ASCENDING)], name="created_order_1"),
    IndexModel([("outbox.id", ASCENDING)], name="outbox_pending", sparse=True),
]
BATCH = 500


def contact(profile: str, key: str) -> dict[str, Any]:
    """A contact document as contact-svc stores it, with several fields and a pending event."""
    now = datetime.now(UTC)
    fields = {"email": key, "name": f"N {key[:6]}", "orders": random.randint(0, 50), "city": "X"}
    return {
        "_id": f"{profile}:{key}",
        "account_id": "acct-bench",
        "profile_id": profile,
        "key": key,
        "fields": fields,
        "status": "active",
        "status_source": "webhook",
        "status_changed_at": now,
        "source": "webhook",
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "search_terms": [f"status\x1f{profile}\x1factive"]
        + [f"field\x1f{profile}\x1f{k}\x1f{v}" for k, v in fields.items()],
        "created_order": f"{profile}\x1f{now.isoformat()}\x1f{key}",
        "outbox": [{"id": str(uuid.uuid4()), "type": "ContactCreated", "at": now}],
    }


def upserts(documents: list[dict[str, Any]]) -> list[UpdateOne]:
    return [UpdateOne({"_id": d["_id"]}, {"$set": d}, upsert=True) for d in documents]


class PrivateServer:
    """A PostgreSQL cluster and FerretDB of the bench's own, started by devstack."""

    def __init__(self, name: str) -> None:
        home = REPO_ROOT / ".local" / f"bench-crash-{name}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        (home / "bin").symlink_to(StackConfig().home / "bin")  # the installed FerretDB
        self.cfg = replace(
            StackConfig(), home=home, postgres_port=free_port(), mongo_port=free_port()
        )
        self.db = recovery.Database(
            self.cfg.host, self.cfg.postgres_port, documentdb.cluster_owner()
        )

    def start(self) -> recovery.CheckReport | None:
        return start_local_server(self.cfg)

    def restart_without_check(self) -> None:
        """What PostgreSQL does by itself: replay its WAL, then serve."""
        start_processes(self.cfg, [documentdb.postgres_process(self.cfg)])
        documentdb.wait_until_accepting(self.cfg)

    def configure(self, settings: dict[str, str]) -> None:
        sql = "".join(f"ALTER SYSTEM SET {k} = '{v}';" for k, v in settings.items())
        self.db.psql(sql + "SELECT pg_reload_conf();", timeout=30, statement_timeout=30)

    def sql(self, text: str) -> str:
        return self.db.psql(text, timeout=120, statement_timeout=120)

    def kill_every_process(self) -> list[int]:
        return recovery.kill_data_dir_processes(self.cfg.postgres_data, "bench")

    def close(self) -> None:
        stop_process(self.cfg, "ferretdb")
        recovery.stop_postgres(self.cfg)
        shutil.rmtree(self.cfg.home, ignore_errors=True)


# -- crash ---------------------------------------------------------------------------------------


def load(url: str, acked: Path, stop: Any) -> None:
    """Bulk upserts of new contacts as fast as the server takes them, retrying a batch until
    it is acknowledged; the number of acknowledged documents goes to `acked`."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=2000, socketTimeoutMS=120_000
    )
    collection = client.bench.contacts
    written, batch = 0, 0
    while not stop.is_set():
        documents = [contact("p1", f"b{batch}-{i}@crash.example") for i in range(BATCH)]
        try:
            collection.bulk_write(upserts(documents), ordered=False)
        except PyMongoError:
            time.sleep(0.2)
            continue
        written, batch = written + BATCH, batch + 1
        acked.write_text(str(written))


def acknowledged(acked: Path) -> int:
    try:
        return int(acked.read_text() or 0)
    except (OSError, ValueError):
        return 0


def seconds_until_progress(acked: Path, timeout: float) -> float | None:
    started, before = time.monotonic(), acknowledged(acked)
    while time.monotonic() - started < timeout:
        if acknowledged(acked) > before:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def spinning_backends(server: PrivateServer, older_than: float = 10.0) -> list[str]:
    return server.sql(
        "SELECT pid || ' ' || left(query, 60) FROM pg_stat_activity "
        f"WHERE state = 'active' AND now() - query_start > interval '{older_than} seconds' "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).splitlines()


def crash(variant: str, kills: int) -> None:
    server = PrivateServer("crash")
    stop = multiprocessing.Event()
    try:
        server.start()
        server.configure(VARIANTS[variant])
        client: MongoClient[dict[str, Any]] = MongoClient(server.cfg.mongodb_url)
        client.bench.contacts.create_indexes(COLLECTION_INDEXES)
        acked = server.cfg.home / "acked"
        worker = multiprocessing.Process(
            target=load, args=(server.cfg.mongodb_url, acked, stop), daemon=True
        )
        worker.start()
        print(f"{variant}: {VARIANTS[variant]}")
        for kill in range(1, kills + 1):
            time.sleep(random.uniform(3.0, 8.0))
            pids = server.kill_every_process()
            written = acknowledged(acked)
            server.restart_without_check()
            resumed = seconds_until_progress(acked, timeout=20.0)
            time.sleep(3.0)
            spinning = spinning_backends(server, older_than=5.0)
            report = recovery.find_damage(server.db)
            damaged = [f"{d.relation}: {d.reason[:80]}" for d in report.damaged]
            after = f"after {resumed:.1f}s" if resumed is not None else "NOT within 20s"
            print(
                f"kill {kill}: {len(pids)} processes at {written} documents; writes resumed "
                f"{after}; "
                f"spinning backends {len(spinning)}; damaged {damaged or 'none'} "
                f"(check {report.seconds:.1f}s)",
                flush=True,
            )
            if spinning or damaged or resumed is None:
                print(f"{variant}: damage after {kill} kill(s)")
                return
        stop.set()
        worker.join(timeout=60)
        stored = client.bench.contacts.count_documents({})
        print(f"{variant}: {kills} kills, no damage; {stored} stored, {acknowledged(acked)} acked")
    finally:
        stop.set()
        server.kill_every_process()  # spinning backends ignore a shutdown
        server.close()


# -- rate ----------------------------------------------------------------------------------------


def write_rate(client: MongoClient[dict[str, Any]], seconds: float) -> float:
    """Documents a second bulk-upserted into a fresh collection with contact-svc's indexes."""
    collection = client.bench[f"rate_{uuid.uuid4().hex[:8]}"]
    collection.create_indexes(COLLECTION_INDEXES)
    written, spent, batch = 0, 0.0, 0
    while spent < seconds:
        documents = [contact("p1", f"r{batch}-{i}@rate.example") for i in range(BATCH)]
        started = time.perf_counter()
        collection.bulk_write(upserts(documents), ordered=False)
        spent += time.perf_counter() - started
        written, batch = written + BATCH, batch + 1
    collection.drop()
    return written / spent


def single_write_rate(client: MongoClient[dict[str, Any]], seconds: float) -> float:
    """Documents a second inserted one by one (one commit each), as single updates commit."""
    collection = client.bench[f"single_{uuid.uuid4().hex[:8]}"]
    collection.create_indexes(COLLECTION_INDEXES)
    written, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        collection.insert_one(contact("p1", f"s{written}@rate.example"))
        written += 1
    rate = written / (time.perf_counter() - started)
    collection.drop()
    return rate


MEASURES = {"bulk": write_rate, "single": single_write_rate}


def rate(names: list[str], rounds: int, seconds: float, measure: str) -> None:
    server = PrivateServer("rate")
    try:
        server.start()
        client: MongoClient[dict[str, Any]] = MongoClient(server.cfg.mongodb_url)
        figures: dict[str, list[float]] = {name: [] for name in names}
        defaults = {"wal_compression": "off", "max_wal_size": "1GB", "checkpoint_timeout": "5min"}
        for round_number in range(rounds):
            for name in random.sample(names, len(names)):
                server.configure({**defaults, **VARIANTS[name]})
                server.sql("CHECKPOINT;")
                figures[name].append(MEASURES[measure](client, seconds))
            print(
                f"round {round_number + 1}: "
                + ", ".join(f"{n} {figures[n][-1]:,.0f}/s" for n in names),
                flush=True,
            )
        wal = server.sql("SELECT pg_size_pretty(pg_current_wal_lsn() - '0/0');").strip()
        print(
            f"\nraw {measure} write rate, {rounds} runs of {seconds:.0f}s each, medians "
            f"(WAL written in all: {wal}):"
        )
        for name in names:
            values = figures[name]
            print(
                f"  {name:<32} {statistics.median(values):8,.0f} docs/s  "
                f"(min {min(values):,.0f}, max {max(values):,.0f})"
            )
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    crash_parser = sub.add_parser("crash")
    crash_parser.add_argument("--variant", choices=list(VARIANTS), default="fsync=off fpw=on")
    crash_parser.add_argument("--kills", type=int, default=5)
    rate_parser = sub.add_parser("rate")
    rate_parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    rate_parser.add_argument("--rounds", type=int, default=5)
    rate_parser.add_argument("--seconds", type=float, default=8.0)
    rate_parser.add_argument("--measure", choices=list(MEASURES), default="bulk")
    args = parser.parse_args()
    if args.command == "crash":
        crash(args.variant, args.kills)
    else:
        rate(args.variants, args.rounds, args.seconds, args.measure)


if __name__ == "__main__":
    main()
