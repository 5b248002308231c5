"""The local server survives killed processes (docs/adr/0014): on a private cluster created and
started by devstack's own functions (whatever servers the rest of the suite uses), under a
write load, every PostgreSQL process (or the postmaster alone, leaving its backends orphaned)
is killed with SIGKILL three times in a row and devstack starts it again each time: writes
resume by themselves within seconds, devstack's check after the unclean stop finds no damage,
and every acknowledged document is stored exactly once."""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import ASCENDING, IndexModel, MongoClient, UpdateOne
from pymongo.errors import PyMongoError

from contacts_devstack import documentdb, recovery
from contacts_devstack.processes import StackConfig, stop_process

pytestmark = pytest.mark.integration

KILLS = 3
BATCH = 200
RESUME_WITHIN = 15.0  # seconds from devstack's start returning to the next acknowledged write
INDEXES = [  # contact-svc's (ContactRepository.create_indexes)
    IndexModel([("search_terms", ASCENDING)], name="search_terms_1"),
    IndexModel([("created_order", ASCENDING)], name="created_order_1"),
    IndexModel([("outbox.id", ASCENDING)], name="outbox_pending", sparse=True),
]


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
    private_cluster: Any,
    kill: str,  # conftest: PrivateCluster
) -> None:
    kills: dict[str, Callable[[], None]] = {
        "every process": private_cluster.kill_every_process,
        "the postmaster alone": private_cluster.kill_postmaster,
    }
    assert private_cluster.start() is None  # a new cluster: nothing to recover
    with WriteLoad(private_cluster.cfg.mongodb_url) as load:
        for _ in range(KILLS):
            load.wait_for_writes(4 * BATCH, timeout=30)
            kills[kill]()
            report = private_cluster.start()
            assert report is not None, "devstack did not notice the unclean stop"
            assert report.damaged == [], report.damaged
            assert report.relations > 0
            assert recovery.processes_of_data_dir(
                private_cluster.cfg.postgres_data, recovery.running_processes()
            ), "PostgreSQL is not running"
            load.wait_for_writes(BATCH, timeout=RESUME_WITHIN)
        load.wait_for_writes(BATCH, timeout=RESUME_WITHIN)
    acknowledged = load.acknowledged
    client: MongoClient[dict[str, Any]] = MongoClient(private_cluster.cfg.mongodb_url)
    with client:
        contacts = client.crash.contacts
        stored = contacts.count_documents({"_id": {"$in": acknowledged}})
        per_key = contacts.aggregate([{"$group": {"_id": "$key", "n": {"$sum": 1}}}])
        duplicated = [group for group in per_key if group["n"] != 1]
    assert stored == len(set(acknowledged)) == len(acknowledged)
    assert duplicated == []


# -- a damaged index found after an unclean stop and repaired ------------------------------------

DOCUMENTS = 500  # a few leaf pages in each damaged index
LOWEST = 50  # the lowest _ids: their keys (and their parts' keys) are on block 1 of an index,
# its leftmost leaf (the first leaf an index has: a split moves a page's upper half out)
NOTES_BYTES = 2000  # hex-encoded: 4 KB of random text, stored out of line (TOAST), in 2 parts
BLOCK_SIZE = 8192
# Which B-tree index of the collection's table is damaged: its primary key (the _id index), or
# the index of its TOAST table, through which PostgreSQL finds the parts of a large document.
TARGETS = {
    "_id index": "i.indrelid = t.oid AND i.indisprimary",
    "TOAST index": "i.indrelid = t.reltoastrelid",
}
# What is written over block 1 of the index once every process is dead, and what amcheck's
# bt_index_check (devstack's check) then says: both are errors, neither is skipped silently.
DAMAGE = {
    # nbtree's page check (_bt_checkpage) refuses an all-zero page it reaches.
    "zeros": (bytes(BLOCK_SIZE), 'index "{index}" contains unexpected zero page at block 1'),
    # The buffer manager checks every page header it reads (pd_flags 0xa5a5: invalid bits).
    "garbage": (b"\xa5" * BLOCK_SIZE, "invalid page in block 1 of relation {path}"),
}


