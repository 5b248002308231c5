"""devstack's handling of a PostgreSQL that did not stop cleanly: the pure parts (which pids
belong to a data directory, what pg_controldata says, what the checks print), and the stop
escalation on processes of the test's own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from contacts_devstack.processes import StackConfig, StopStep, pid_file, stop_escalating
from contacts_devstack.recovery import (
    Damage,
    ProcessInfo,
    cluster_state,
    parse_damage,
    postmaster_pid,
    processes_of_data_dir,
    shared_memory_users,
    stopped_cleanly,
)

DATA = Path("/srv/stack/postgres/data")

CONTROLDATA = """pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7412345678901234567
Database cluster state:               in production
pg_control last modified:             Mon 01 Dec 2026 10:00:00 AM UTC
Latest checkpoint location:           0/1A2B3C4
"""


def test_the_postmaster_and_its_backends_belong_to_the_data_dir() -> None:
    processes = [
        ProcessInfo(10, str(DATA), ("/usr/lib/postgresql/15/bin/postgres", "-D", str(DATA))),
        ProcessInfo(11, str(DATA), ("postgres: checkpointer",)),
        ProcessInfo(12, str(DATA), ("postgres: postgres postgres 127.0.0.1(5000) INSERT",)),
    ]
    assert processes_of_data_dir(DATA, processes) == [10, 11, 12]


def test_an_orphan_whose_cwd_cannot_be_read_is_found_by_its_arguments() -> None:
    processes = [ProcessInfo(10, None, ("/usr/lib/postgresql/15/bin/postgres", "-D", str(DATA)))]
    assert processes_of_data_dir(DATA, processes) == [10]


def test_processes_of_another_cluster_or_of_no_cluster_are_left_alone() -> None:
    other = Path("/srv/stack/postgres/data-2")
    processes = [
        ProcessInfo(20, str(other), ("/usr/lib/postgresql/15/bin/postgres", "-D", str(other))),
        ProcessInfo(21, str(other), ("postgres: walwriter",)),
        ProcessInfo(22, str(DATA.parent), ("postgres: walwriter",)),  # a parent folder
        ProcessInfo(23, "/work", ("grep", "-r", "x")),  # its first argument is the program
        ProcessInfo(24, None, ()),  # a kernel thread
    ]
    assert processes_of_data_dir(DATA, processes) == []


def test_a_program_named_like_the_data_dir_is_not_one_of_its_processes() -> None:
    assert processes_of_data_dir(DATA, [ProcessInfo(30, "/", (str(DATA),))]) == []


def test_the_cluster_state_is_read_from_pg_controldata() -> None:
    assert cluster_state(CONTROLDATA) == "in production"


def test_output_without_a_state_is_an_error() -> None:
    with pytest.raises(ValueError):
        cluster_state("pg_control version number: 1300\n")


@pytest.mark.parametrize(
    ("state", "clean"),
    [
        ("shut down", True),
        ("shut down in recovery", True),
        ("in production", False),
        ("in crash recovery", False),
        ("shutting down", False),
    ],
)
def test_only_a_shut_down_cluster_stopped_cleanly(state: str, clean: bool) -> None:
    assert stopped_cleanly(state) is clean


def test_damaged_relations_are_read_from_the_checks_output() -> None:
    output = (
        "13\n"
        "documentdb_data.collection_pk_2\tindex block 4 is corrupt\n"
        "documentdb_data.documents_2\tverify_heapam reported corruption\n"
    )
    assert parse_damage(output) == [
        Damage("documentdb_data.collection_pk_2", "index block 4 is corrupt"),
        Damage("documentdb_data.documents_2", "verify_heapam reported corruption"),
    ]
    assert parse_damage("13\n") == []


IGNORES_SIGINT = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"


def test_a_process_that_ignores_the_first_signal_is_stopped_by_the_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = replace(StackConfig(), home=tmp_path)
    cfg.run_dir.mkdir()
    child = subprocess.Popen([sys.executable, "-c", IGNORES_SIGINT], start_new_session=True)
    pid_file(cfg, "stubborn").write_text(str(child.pid))
    time.sleep(0.3)  # its handler in place
    steps = [StopStep(signal.SIGINT, 0.5, "fast"), StopStep(signal.SIGTERM, 5.0, "immediate")]
    stop_escalating(cfg, "stubborn", steps)
    assert child.wait(timeout=5) == -signal.SIGTERM
    assert "stubborn did not stop on SIGINT within 0s, immediate" in capsys.readouterr().err
    assert not pid_file(cfg, "stubborn").exists()


def test_a_process_that_ignores_every_step_is_killed(tmp_path: Path) -> None:
    cfg = replace(StackConfig(), home=tmp_path)
    cfg.run_dir.mkdir()
    child = subprocess.Popen([sys.executable, "-c", IGNORES_SIGINT], start_new_session=True)
    pid_file(cfg, "stubborn").write_text(str(child.pid))
    time.sleep(0.3)
    stop_escalating(cfg, "stubborn", [StopStep(signal.SIGINT, 0.3, "fast")])
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_the_postmaster_pid_is_the_first_line_of_its_lock_file() -> None:
    assert postmaster_pid("4242\n/srv/stack/postgres/data\n1764583200\n5433\n") == 4242
    assert postmaster_pid("") is None


LOCK = "4242\n/srv/stack/postgres/data\n1764583200\n5433\n/srv/sock\n127.0.0.1\n"
LOCK += "  5423680     32783\nready\n"
SHM = (
    "       key      shmid perms   size  cpid  lpid nattch   uid   gid\n"
    "   5423680      32783   600     56  4242  4250      3   101   104\n"
    "   5416388          4   600     56  9053  9060     17   101   104\n"
)


def test_the_users_of_the_dead_postmasters_shared_memory_are_counted() -> None:
    assert shared_memory_users(LOCK, SHM) == 3
    assert shared_memory_users(LOCK, SHM.replace("32783", "32790")) == 0  # gone
    assert shared_memory_users("4242\n", SHM) == 0  # a lock file without the line
