"""The local stack: Apache Kafka (KRaft) from Maven Central, and FerretDB v2 on PostgreSQL with
DocumentDB as the MongoDB-protocol server (see `documentdb`).

Everything is installed on first use and cached under `.local/` (git-ignored); later calls reuse
the caches and any process already listening.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from contacts_devstack import documentdb, recovery
from contacts_devstack.processes import (
    DEPLOY_LOCAL,
    Process,
    StackConfig,
    log,
    port_open,
    run_checked,
    start_processes,
    stop_process,
)

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
    # `--cluster-id=`: an id may begin with "-" (1 in 64), which as a separate argument
    # would read as an option (a CI run failed so).
    run_checked(
        java_command(
            cfg,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(properties),
        )
    )


def start_infrastructure(cfg: StackConfig) -> recovery.CheckReport | None:
    """Install what is missing, then start Kafka, PostgreSQL and FerretDB unless they listen;
    the check of the documents after an unclean stop of PostgreSQL, if there was one."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    install_kafka(cfg)
    documentdb.install(cfg)
    properties = kafka_properties(cfg)
    if not port_open(cfg.host, cfg.kafka_port):
        format_kafka_storage(cfg, properties)
    kafka = Process("kafka", cfg.kafka_port, java_command(cfg, "kafka.Kafka", str(properties)))
    report = recover_postgres(cfg)
    start_processes(cfg, [kafka, documentdb.postgres_process(cfg)])  # side by side
    documentdb.create_extension(cfg)
    start_processes(cfg, [documentdb.ferretdb_process(cfg)])
    return report


def start_local_server(cfg: StackConfig) -> recovery.CheckReport | None:
    """PostgreSQL and FerretDB alone (a private cluster of a test or a bench), as
    `start_infrastructure` starts them; the extensions must be installed."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    report = recover_postgres(cfg)
    start_processes(cfg, [documentdb.postgres_process(cfg)])
    documentdb.create_extension(cfg)
    start_processes(cfg, [documentdb.ferretdb_process(cfg)])
    return report


def recover_postgres(cfg: StackConfig) -> recovery.CheckReport | None:
    """Unless PostgreSQL listens: create or update its cluster, kill what a dead postmaster
    left, and after an unclean stop check the documents (and repair them) before serving."""
    if recovery.postmaster_running(cfg.postgres_data):
        return None
    documentdb.prepare_cluster(cfg)
    state = recovery.prepare_start(cfg)
    return None if state is None else recovery.recover_before_serving(cfg, state)


def stop_infrastructure(cfg: StackConfig) -> None:
    stop_process(cfg, "ferretdb")
    recovery.stop_postgres(cfg)
    stop_process(cfg, "kafka")


def apply_topics(cfg: StackConfig) -> None:
    """Create and configure the platform's declared topics on this broker, by the command the
    Kubernetes Job runs (`contacts_shared.topics`; replication factor 1 in `local`)."""
    command = [sys.executable, "-m", "contacts_shared.topics", "apply"]
    log("$ python -m contacts_shared.topics apply")
    if subprocess.run(command, env={**os.environ, **infrastructure_env(cfg)}).returncode != 0:
        raise RuntimeError("the declared topics are not applied: its output above says why")


def infrastructure_env(cfg: StackConfig) -> dict[str, str]:
    """The settings that point the services and tests at this stack."""
    return {
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap,
        "CONTACTS_MONGODB_URL": cfg.mongodb_url,
    }
