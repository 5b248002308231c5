"""The local stack: Apache Kafka (KRaft) from Maven Central and FerretDB v1 built with Go.

Everything is installed on first use and cached under `.local/` (git-ignored); later calls reuse
the caches and any process already listening. Standard library only, so it runs before anything
else is set up.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]
DEPLOY_LOCAL = REPO_ROOT / "deploy" / "local"

# The Go module proxy refuses the `.info` document of FerretDB v1.24.1 (403) and the checksum
# database has no entry for it, while the `.mod` and `.zip` are served. A one-file local proxy
# answers `.info`; everything else falls through to the public proxy, and go.sum still pins
# every module's hash.
FERRETDB_MODULE_PATH = "github.com/!ferret!d!b/!ferret!d!b"
FERRETDB_VERSION = "v1.24.1"
FERRETDB_RELEASE_TIME = "2024-07-26T00:00:00Z"


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
    def ferretdb_binary(self) -> Path:
        return self.home / "bin" / "ferretdb"

    @property
    def ferretdb_data(self) -> Path:
        return self.home / "ferretdb" / "data"

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
    cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


# -- installation -------------------------------------------------------------------------------


def install_kafka(cfg: StackConfig) -> None:
    """Resolve the Kafka broker's jars from Maven Central into `.local/kafka/libs`."""
    marker = cfg.kafka_libs / ".complete"
    pom = DEPLOY_LOCAL / "kafka" / "pom.xml"
    if marker.exists() and marker.read_text() == pom.read_text():
        return
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("Kafka needs Java 17+ and Maven on PATH (apt-get install maven)")
    staging = cfg.kafka_libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    run_checked(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={cfg.home / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
    )
    shutil.rmtree(cfg.kafka_libs, ignore_errors=True)
    staging.rename(cfg.kafka_libs)
    marker.write_text(pom.read_text())


def install_ferretdb(cfg: StackConfig) -> None:
    """Build our FerretDB main (deploy/local/ferretdb) through the Go module proxy."""
    source = DEPLOY_LOCAL / "ferretdb"
    stamp = cfg.ferretdb_binary.with_suffix(".source")
    fingerprint = "".join((source / name).read_text() for name in ("go.mod", "go.sum", "main.go"))
    if cfg.ferretdb_binary.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return
    if shutil.which("go") is None:
        raise RuntimeError("FerretDB is built with Go 1.24+; put `go` on PATH")
    go_home = cfg.home / "go"
    info_dir = go_home / "proxy" / FERRETDB_MODULE_PATH / "@v"
    info_dir.mkdir(parents=True, exist_ok=True)
    (info_dir / f"{FERRETDB_VERSION}.info").write_text(
        json.dumps({"Version": FERRETDB_VERSION, "Time": FERRETDB_RELEASE_TIME})
    )
    upstream = os.environ.get("GOPROXY", "https://proxy.golang.org").split(",")[0]
    env = {
        **os.environ,
        "GOPROXY": f"file://{go_home / 'proxy'},{upstream}",
        "GONOSUMDB": "github.com/FerretDB/FerretDB",
        "GOFLAGS": "-mod=readonly",
        "GOMODCACHE": str(go_home / "mod"),
        "GOCACHE": str(go_home / "cache"),
        "GOPATH": str(go_home / "path"),
        "CGO_ENABLED": "0",
    }
    cfg.ferretdb_binary.parent.mkdir(parents=True, exist_ok=True)
    partial = cfg.ferretdb_binary.with_suffix(".partial")
    run_checked(["go", "build", "-trimpath", "-o", str(partial), "."], cwd=source, env=env)
    partial.rename(cfg.ferretdb_binary)
    stamp.write_text(fingerprint)


def install(cfg: StackConfig) -> None:
    cfg.home.mkdir(parents=True, exist_ok=True)
    install_kafka(cfg)
    install_ferretdb(cfg)


# -- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    name: str
    port: int
    command: list[str]
    cwd: Path | None = None
    env: dict[str, str] | None = None
    start_timeout: float = 90.0


def pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def read_pid(cfg: StackConfig, name: str) -> int | None:
    path = pid_file(cfg, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_process(cfg: StackConfig, proc: Process) -> None:
    """Start `proc` detached unless something already listens on its port."""
    if port_open(cfg.host, proc.port):
        log(f"{proc.name}: already listening on {cfg.host}:{proc.port}")
        return
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.run_dir / f"{proc.name}.log"
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            proc.command,
            cwd=proc.cwd,
            env={**os.environ, **(proc.env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(cfg, proc.name).write_text(str(child.pid))
    try:
        wait_for_port(cfg.host, proc.port, proc.start_timeout, pid=child.pid)
    except (RuntimeError, TimeoutError) as exc:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"{proc.name} failed to start: {exc}\n--- {log_path} ---\n{tail}"
        ) from exc
    log(f"{proc.name}: started (pid {child.pid}) on {cfg.host}:{proc.port}, log {log_path}")


def stop_process(cfg: StackConfig, name: str, timeout: float = 30.0) -> None:
    pid = read_pid(cfg, name)
    if pid is None:
        pid_file(cfg, name).unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    pid_file(cfg, name).unlink(missing_ok=True)
    log(f"{name}: stopped (pid {pid})")


def kafka_properties(cfg: StackConfig) -> Path:
    path = cfg.home / "kafka" / "server.properties"
    listener = f"{cfg.host}:{cfg.kafka_port}"
    controller = f"{cfg.host}:{cfg.controller_port}"
    path.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{controller}",
                f"listeners=PLAINTEXT://{listener},CONTROLLER://{controller}",
                f"advertised.listeners=PLAINTEXT://{listener}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={cfg.kafka_data}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ]
        )
    )
    return path


def java_command(cfg: StackConfig, main_class: str, *args: str) -> list[str]:
    return [
        "java",
        f"-Xmx{cfg.kafka_heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={DEPLOY_LOCAL / 'kafka' / 'log4j2.xml'}",
        "-cp",
        f"{cfg.kafka_libs}/*",
        main_class,
        *args,
    ]


def format_kafka_storage(cfg: StackConfig, properties: Path) -> None:
    if (cfg.kafka_data / "meta.properties").exists():
        return
    cfg.kafka_data.mkdir(parents=True, exist_ok=True)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    run_checked(
        java_command(
            cfg, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)
        )
    )


def start_infrastructure(cfg: StackConfig) -> None:
    install(cfg)
    properties = kafka_properties(cfg)
    if not port_open(cfg.host, cfg.kafka_port):
        format_kafka_storage(cfg, properties)
    start_process(
        cfg, Process("kafka", cfg.kafka_port, java_command(cfg, "kafka.Kafka", str(properties)))
    )
    cfg.ferretdb_data.mkdir(parents=True, exist_ok=True)
    start_process(
        cfg,
        Process(
            "ferretdb",
            cfg.mongo_port,
            [
                str(cfg.ferretdb_binary),
                f"--listen-addr={cfg.host}:{cfg.mongo_port}",
                f"--sqlite-url=file:{cfg.ferretdb_data}/",
            ],
        ),
    )


def infrastructure_env(cfg: StackConfig) -> dict[str, str]:
    """The settings that point the services and tests at this stack."""
    return {
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap,
        "CONTACTS_MONGODB_URL": cfg.mongodb_url,
    }
