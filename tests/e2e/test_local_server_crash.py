"""The local server survives killed processes (docs/adr/0014): on a private cluster created and
started by devstack's own functions (whatever servers the rest of the suite uses), under a
write load, every PostgreSQL process (or the postmaster alone, leaving its backends orphaned)
is killed with SIGKILL three times in a row and devstack starts it again each time: writes
resume by themselves within seconds, devstack's check after the unclean stop finds no damage,
and every acknowledged document is stored exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from pymongo import ASCENDING, IndexModel, MongoClient, UpdateOne
from pymongo.errors import PyMongoError

from contacts_devstack import documentdb, recovery
from contacts_devstack.processes import (
    REPO_ROOT,
    StackConfig,
    free_port,
    pid_alive,
    read_pid,
    stop_process,
)
from contacts_devstack.stack import start_local_server

pytestmark = pytest.mark.integration

KILLS = 3
BATCH = 200
RESUME_WITHIN = 15.0  # seconds from devstack's start returning to the next acknowledged write
INDEXES = [  # contact-svc's (ContactRepository.create_indexes)
    IndexModel([("search_terms", ASCENDING)], name="search_terms_1"),
    IndexModel([("created_order", ASCENDING)], name="created_order_1"),
    IndexModel([("outbox.id", ASCENDING)], name="outbox_pending", sparse=True),
]


class PrivateCluster:
    """A PostgreSQL cluster and FerretDB of the test's own under `.local/` (the `postgres` user
    must reach its data), on free ports, with the installed extensions and FerretDB."""

    def __init__(self) -> None:
        shared = StackConfig()
        documentdb.install(shared)  # the extensions and FerretDB, if this machine lacks them
        home = REPO_ROOT / ".local" / f"e2e-crash-{uuid.uuid4().hex[:8]}"
        home.mkdir(parents=True)
        (home / "bin").symlink_to(shared.home / "bin")
        self.cfg = replace(shared, home=home, postgres_port=free_port(), mongo_port=free_port())

    def start(self) -> recovery.CheckReport | None:
        return start_local_server(self.cfg)

    def kill_every_process(self) -> None:
        recovery.kill_data_dir_processes(self.cfg.postgres_data, "test")

    def kill_postmaster(self) -> None:
        postmaster = read_pid(self.cfg, "postgres")
        assert postmaster is not None
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(postmaster):  # its backends live on, orphaned
            assert time.monotonic() < deadline, "the postmaster survived SIGKILL"
            time.sleep(0.05)

    def close(self) -> None:
        stop_process(self.cfg, "ferretdb")
        recovery.kill_data_dir_processes(self.cfg.postgres_data, "end of test")
        shutil.rmtree(self.cfg.home, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    made = PrivateCluster()
    try:
        yield made
    finally:
        made.close()


class WriteLoad:
    """Bulk upserts of new contacts from a thread, each batch retried until acknowledged."""

    def __init__(self, url: str) -> None:
        self.client: MongoClient[dict[str, Any]] = MongoClient(
            url, serverSelectionTimeoutMS=2000, socketTimeoutMS=60_000
        )
        self.collection = self.client.crash.contacts
        self.collection.create_indexes(INDEXES)
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WriteLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
        self.client.close()

    def _run(self) -> None:
        batch = 0
        while not self._stop.is_set():
            keys = [f"b{batch}-{i}@crash.example" for i in range(BATCH)]
            try:
                self.collection.bulk_write([_upsert(key) for key in keys], ordered=False)
            except PyMongoError:
                time.sleep(0.2)
                continue
            self.acknowledged.extend(f"p1:{key}" for key in keys)
            batch += 1

    def wait_for_writes(self, count: int, timeout: float) -> float:
        """Seconds until `count` more documents are acknowledged."""
        started, target = time.monotonic(), len(self.acknowledged) + count
        while len(self.acknowledged) < target:
            assert time.monotonic() - started < timeout, f"no writes for {timeout:.0f}s"
            time.sleep(0.05)
        return time.monotonic() - started


def _upsert(key: str) -> UpdateOne:
    terms = ["status\x1fp1\x1factive", f"field\x1fp1\x1femail\x1f{key}"]
    document = {
        "profile_id": "p1",
        "key": key,
        "fields": {"email": key, "name": "N", "orders": 3},
        "status": "active",
        "version": 1,
        "search_terms": terms,
        "created_order": f"p1\x1f{time.time():.6f}\x1f{key}",
        "outbox": [{"id": str(uuid.uuid4()), "type": "ContactCreated"}],
    }
    return UpdateOne({"_id": f"p1:{key}"}, {"$set": document}, upsert=True)


@pytest.mark.parametrize("kill", ["every process", "the postmaster alone"])
def test_writes_resume_after_killed_postgres_and_nothing_is_lost(
    cluster: PrivateCluster, kill: str
) -> None:
    kills: dict[str, Callable[[], None]] = {
        "every process": cluster.kill_every_process,
        "the postmaster alone": cluster.kill_postmaster,
    }
    assert cluster.start() is None  # a new cluster: nothing to recover
    with WriteLoad(cluster.cfg.mongodb_url) as load:
        for _ in range(KILLS):
            load.wait_for_writes(4 * BATCH, timeout=30)
            kills[kill]()
            report = cluster.start()
            assert report is not None, "devstack did not notice the unclean stop"
            assert report.damaged == [], report.damaged
            assert report.relations > 0
            assert recovery.processes_of_data_dir(
                cluster.cfg.postgres_data, recovery.running_processes()
            ), "PostgreSQL is not running"
            load.wait_for_writes(BATCH, timeout=RESUME_WITHIN)
        load.wait_for_writes(BATCH, timeout=RESUME_WITHIN)
    acknowledged = load.acknowledged
    client: MongoClient[dict[str, Any]] = MongoClient(cluster.cfg.mongodb_url)
    with client:
        contacts = client.crash.contacts
        stored = contacts.count_documents({"_id": {"$in": acknowledged}})
        per_key = contacts.aggregate([{"$group": {"_id": "$key", "n": {"$sum": 1}}}])
        duplicated = [group for group in per_key if group["n"] != 1]
    assert stored == len(set(acknowledged)) == len(acknowledged)
    assert duplicated == []
