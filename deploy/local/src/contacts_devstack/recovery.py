"""PostgreSQL after an unclean stop (docs/adr/0014): processes a dead postmaster left behind,
whether the cluster was shut down cleanly, and a check of DocumentDB's tables and indexes for
damage, repaired by a REINDEX, before FerretDB serves them again. Standard library only."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from contacts_devstack.documentdb import (
    PG_BIN,
    cluster_owner,
    psql_command,
    socket_dir,
    wait_for_postgres,
)
from contacts_devstack.processes import (
    StackConfig,
    StopStep,
    log,
    stop_escalating,
    stop_pid_escalating,
)

DOCUMENTS_SCHEMA = "documentdb_data"
# The states pg_controldata reports for a cluster that stopped by itself, cleanly.
CLEAN_STATES = ("shut down", "shut down in recovery")


# -- processes of a data directory ------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    """What /proc says of one process: its working directory and its arguments."""

    pid: int
    cwd: str | None
    cmdline: tuple[str, ...]


def processes_of_data_dir(data_dir: Path, processes: Iterable[ProcessInfo]) -> list[int]:
    """Pids of the processes of the PostgreSQL of `data_dir`: a postmaster names it in its
    arguments (`-D`), and it and every backend it forks work in it."""
    wanted = os.path.realpath(data_dir)
    return sorted(
        info.pid
        for info in processes
        if info.cwd == wanted or any(os.path.realpath(arg) == wanted for arg in info.cmdline[1:])
    )


def running_processes() -> list[ProcessInfo]:
    """Every process /proc lets us read (others' cwd needs root, as devstack runs as)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd: str | None = os.readlink(entry / "cwd")
        except PermissionError:
            cwd = None
        except OSError:  # gone meanwhile
            continue
        args = tuple(part.decode(errors="replace") for part in cmdline if part)
        found.append(ProcessInfo(int(entry.name), cwd, args))
    return found


def postmaster_pid(lock_file_text: str) -> int | None:
    """The postmaster's pid, the first line of `postmaster.pid`."""
    first = lock_file_text.split("\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def postmaster_running(data_dir: Path) -> bool:
    """Whether the postmaster of `data_dir` lives: its port alone does not tell, as orphaned
    backends of a killed postmaster may hold its listening socket open."""
    try:
        pid = postmaster_pid((data_dir / "postmaster.pid").read_text())
    except OSError:
        return False
    return pid is not None and pid in processes_of_data_dir(data_dir, running_processes())


def shared_memory_users(lock_file_text: str, sysvipc_shm: str) -> int:
    """How many processes are attached to the shared memory segment `postmaster.pid` names
    (its 7th line: key and id), per /proc/sysvipc/shm; 0 when it is gone. PostgreSQL refuses
    to start while any are ("pre-existing shared memory block ... is still in use")."""
    lines = lock_file_text.splitlines()
    fields = lines[6].split() if len(lines) > 6 else []
    if len(fields) != 2:
        return 0
    header, *rows = sysvipc_shm.splitlines()
    columns = header.split()
    for row in rows:
        values = dict(zip(columns, row.split(), strict=False))
        if values.get("shmid") == fields[1]:
            return int(values["nattch"])
    return 0


def wait_for_shared_memory_release(data_dir: Path, timeout: float = 10.0) -> None:
    """Until no process is attached to the dead postmaster's shared memory: its backends
    exit by themselves when they notice its death, a moment after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            lock = (data_dir / "postmaster.pid").read_text()
        except OSError:
            return
        users = shared_memory_users(lock, Path("/proc/sysvipc/shm").read_text())
        if users == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{users} processes still use the shared memory of {data_dir}")
        kill_data_dir_processes(data_dir, "processes still using the old shared memory")
        time.sleep(0.1)


def kill_data_dir_processes(data_dir: Path, reason: str) -> list[int]:
    """SIGKILL every process of the PostgreSQL of `data_dir` and wait until they are gone;
    says so, with `reason`, when there were any."""
    pids = processes_of_data_dir(data_dir, running_processes())
    if not pids:
        return []
    log(f"postgres: {reason}: SIGKILL of pids {', '.join(map(str, pids))} of {data_dir}")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_until_gone(data_dir, timeout=10.0)
    return pids


def _wait_until_gone(data_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while processes_of_data_dir(data_dir, running_processes()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {data_dir} survived SIGKILL for {timeout:.0f}s")
        time.sleep(0.1)


# -- clean or unclean stop ----------------------------------------------------------------------


def cluster_state(controldata_output: str) -> str:
    """The "Database cluster state" line of `pg_controldata`'s output."""
    for line in controldata_output.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Database cluster state":
            return value.strip()
    raise ValueError("pg_controldata printed no 'Database cluster state'")


def stopped_cleanly(state: str) -> bool:
    """Whether a cluster in `state` (no postmaster running) stopped cleanly: any other state
    (`in production`, `in crash recovery`, ...) means its processes died."""
    return state in CLEAN_STATES


def read_cluster_state(data_dir: Path, user: str | None) -> str:
    output = subprocess.run(
        [str(PG_BIN / "pg_controldata"), "-D", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        user=user,
        env={**os.environ, "LC_ALL": "C"},  # the labels are translated otherwise
    ).stdout
    return cluster_state(output)


# -- damage after an unclean stop -----------------------------------------------------------------

# amcheck verifies B-tree indexes and heap tables; each relation's error is caught and named
# instead of ending the check. RUM indexes (DocumentDB's) have no checker: see RUM_PROBE.
# Checked: the schema's tables and indexes, and the TOAST table of each of its tables with
# that table's B-tree index (in `pg_toast`: they hold the parts of every large document, and a
# damaged page there fails every read of those documents; the REINDEX rebuilds them too).
AMCHECK = f"""
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS amcheck;
CREATE VIEW pg_temp.checked_relations AS
    SELECT c.oid, c.relkind, c.relam
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_index i ON i.indexrelid = c.oid
    WHERE n.nspname = '{DOCUMENTS_SCHEMA}'
       OR coalesce(i.indrelid, c.oid) IN (  -- a TOAST table of the schema, or its index
           SELECT t.reltoastrelid FROM pg_class t
           JOIN pg_namespace tn ON tn.oid = t.relnamespace
           WHERE tn.nspname = '{DOCUMENTS_SCHEMA}');
CREATE FUNCTION pg_temp.damaged_relations() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    rel record;
BEGIN
    FOR rel IN
        SELECT c.oid::regclass AS name, am.amname AS method
        FROM pg_temp.checked_relations c
        JOIN pg_am am ON am.oid = c.relam
        WHERE am.amname IN ('btree', 'heap')
        ORDER BY c.oid
    LOOP
        BEGIN
            IF rel.method = 'btree' THEN
                PERFORM bt_index_check(rel.name);
            ELSIF EXISTS (SELECT FROM verify_heapam(rel.name) LIMIT 1) THEN
                RETURN NEXT rel.name::text || E'\\tverify_heapam reported corruption';
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RETURN NEXT rel.name::text || E'\\t' || SQLERRM;
        END;
    END LOOP;
END
$$;
SELECT count(*) FROM pg_temp.checked_relations WHERE relkind IN ('r', 't', 'i');
SELECT * FROM pg_temp.damaged_relations();
"""

# A write probe for what amcheck cannot read: copies of a sample of each collection's rows,
# inserted under a new object id and rolled back, descend every index of the table (RUM ones
# included) where real keys live. A damaged RUM page makes such an insert fail or spin (a loop
# that ignores statement_timeout), so the probe is bounded from outside too.
RUM_PROBE = f"""
SET client_min_messages = warning;
CREATE FUNCTION pg_temp.probe_writes() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    tab record;
BEGIN
    FOR tab IN
        SELECT c.oid::regclass AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = '{DOCUMENTS_SCHEMA}' AND c.relkind = 'r'
          AND c.relname ~ '^documents_[0-9]+$'
        ORDER BY c.oid
    LOOP
        BEGIN
            EXECUTE format(
                'INSERT INTO %s (shard_key_value, object_id, document) '
                'SELECT shard_key_value, '
                '  documentdb_core.bson_json_to_bson(json_build_object('''', '
                '    ''devstack-probe-'' || gen_random_uuid())::text), '
                '  document FROM %s TABLESAMPLE system_rows (500)',
                tab.name, tab.name);
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'probe rolled back';
        EXCEPTION
            WHEN raise_exception THEN NULL;  -- written and rolled back: sound
            WHEN unique_violation OR exclusion_violation THEN NULL;  -- a unique index, sound
            WHEN OTHERS THEN RETURN NEXT tab.name::text || E'\\t' || SQLERRM;
        END;
    END LOOP;
END
$$;
SELECT * FROM pg_temp.probe_writes();
"""


@dataclass(frozen=True)
class Damage:
    """A relation of DocumentDB's schema found damaged, and what said so."""

    relation: str
    reason: str


def parse_damage(output: str) -> list[Damage]:
    """`relation<TAB>reason` lines, as the checks print them."""
    found = []
    for line in output.splitlines():
        relation, tab, reason = line.partition("\t")
        if tab:
            found.append(Damage(relation, reason))
    return found


@dataclass(frozen=True)
class Database:
    """How psql reaches the cluster being checked."""

    host: str
    port: int
    user: str | None  # the OS user psql runs as (the cluster's owner, when we are root)

    def wait_until_ready(
        self, timeout: float, postmaster: subprocess.Popen[bytes] | None = None
    ) -> None:
        """Until the server accepts connections (after replaying its WAL)."""
        wait_for_postgres(self.host, self.port, timeout, postmaster)

    def psql(self, sql: str, timeout: float, statement_timeout: float) -> str:
        command = psql_command(self.host, self.port, "-X", "-q", "-A", "-t")
        env = {
            **os.environ,
            "PGAPPNAME": "devstack-check",
            "PGOPTIONS": f"-c statement_timeout={int(statement_timeout * 1000)}",
        }
        return subprocess.run(
            command,
            input=sql,
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
            env=env,
            user=self.user,
            cwd="/",
        ).stdout


@dataclass(frozen=True)
class CheckReport:
    """What the check after an unclean stop found: relations of the documents schema, those
    found damaged, the seconds it took (the repair included)."""

    relations: int
    damaged: list[Damage]
    seconds: float


def find_damage(db: Database, timeout: float = 120.0) -> CheckReport:
    """amcheck of DocumentDB's B-tree indexes and heap tables, then the write probe; a probe
    that does not end within its bound counts as damage."""
    started = time.monotonic()
    try:
        output = db.psql(AMCHECK, timeout=timeout + 10, statement_timeout=timeout)
    except subprocess.CalledProcessError as exc:  # statement_timeout, most likely
        log(f"postgres: amcheck did not complete ({exc.stderr.strip()}); going on")
        output = "0\n"
    lines = output.splitlines()
    relations = int(lines[0]) if lines else 0
    damaged = parse_damage(output)
    try:
        damaged += parse_damage(db.psql(RUM_PROBE, timeout=30.0, statement_timeout=20.0))
    except subprocess.TimeoutExpired:
        damaged.append(Damage(DOCUMENTS_SCHEMA, "the write probe did not finish within 30s"))
        kill_stuck_checks(db)
    except subprocess.CalledProcessError as exc:
        damaged.append(Damage(DOCUMENTS_SCHEMA, f"the write probe failed: {exc.stderr.strip()}"))
    return CheckReport(relations, damaged, time.monotonic() - started)


def kill_stuck_checks(db: Database) -> None:
    """SIGKILL of the check's own backends: one spinning in a damaged RUM index ignores every
    gentler signal. PostgreSQL then resets all its backends and replays its WAL again."""
    pids = db.psql(
        "SELECT pid FROM pg_stat_activity "
        "WHERE application_name = 'devstack-check' AND pid <> pg_backend_pid()",
        timeout=10.0,
        statement_timeout=5.0,
    ).split()
    for pid in pids:
        log(f"postgres: SIGKILL of backend {pid}, stuck in the write probe")
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    time.sleep(1.0)  # the postmaster notices the death, then restarts; wait for that
    db.wait_until_ready(timeout=300.0)


# The TOAST tables' indexes first: rebuilding a collection's indexes reads its documents, the
# large ones' parts through the index of its TOAST table, which REINDEX SCHEMA rebuilds only
# after the table's own (a damaged one made the REINDEX fail, and the start with it).
REPAIR = f"""
SELECT format('REINDEX TABLE %s', t.reltoastrelid::regclass)
    FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE n.nspname = '{DOCUMENTS_SCHEMA}' AND t.reltoastrelid <> 0
    ORDER BY t.oid \\gexec
REINDEX SCHEMA {DOCUMENTS_SCHEMA};
"""


def repair(db: Database, timeout: float = 600.0) -> None:
    """REINDEX of the whole documents schema (6 s at a few hundred thousand documents), its
    TOAST tables first: every index is rebuilt from its table. Damage to a table itself is
    only reported."""
    db.psql(REPAIR, timeout=timeout, statement_timeout=timeout)


def check_and_repair(db: Database) -> CheckReport:
    """`find_damage`, then a REINDEX if anything was found; each step logged."""
    started = time.monotonic()
    report = find_damage(db)
    log(
        f"postgres: checked {report.relations} relations of {DOCUMENTS_SCHEMA} (amcheck of "
        f"B-tree indexes and tables, a write probe of each collection) in "
        f"{report.seconds:.1f}s: "
        + (f"{len(report.damaged)} damaged" if report.damaged else "sound")
    )
    if not report.damaged:
        return report
    for damage in report.damaged:
        log(f"postgres: damaged: {damage.relation}: {damage.reason}")
    reindex_started = time.monotonic()
    repair(db)
    took = time.monotonic() - reindex_started
    log(f"postgres: REINDEX SCHEMA {DOCUMENTS_SCHEMA} took {took:.1f}s")
    return CheckReport(report.relations, report.damaged, time.monotonic() - started)


# -- before and after a start -------------------------------------------------------------------


def prepare_start(cfg: StackConfig) -> str | None:
    """Before the cluster starts (nothing listens on its port): SIGKILL of the processes a
    dead postmaster left (they would hold its shared memory, and the start would refuse); the
    cluster's state if it did not stop cleanly, else None."""
    kill_data_dir_processes(cfg.postgres_data, "processes left from a postmaster that is gone")
    wait_for_shared_memory_release(cfg.postgres_data)
    state = read_cluster_state(cfg.postgres_data, cluster_owner())
    return None if stopped_cleanly(state) else state


def recover_before_serving(cfg: StackConfig, state: str) -> CheckReport:
    """After an unclean stop: PostgreSQL replays its WAL on its socket alone (no client can
    reach it), its documents are checked and, if damaged, repaired; then it stops cleanly."""
    log(
        f"postgres: the cluster was not shut down cleanly (state: {state}); recovering and "
        "checking it before anything connects"
    )
    with socket_only_postgres(cfg) as db:
        return check_and_repair(db)


@contextlib.contextmanager
def socket_only_postgres(cfg: StackConfig) -> Iterator[Database]:
    """The cluster running without a TCP listener, reached through its socket folder."""
    owner = cluster_owner()
    command = [str(PG_BIN / "postgres"), "-D", str(cfg.postgres_data), "-c", "listen_addresses="]
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.run_dir / "postgres-recovery.log").open("ab") as out:
        postmaster = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=owner,
            group=owner,
        )
    db = Database(str(socket_dir(cfg)), cfg.postgres_port, owner)
    try:
        db.wait_until_ready(timeout=300.0, postmaster=postmaster)
        yield db
    finally:
        stop_postmaster(postmaster, cfg.postgres_data)


def stop_postmaster(postmaster: subprocess.Popen[bytes], data_dir: Path) -> None:
    """Stop a postmaster this process started, escalating (POSTGRES_STOP), then whatever is
    left of its data directory."""
    stop_pid_escalating("postgres (recovery start)", postmaster.pid, POSTGRES_STOP)
    kill_data_dir_processes(data_dir, "still running after the postmaster stopped")
    postmaster.wait(timeout=10.0)


# Fast shutdown (clients are disconnected, then a checkpoint); a backend spinning in a damaged
# index ignores that, so then immediate shutdown (every process exits at once, the WAL is
# replayed at the next start); then SIGKILL of whatever is left of this data directory.
POSTGRES_STOP = (
    StopStep(signal.SIGINT, 10.0, "fast shutdown"),
    StopStep(signal.SIGQUIT, 5.0, "immediate shutdown"),
)


def stop_postgres(cfg: StackConfig) -> None:
    """Stop the stack's PostgreSQL, escalating (POSTGRES_STOP), and then any process of its
    data directory, orphans of an earlier postmaster included."""
    stop_escalating(cfg, "postgres", POSTGRES_STOP)
    kill_data_dir_processes(cfg.postgres_data, "still running after the postmaster stopped")
