"""`devstack up|down|status|env|install`: the local stack and services, for `make run` and tests."""

from __future__ import annotations

import argparse
import os
import sys

from contacts_devstack import documentdb
from contacts_devstack.processes import (
    Process,
    StackConfig,
    log,
    port_open,
    read_pid,
    start_processes,
    stop_process,
)
from contacts_devstack.stack import (
    apply_topics,
    infrastructure_env,
    install_kafka,
    start_infrastructure,
    stop_infrastructure,
)

# (name, ASGI factory, port setting, default port); `make run` starts each one that exists.
SERVICES = [
    ("profile-svc", "profile_svc.app:create_app", "CONTACTS_PROFILE_SVC_PORT", 8101),
    ("contact-svc", "contact_svc.app:create_app", "CONTACTS_CONTACT_SVC_PORT", 8102),
    ("import-svc", "import_svc.app:create_app", "CONTACTS_IMPORT_SVC_PORT", 8103),
    ("segment-svc", "segment_svc.app:create_app", "CONTACTS_SEGMENT_SVC_PORT", 8104),
    ("log-svc", "log_svc.app:create_app", "CONTACTS_LOG_SVC_PORT", 8105),
    ("console", "console.app:create_app", "CONTACTS_CONSOLE_PORT", 8100),
]
# Stream workers (not HTTP APIs): (name, module, port setting, default port of its web server).
WORKERS = [("segment-worker", "segment_svc.worker", "CONTACTS_SEGMENT_WORKER_PORT", 8114)]
LOCAL_API_KEY = "local-dev-key"
LOCAL_ACCOUNT = "local-account"


def service_processes(cfg: StackConfig) -> list[Process]:
    env = {
        **infrastructure_env(cfg),
        "CONTACTS_API_KEYS": os.environ.get(
            "CONTACTS_API_KEYS", f"{LOCAL_API_KEY}={LOCAL_ACCOUNT}"
        ),
        # Where the console finds each service's API (`CONTACTS_PROFILE_SVC_URL`, ...).
        **{
            f"CONTACTS_{name.upper().replace('-', '_')}_URL": (
                f"http://{cfg.host}:{os.environ.get(port_var, default)}"
            )
            for name, _, port_var, default in SERVICES
            if name != "console"
        },
    }
    apis = [
        Process(
            name,
            port,
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                factory,
                "--host",
                cfg.host,
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=env,
            start_timeout=60.0,
        )
        for name, factory, port_var, default in SERVICES
        for port in [int(os.environ.get(port_var, default))]
    ]
    workers = [
        Process(
            name,
            port,
            [sys.executable, "-m", module],
            env={**env, port_var: str(port)},
            start_timeout=60.0,
        )
        for name, module, port_var, default in WORKERS
        for port in [int(os.environ.get(port_var, default))]
    ]
    return apis + workers


def up(cfg: StackConfig, with_services: bool) -> None:
    start_infrastructure(cfg)
    apply_topics(cfg)  # as the Kubernetes Job does, before any service starts
    print(f"Kafka     {cfg.kafka_bootstrap}")
    print(
        f"MongoDB   {cfg.mongodb_url}  (FerretDB {documentdb.FERRETDB_VERSION} on PostgreSQL "
        f"{documentdb.PG_MAJOR} + DocumentDB, {cfg.host}:{cfg.postgres_port}, "
        f"data in {cfg.postgres_data})"
    )
    if not with_services:
        return
    apis = {name for name, *_ in SERVICES}
    services = service_processes(cfg)
    start_processes(cfg, services)
    for proc in services:
        if proc.name == "console":
            what = "/  (the web console: sign in with the API key below)"
        else:
            what = "/docs" if proc.name in apis else "  (stream worker, liveness)"
        print(f"{proc.name:<15}http://{cfg.host}:{proc.port}{what}")
    if "CONTACTS_API_KEYS" not in os.environ:
        print(f"API key   {LOCAL_API_KEY}  (account {LOCAL_ACCOUNT})")
        print(
            f"Try:      curl -H 'Authorization: Bearer {LOCAL_API_KEY}' "
            f"http://{cfg.host}:8101/v1/profiles"
        )


def down(cfg: StackConfig) -> None:
    for name, *_ in reversed(SERVICES + WORKERS):
        stop_process(cfg, name)
    stop_infrastructure(cfg)


def status(cfg: StackConfig) -> None:
    infrastructure = [
        ("kafka", cfg.kafka_port),
        ("postgres", cfg.postgres_port),
        ("ferretdb", cfg.mongo_port),
    ]
    rows = infrastructure + [(proc.name, proc.port) for proc in service_processes(cfg)]
    for name, port in rows:
        pid = read_pid(cfg, name)
        state = "listening" if port_open(cfg.host, port) else "down"
        print(f"{name:<15}{cfg.host}:{port:<6} {state:<10} pid {pid or '-'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="download and build Kafka, DocumentDB and FerretDB")
    up_parser = sub.add_parser("up", help="start Kafka, PostgreSQL and FerretDB (idempotent)")
    up_parser.add_argument("--services", action="store_true", help="also start every service")
    sub.add_parser("down", help="stop what `up` started, by process id")
    sub.add_parser("status", help="show what listens where")
    sub.add_parser("env", help="print the CONTACTS_* settings for this stack as shell exports")
    args = parser.parse_args(argv)
    cfg = StackConfig()
    try:
        if args.command == "install":
            install_kafka(cfg)
            documentdb.install(cfg)
        elif args.command == "up":
            up(cfg, args.services)
        elif args.command == "down":
            down(cfg)
        elif args.command == "status":
            status(cfg)
        else:
            for key, value in infrastructure_env(cfg).items():
                print(f"export {key}={value}")
    except (RuntimeError, TimeoutError, OSError) as exc:
        log(f"error: {exc}")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
