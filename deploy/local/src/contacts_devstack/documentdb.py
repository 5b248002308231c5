"""The local MongoDB-protocol server: FerretDB v2 on PostgreSQL 15 with the DocumentDB
extensions (docs/adr/0007).

PostgreSQL and the build tools come from Debian's packages; FerretDB from the Go module proxy;
what Debian lacks or ships too old (libbson, pgvector, pg_cron, DocumentDB) from pinned sources:
the upstream git repositories at pinned commits, or, when CONTACTS_STACK_SOURCES_MIRROR names a
folder holding their tarballs, from there with their SHA-256 checked. The extensions install
into the system PostgreSQL tree (root); everything else, the cluster's data included, lives
under the stack's home. Standard library only, like the rest of devstack.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contacts_devstack.processes import Process, StackConfig, log, run_checked

PG_MAJOR = 15
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
FERRETDB_MODULE = "github.com/FerretDB/FerretDB/v2/cmd/ferretdb"
FERRETDB_VERSION = "v2.7.0"
MIRROR_VARIABLE = "CONTACTS_STACK_SOURCES_MIRROR"

DEBIAN_PACKAGES = (
    f"postgresql-{PG_MAJOR}",
    f"postgresql-server-dev-{PG_MAJOR}",
    f"postgresql-{PG_MAJOR}-rum",
    f"postgresql-{PG_MAJOR}-postgis-3",
    "libintelrdfpmath-dev",
    "libpcre2-dev",
    "libicu-dev",
    "libkrb5-dev",
    "build-essential",
    "pkg-config",
    "cmake",
    "git",
)


@dataclass(frozen=True)
class PinnedSource:
    """A source tree at a pinned commit; `tarball` is its `git archive` in a mirror folder."""

    name: str
    repository: str
    commit: str
    tarball: str
    sha256: str


# Why each is built rather than installed from Debian: docs/adr/0007.
SOURCES = (
    PinnedSource(
        "mongo-c-driver",
        "https://github.com/mongodb/mongo-c-driver.git",
        "a463a46c38cb6b552f2da4b3ae63e393dfe0a9a6",  # 1.28.0
        "mongo-c-driver-1.28.0.tar.gz",
        "7a2b482f6ffe0be4bfacfe5bf6e647a18d6bc81cbbf3e7e29329c61a66b72e64",
    ),
    PinnedSource(
        "pgvector",
        "https://github.com/pgvector/pgvector.git",
        "2627c5ff775ae6d7aef0c430121ccf857842d2f2",  # v0.8.0
        "pgvector-v0.8.0.tar.gz",
        "958aa543a05a60c3696f7fc3bc5722be5a1c413b0ee0e1811f898128526b9c8a",
    ),
    PinnedSource(
        "pg_cron",
        "https://github.com/citusdata/pg_cron.git",
        "9d0576c64edd90fb3d8ac30763296a8106315638",  # v1.6.3
        "pg_cron-v1.6.3.tar.gz",
        "c525dbe88dc22c2a58fe82565bb9602690e1c05c4ffd3d2ccee971ac52d59904",
    ),
    PinnedSource(
        "documentdb",
        "https://github.com/FerretDB/documentdb.git",
        "3f80da90a9e0b04f214183aa656c4fb0b4bc31e4",  # reports 0.107.0, as FerretDB 2.7 wants
        "documentdb-3f80da90a9e0b04f214183aa656c4fb0b4bc31e4.tar.gz",
        "e284df4ac88bfe808d621e72fab81d3ceb7742a3b7dfe810dde3f3cfbf9f34b7",
    ),
)

# Debian ships the Intel decimal library without the pkg-config file DocumentDB asks for.
INTELMATHLIB_PC = """Name: intelmathlib
Description: Intel decimal floating-point math library (Debian's libintelrdfpmath-dev)
Version: 2.0
Libs: -lbidgcc000
Cflags: -I/usr/include
"""

# From FerretDB's own packaging of DocumentDB, plus settings for a disposable local server.
POSTGRESQL_SETTINGS = {
    "shared_preload_libraries": "'pg_cron,pg_documentdb_core,pg_documentdb'",
    "cron.database_name": "'postgres'",
    "documentdb.enableCompact": "true",
    "documentdb.enableLetAndCollationForQueryMatch": "true",
    "documentdb.enableNowSystemVariable": "true",
    "documentdb.enableSortbyIdPushDownToPrimaryKey": "true",
    "documentdb.enableSchemaValidation": "true",
    "documentdb.enableBypassDocumentValidation": "true",
    "documentdb.enableUserCrud": "true",
    "documentdb.maxUserLimit": "100",
    "max_connections": "300",
    "shared_buffers": "'1GB'",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'256MB'",
    # A development server must survive a killed process, not a crash of the machine (ADR 14).
    # A killed process leaves every write it made in the kernel's page cache, so fsync only
    # matters to a machine crash: off. But SIGKILL can stop an 8 KiB page write between its two
    # 4 KiB halves (the kernel checks for a fatal signal between pages), and only the full page
    # images in the WAL let recovery repair such a torn page: without them a torn RUM index page
    # made inserts spin forever after one kill of every process. Measured: no cost we could
    # tell from noise on bulk upserts. Commits wait for their WAL write (synchronous_commit on,
    # the default): off would lose acknowledged writes with the killed WAL writer.
    "fsync": "off",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "logging_collector": "off",
}


def _paths(cfg: StackConfig) -> tuple[Path, Path]:
    root = cfg.home / "documentdb"
    return root / "src", root / "prefix"


# Beside the extensions it describes, in the system tree: another checkout on this machine
# finds them installed and skips the build.
INSTALLED_STAMP = Path(f"/usr/share/postgresql/{PG_MAJOR}/extension/contacts-devstack.pins")


def _fingerprint() -> str:
    return "\n".join(f"{s.name} {s.commit}" for s in SOURCES) + f"\npostgresql {PG_MAJOR}\n"


def _pkglibdir() -> Path:
    return Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib")


# -- Debian packages ------------------------------------------------------------------------------


def _missing_packages(packages: Sequence[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return list(packages)
    missing = []
    for package in packages:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )
        if "install ok installed" not in status.stdout:
            missing.append(package)
    return missing


def ensure_debian_packages() -> None:
    missing = _missing_packages(DEBIAN_PACKAGES)
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(
            "the local MongoDB-protocol server (FerretDB v2 on PostgreSQL 15 + DocumentDB) needs "
            "Debian packages that are missing and cannot be installed without apt-get as root:\n"
            f"  sudo apt-get install --no-install-recommends {' '.join(missing)}\n"
            "then run this again; or, where Docker runs, use `docker compose up` "
            "(real mongo and Kafka images), or set CONTACTS_MONGODB_URL and "
            "CONTACTS_KAFKA_BOOTSTRAP_SERVERS to servers you have."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env).returncode != 0:
        run_checked(["apt-get", "update", "-q"], env=env)  # a fresh machine's lists may be stale
        run_checked(install, env=env)


# -- pinned sources -------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack_from_mirror(source: PinnedSource, mirror: Path, target: Path) -> None:
    tarball = mirror / source.tarball
    actual = _sha256(tarball)
    if actual != source.sha256:
        raise RuntimeError(f"{tarball}: SHA-256 {actual}, expected {source.sha256}")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        if archive.pax_headers.get("comment") != source.commit:  # what `git archive` records
            raise RuntimeError(f"{tarball} is not commit {source.commit} of {source.repository}")
        archive.extractall(staging, filter="data")
    (top,) = staging.iterdir()
    top.rename(target)
    staging.rmdir()


def _clone_upstream(source: PinnedSource, target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    git = ["git", "-C", str(staging)]
    try:
        run_checked([*git, "init", "-q"])
        run_checked([*git, "fetch", "-q", "--depth", "1", source.repository, source.commit])
        run_checked([*git, "checkout", "-q", "FETCH_HEAD"])
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"could not fetch {source.repository} at {source.commit}; on a machine without "
            f"GitHub, set {MIRROR_VARIABLE} to a folder holding {source.tarball}"
        ) from exc
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    if head.strip() != source.commit:
        raise RuntimeError(f"{source.repository}: got {head.strip()}, expected {source.commit}")
    staging.rename(target)


def fetch_sources(cfg: StackConfig) -> dict[str, Path]:
    """Each pinned source unpacked under the stack's home, by name; reused when present."""
    src_root, _ = _paths(cfg)
    mirror = os.environ.get(MIRROR_VARIABLE)
    trees = {}
    for source in SOURCES:
        target = src_root / f"{source.name}-{source.commit[:12]}"
        if not target.exists():
            if mirror and (Path(mirror) / source.tarball).exists():
                log(f"{source.name}: from {Path(mirror) / source.tarball}")
                _unpack_from_mirror(source, Path(mirror), target)
            else:
                _clone_upstream(source, target)
        trees[source.name] = target
    return trees


# -- builds ----------------------------------------------------------------------------------------


def _build_env(prefix: Path, src_root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PG_CONFIG": str(PG_BIN / "pg_config"),
        "PKG_CONFIG_PATH": f"{prefix / 'lib' / 'pkgconfig'}:{prefix / 'pkgconfig'}",
        # DocumentDB's makefiles ask git which tree they sit in; keep git from climbing out of
        # the sources into the project's own repository (its index would become a dependency).
        "GIT_CEILING_DIRECTORIES": str(src_root),
    }


def install_documentdb(cfg: StackConfig) -> None:
    """Build libbson, pgvector, pg_cron and DocumentDB, and install the three extensions into
    PostgreSQL; skipped when this set of pinned commits is installed already."""
    src_root, prefix = _paths(cfg)
    installed = all(
        (_pkglibdir() / f"{library}.so").exists()
        for library in ("pg_documentdb", "pg_documentdb_core", "pg_cron", "vector")
    )
    if installed and INSTALLED_STAMP.exists() and INSTALLED_STAMP.read_text() == _fingerprint():
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            "DocumentDB's extensions install into the system PostgreSQL tree: run "
            "`make run` once as root (or with sudo) to build and install them"
        )
    trees = fetch_sources(cfg)
    env = _build_env(prefix, src_root)
    build_log = cfg.run_dir / "documentdb-build.log"
    log(f"building libbson, pgvector, pg_cron and DocumentDB (about a minute), log {build_log}")
    jobs = f"-j{os.cpu_count() or 2}"
    libbson_build = src_root / "libbson-build"
    run_checked(
        [
            "cmake",
            "-S",
            str(trees["mongo-c-driver"]),
            "-B",
            str(libbson_build),
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            "-DCMAKE_INSTALL_LIBDIR=lib",
            "-DENABLE_MONGOC=OFF",
            "-DENABLE_STATIC=ON",
            "-DENABLE_SHARED=OFF",
            "-DENABLE_TESTS=OFF",
            "-DENABLE_EXAMPLES=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DCMAKE_C_FLAGS=-fPIC",
        ],
        env=env,
        output=build_log,
    )
    run_checked(
        ["cmake", "--build", str(libbson_build), jobs, "--target", "install"],
        env=env,
        output=build_log,
    )
    (prefix / "pkgconfig").mkdir(parents=True, exist_ok=True)
    (prefix / "pkgconfig" / "intelmathlib.pc").write_text(INTELMATHLIB_PC)
    run_checked(
        ["make", jobs, "OPTFLAGS=", "install"], cwd=trees["pgvector"], env=env, output=build_log
    )
    run_checked(["make", jobs, "install"], cwd=trees["pg_cron"], env=env, output=build_log)
    for part in ("pg_documentdb_core", "pg_documentdb"):
        run_checked(
            ["make", jobs, "with_llvm=no", "install"],
            cwd=trees["documentdb"] / part,
            env=env,
            output=build_log,
        )
    INSTALLED_STAMP.write_text(_fingerprint())


