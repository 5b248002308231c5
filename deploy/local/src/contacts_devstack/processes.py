"""Where the local stack lives and listens, and its processes: started detached, found again
by process id, stopped by process id. Standard library only, so it runs before anything else
is set up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]
DEPLOY_LOCAL = REPO_ROOT / "deploy" / "local"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and listens; every value can be set by a CONTACTS_STACK_* variable."""

    home: Path = field(
        default_factory=lambda: Path(os.environ.get("CONTACTS_STACK_DIR", REPO_ROOT / ".local"))
    )
    host: str = field(default_factory=lambda: os.environ.get("CONTACTS_STACK_HOST", "127.0.0.1"))
    kafka_port: int = field(default_factory=lambda: _env_int("CONTACTS_STACK_KAFKA_PORT", 9092))
    controller_port: int = field(
        default_factory=lambda: _env_int("CONTACTS_STACK_KAFKA_CONTROLLER_PORT", 9093)
    )
    mongo_port: int = field(default_factory=lambda: _env_int("CONTACTS_STACK_MONGO_PORT", 27017))
    postgres_port: int = field(
        default_factory=lambda: _env_int("CONTACTS_STACK_POSTGRES_PORT", 5433)
    )
    kafka_heap: str = field(
        default_factory=lambda: os.environ.get("CONTACTS_STACK_KAFKA_HEAP", "1g")
    )

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def kafka_libs(self) -> Path:
        return self.home / "kafka" / "libs"

    @property
    def kafka_data(self) -> Path:
        return self.home / "kafka" / "data"

    @property
    def postgres_data(self) -> Path:
        return self.home / "postgres" / "data"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def mongodb_url(self) -> str:
        return f"mongodb://{self.host}:{self.mongo_port}/"


def log(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port nothing listens on now, as the system hands them out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if pid is not None and not pid_alive(pid):
            raise RuntimeError(f"process {pid} exited before {host}:{port} opened")
        time.sleep(0.2)
    raise TimeoutError(f"{host}:{port} did not open within {timeout:.0f}s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); its state letter tells.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_checked(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    output: Path | None = None,
) -> None:
    """Run `cmd`, raising if it fails; with `output`, its output goes to that file (a build's
    pages of compiler lines) and only the tail is shown if it fails."""
    log("$ " + " ".join(cmd))
    if output is None:
        subprocess.run(cmd, cwd=cwd, env=env, check=True)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("ab") as out:
        result = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = output.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}); {output} ends:\n{tail}")


@dataclass(frozen=True)
class Process:
    name: str
    port: int
    command: list[str]
    cwd: Path | None = None
    env: dict[str, str] | None = None
    start_timeout: float = 90.0
    user: str | None = None  # run as this user (and its group) instead of ours


def pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def read_pid(cfg: StackConfig, name: str) -> int | None:
    path = pid_file(cfg, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_processes(cfg: StackConfig, procs: Sequence[Process]) -> None:
    """Start each of `procs` detached unless something already listens on its port, all at
    once (independent services start side by side), then wait until each listens."""
    started = [(proc, child) for proc in procs if (child := _launch(cfg, proc)) is not None]
    for proc, child in started:
        log_path = cfg.run_dir / f"{proc.name}.log"
        try:
            wait_for_port(cfg.host, proc.port, proc.start_timeout, pid=child.pid)
        except (RuntimeError, TimeoutError) as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"{proc.name} failed to start: {exc}\n--- {log_path} ---\n{tail}"
            ) from exc
        log(f"{proc.name}: started (pid {child.pid}) on {cfg.host}:{proc.port}, log {log_path}")


def _launch(cfg: StackConfig, proc: Process) -> subprocess.Popen[bytes] | None:
    if port_open(cfg.host, proc.port):
        log(f"{proc.name}: already listening on {cfg.host}:{proc.port}")
        return None
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.run_dir / f"{proc.name}.log").open("ab") as out:
        child = subprocess.Popen(
            proc.command,
            cwd=proc.cwd,
            env={**os.environ, **(proc.env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=proc.user,
            group=proc.user,
        )
    pid_file(cfg, proc.name).write_text(str(child.pid))
    return child


def stop_process(
    cfg: StackConfig, name: str, timeout: float = 30.0, stop_signal: str = "SIGTERM"
) -> None:
    """Stop `name` with `stop_signal` to its process group; SIGKILL after `timeout`."""
    stop_escalating(cfg, name, [StopStep(signal.Signals[stop_signal], timeout, "", group=True)])


@dataclass(frozen=True)
class StopStep:
    """One way of asking a process to stop: a signal, how long to wait for it to work, what
    it means to the process (for the log), and whether it goes to the whole process group."""

    signal: signal.Signals
    wait: float
    meaning: str
    group: bool = False


def stop_escalating(cfg: StackConfig, name: str, steps: Sequence[StopStep]) -> None:
    """Try each of `steps` in turn until the process `name` exits, saying when one did not
    work; if none did, SIGKILL of its process group."""
    pid = read_pid(cfg, name)
    if pid is not None:
        stop_pid_escalating(name, pid, steps)
    pid_file(cfg, name).unlink(missing_ok=True)


def stop_pid_escalating(name: str, pid: int, steps: Sequence[StopStep]) -> None:
    """`stop_escalating` for a process known by its pid."""
    for step, following in zip(steps, [*steps[1:], None], strict=True):
        _signal(pid, step.signal, step.group)
        if _wait_for_exit(pid, step.wait):
            break
        then = following.meaning if following else "SIGKILL of its process group"
        log(f"{name} did not stop on {step.signal.name} within {step.wait:.0f}s, {then}")
    else:
        _signal(pid, signal.SIGKILL, group=True)
        _wait_for_exit(pid, 10.0)
    log(f"{name}: stopped (pid {pid})")


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        pass


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