@dataclass(frozen=True)
class IndexFile:
    """A B-tree index of a collection: its name and its collection's table (schema-qualified),
    its file (relative to the data directory) and its size in blocks."""

    name: str
    table: str
    path: str
    blocks: int


def _psql(cfg: StackConfig, sql: str) -> list[list[str]]:
    """Rows of `sql` run by psql on the cluster (its TCP port), fields split."""
    done = subprocess.run(
        documentdb.psql_command(cfg.host, cfg.postgres_port, "-X", "-q", "-A", "-t", "-F", "\t"),
        input=sql,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def _btree_index(cfg: StackConfig, database: str, collection: str, target: str) -> IndexFile:
    """The B-tree index `target` (TARGETS) of a collection's table in `documentdb_data`."""
    [[name, table, path, blocks]] = _psql(
        cfg,
        f"""
        SELECT i.indexrelid::regclass, t.oid::regclass, pg_relation_filepath(i.indexrelid),
               pg_relation_size(i.indexrelid) / current_setting('block_size')::int
        FROM documentdb_api_catalog.collections c
        JOIN pg_class t ON t.oid = ('documentdb_data.documents_' || c.collection_id)::regclass
        JOIN pg_index i ON {TARGETS[target]}
        JOIN pg_class r ON r.oid = i.indexrelid
        JOIN pg_am am ON am.oid = r.relam
        WHERE c.database_name = '{database}' AND c.collection_name = '{collection}'
          AND am.amname = 'btree'
        """,
    )
    return IndexFile(name, table, path, int(blocks))


def index_names(plan: Any) -> set[str]:
    """Every index a query plan (PostgreSQL's JSON plan, as FerretDB's explain returns it)
    scans, at any depth."""
    if isinstance(plan, list):
        return set().union(*map(index_names, plan))
    if not isinstance(plan, dict):
        return set()
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    return found.union(*map(index_names, plan.values()))


def test_index_names_are_found_at_any_depth_of_a_plan() -> None:
    plan = {
        "Plan": {
            "Node Type": "Bitmap Heap Scan",
            "Plans": [
                {"Node Type": "Bitmap Index Scan", "Index Name": "email_1"},
                {"Node Type": "Index Scan", "Index Name": "_id_", "Plans": []},
            ],
        }
    }
    assert index_names({"queryPlanner": plan}) == {"email_1", "_id_"}
    assert index_names({"Plan": {"Node Type": "Seq Scan", "Relation Name": "t"}}) == set()
    assert index_names([{"Index Name": "a"}, "b", 1, None]) == {"a"}


def _contact(number: int) -> dict[str, Any]:
    notes = random.Random(number).randbytes(NOTES_BYTES).hex()
    return {"_id": f"c{number:05d}", "email": f"e{number}@repair.example", "notes": notes}


@pytest.mark.parametrize(
    ("target", "damage"),
    [("_id index", "zeros"), ("_id index", "garbage"), ("TOAST index", "zeros")],
)
def test_a_damaged_index_is_found_and_repaired_before_anything_is_served(
    private_cluster: Any,  # conftest: PrivateCluster
    target: str,
    damage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Block 1 of a B-tree index of a collection damaged while PostgreSQL is down after a
    SIGKILL of every process: devstack's start finds it (amcheck), names it, REINDEXes, and
    only then serves; every document reads back, by its indexes too, and writes go on."""
    cfg: StackConfig = private_cluster.cfg
    assert private_cluster.start() is None  # a new cluster: nothing to recover
    documents = [_contact(number) for number in range(DOCUMENTS)]
    with MongoClient(cfg.mongodb_url) as client:
        client.repair.contacts.create_index([("email", ASCENDING)], name="email_1")
        client.repair.contacts.insert_many(documents)
    index = _btree_index(cfg, "repair", "contacts", target)
    assert index.blocks >= 3, index  # a meta page (block 0), then block 1, a leaf, and more

    # FerretDB goes first (no pooled connection of its own to the killed server); block 1 is
    # on disk as of the CHECKPOINT, and no WAL record after it would rewrite the page.
    stop_process(cfg, "ferretdb")
    _psql(cfg, "CHECKPOINT")
    private_cluster.kill_every_process()
    assert not private_cluster.postgres_running()
    written, reason = DAMAGE[damage]
    with (cfg.postgres_data / index.path).open("r+b") as file:
        file.seek(BLOCK_SIZE)
        file.write(written)
    expected = recovery.Damage(
        index.name, reason.format(index=index.name.split(".")[-1], path=index.path)
    )

    capsys.readouterr()
    report = private_cluster.start()
    log = capsys.readouterr().err
    assert report is not None, "devstack did not notice the unclean stop"
    assert report.relations > 0
    assert report.damaged and report.damaged[0] == expected, report.damaged  # amcheck's
    # (the write probe may meet the damage too, in the collection's table)
    assert {found.relation for found in report.damaged} <= {index.name, index.table}
    said = [
        "postgres: the cluster was not shut down cleanly (state: in production)",
        f"postgres: checked {report.relations} relations of documentdb_data",
        f": {len(report.damaged)} damaged\n",
        f"postgres: damaged: {expected.relation}: {expected.reason}\n",
        "postgres: REINDEX SCHEMA documentdb_data took ",
        "postgres: started",
    ]
    at = [log.find(line) for line in said]
    assert -1 not in at and at == sorted(at), log

    rebuilt = _btree_index(cfg, "repair", "contacts", target)
    assert rebuilt.name == index.name and rebuilt.path != index.path  # REINDEX wrote it anew
    # heapallindexed: every row of the table has its entry in the index
    _psql(cfg, f"SELECT bt_index_check('{index.name}'::regclass, true)")
    owner = documentdb.cluster_owner()
    db = recovery.Database(cfg.host, cfg.postgres_port, owner)
    assert recovery.find_damage(db).damaged == []  # devstack's own check, on the served cluster

    with MongoClient(cfg.mongodb_url) as client:
        contacts = client.repair.contacts
        stored = {document["_id"]: document for document in contacts.find()}
        assert stored == {document["_id"]: document for document in documents}
        # By _id, through its index: the lowest ones had their keys on the damaged page.
        lowest = {"_id": {"$lt": _contact(LOWEST)["_id"]}}
        assert list(contacts.find(lowest).sort("_id")) == documents[:LOWEST]
        assert "_id_" in index_names(contacts.find(lowest).explain())
        last = documents[-1]
        assert contacts.find_one({"_id": last["_id"]}) == last
        by_email = {"email": documents[7]["email"]}
        assert list(contacts.find(by_email)) == [documents[7]]
        assert "email_1" in index_names(contacts.find(by_email).explain())
        added = [_contact(number) for number in range(DOCUMENTS, DOCUMENTS + 100)]
        contacts.insert_many(added)
        changed = contacts.update_one({"_id": documents[0]["_id"]}, {"$set": {"n": 1}})
        assert changed.modified_count == 1
        assert contacts.find_one({"_id": added[0]["_id"]}) == added[0]
        assert contacts.count_documents({}) == DOCUMENTS + len(added)

    # A clean stop, as devstack stops the stack, and a start: nothing to check.
    stop_process(cfg, "ferretdb")
    recovery.stop_postgres(cfg)
    capsys.readouterr()
    assert private_cluster.start() is None
    log = capsys.readouterr().err
    assert "not shut down cleanly" not in log and "damaged" not in log, log
    with MongoClient(cfg.mongodb_url) as client:
        assert client.repair.contacts.count_documents({}) == DOCUMENTS + len(added)
        assert client.repair.contacts.count_documents({"n": 1}) == 1