def install_ferretdb(cfg: StackConfig) -> None:
    """`go install` FerretDB v2 through the Go module proxy, its caches under the stack's home."""
    if ferretdb_binary(cfg).exists():
        return
    if shutil.which("go") is None:
        raise RuntimeError("FerretDB v2 is built with Go 1.25+; put `go` on PATH")
    go_home = cfg.home / "go"
    env = {
        **os.environ,
        "GOMODCACHE": str(go_home / "mod"),
        "GOCACHE": str(go_home / "cache"),
        "GOPATH": str(go_home / "path"),
        "GOBIN": str(ferretdb_binary(cfg).parent),
        "GOFLAGS": "-trimpath",
        "CGO_ENABLED": "0",
    }
    log(f"building FerretDB {FERRETDB_VERSION} with Go (about a minute)")
    run_checked(
        ["go", "install", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
        env=env,
        output=cfg.run_dir / "ferretdb-build.log",
    )


def ferretdb_binary(cfg: StackConfig) -> Path:
    return cfg.home / "bin" / f"ferretdb-{FERRETDB_VERSION}" / "ferretdb"


def install(cfg: StackConfig) -> None:
    ensure_debian_packages()
    install_documentdb(cfg)
    install_ferretdb(cfg)


# -- the cluster and FerretDB ----------------------------------------------------------------------


def cluster_owner() -> str | None:
    """PostgreSQL refuses to run as root: as root, the cluster runs as Debian's `postgres`."""
    return "postgres" if os.geteuid() == 0 else None


def _as_owner(path: Path, owner: str | None) -> None:
    if owner is not None:
        user = pwd.getpwnam(owner)
        for item in [path, *path.rglob("*")]:
            os.chown(item, user.pw_uid, user.pw_gid)


def prepare_cluster(cfg: StackConfig) -> None:
    """Create the cluster on first use and (re)write our settings into it."""
    data = cfg.postgres_data
    owner = cluster_owner()
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        _as_owner(data.parent, owner)
        initdb = [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        log("$ " + " ".join(initdb))
        subprocess.run(initdb, check=True, user=owner, group=owner, stdout=subprocess.DEVNULL)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude 'contacts.conf'\n")
    socket_dir(cfg).mkdir(exist_ok=True)
    settings = {
        **POSTGRESQL_SETTINGS,
        "listen_addresses": f"'{cfg.host}'",
        "port": str(cfg.postgres_port),
        "unix_socket_directories": f"'{socket_dir(cfg)}'",
    }
    (data / "contacts.conf").write_text(
        "".join(f"{name} = {value}\n" for name, value in settings.items())
    )
    _as_owner(data.parent, owner)


def socket_dir(cfg: StackConfig) -> Path:
    return cfg.postgres_data.parent / "socket"


def postgres_process(cfg: StackConfig) -> Process:
    owner = cluster_owner()
    return Process(
        "postgres",
        cfg.postgres_port,
        [str(PG_BIN / "postgres"), "-D", str(cfg.postgres_data)],
        user=owner,
    )


def wait_until_accepting(cfg: StackConfig, timeout: float = 120.0) -> None:
    """PostgreSQL opens its port before it accepts connections (crash recovery after an
    unclean stop replays the WAL first), so readiness is asked of the server itself."""
    wait_for_postgres(cfg.host, cfg.postgres_port, timeout)


def wait_for_postgres(
    host: str, port: int, timeout: float, postmaster: subprocess.Popen[bytes] | None = None
) -> None:
    """Until the server at host (an address or a socket folder) and port accepts connections;
    raises if `postmaster`, when given, exits meanwhile."""
    deadline = time.monotonic() + timeout
    ready = [str(PG_BIN / "pg_isready"), "-q", "-h", host, "-p", str(port)]
    while subprocess.run(ready, check=False).returncode != 0:
        if postmaster is not None and postmaster.poll() is not None:
            raise RuntimeError(f"postgres exited ({postmaster.returncode}) while recovering")
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL did not accept connections within {timeout:.0f}s")
        time.sleep(0.2)


def psql_command(host: str, port: int, *options: str) -> list[str]:
    """psql as the `postgres` role on the `postgres` database of the server at host:port,
    stopping at the first error."""
    return [
        str(PG_BIN / "psql"),
        *options,
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
    ]


def create_extension(cfg: StackConfig) -> None:
    wait_until_accepting(cfg)
    run_checked(
        [
            *psql_command(cfg.host, cfg.postgres_port, "-q"),
            "-c",
            "CREATE EXTENSION IF NOT EXISTS documentdb CASCADE",
        ]
    )


# Lets an index scan deliver a sort with a limit (`Limit -> Index Scan`) instead of sorting
# every match first; per FerretDB connection, so postgresql.conf stays stock (ADR 9).
ORDERED_INDEX_SCANS = "-c%20documentdb.enableIndexOrderbyPushdown%3Don"


def ferretdb_process(cfg: StackConfig, state: Path | None = None) -> Process:
    """FerretDB on `cfg.mongo_port` for the PostgreSQL on `cfg.postgres_port`; `state`: its
    state folder, when not the stack's own (a second instance, as a test starts)."""
    state = state or cfg.home / "ferretdb" / "state"
    state.mkdir(parents=True, exist_ok=True)
    return Process(
        "ferretdb",
        cfg.mongo_port,
        [
            str(ferretdb_binary(cfg)),
            f"--listen-addr={cfg.host}:{cfg.mongo_port}",
            f"--postgresql-url=postgres://postgres@{cfg.host}:{cfg.postgres_port}/postgres"
            f"?options={ORDERED_INDEX_SCANS}",
            f"--state-dir={state}",
            "--no-auth",
            "--telemetry=disable",
            "--log-level=WARN",
            "--debug-addr=",  # its metrics listener would take a fixed port
        ],
    )
