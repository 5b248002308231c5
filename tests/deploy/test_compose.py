"""docker-compose.yml against the Compose specification's schema (vendored in deploy/schemas),
and what the schema cannot say: every image from the one root Dockerfile, built for a workspace
package; host ports unique and clear of `make run`'s; restart policies; the topics applied
before the apps start. Then the Dockerfile's table of services and the .dockerignore that keeps
the build context small. No Docker engine needed: these read the files."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from contacts_devstack.__main__ import SERVICES, WORKERS
from contacts_devstack.processes import StackConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TOPICS_COMMAND = ["python", "-m", "contacts_shared.topics", "apply"]


# -- reading the files ---------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return compose


def workspace_members() -> dict[str, Path]:
    """Package name -> folder, for every member of the uv workspace."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    members: dict[str, Path] = {}
    for member in root["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(ROOT.glob(member)):
            project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
            members[project["project"]["name"]] = folder
    return members


def workspace_services() -> dict[str, Path]:
    """The members that are services (under services/): each gets an image."""
    return {
        name: folder
        for name, folder in workspace_members().items()
        if folder.parent == ROOT / "services"
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name (or its position, unnamed) -> its instructions, FROM first."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages.setdefault(name, [])
        current.append((keyword, arguments))
    return stages


def dockerfile_global_args() -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults ('' without one)."""
    args: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            args[name] = default
    return args


def service_table() -> dict[str, dict[str, str]]:
    """The Dockerfile's table: service stage (one built FROM runtime) -> its ENV settings,
    and its EXPOSE line under "EXPOSE"."""
    table: dict[str, dict[str, str]] = {}
    for name, instructions in dockerfile_stages().items():
        if instructions[0][1].split()[0] != "runtime":
            continue
        env: dict[str, str] = {}
        for keyword, arguments in instructions:
            if keyword == "ENV":
                for pair in arguments.split():
                    key, _, value = pair.partition("=")
                    env[key] = value
            if keyword == "EXPOSE":
                env["EXPOSE"] = arguments
        table[name] = env
    return table


def build_of(service: dict[str, Any]) -> dict[str, Any] | None:
    build = service.get("build")
    if build is None:
        return None
    return {"context": build} if isinstance(build, str) else dict(build)


def build_args(build: dict[str, Any]) -> dict[str, str]:
    args = build.get("args", {})
    if isinstance(args, list):  # the list form: ["SERVICE=contact-svc"]
        return dict(item.split("=", 1) for item in args)
    return {key: str(value) for key, value in args.items()}


def one_shots(compose: dict[str, Any]) -> set[str]:
    """Services some other service waits on to have exited 0: they run once, then stop."""
    return {
        name
        for service in compose["services"].values()
        if isinstance(service.get("depends_on"), dict)
        for name, condition in service["depends_on"].items()
        if condition.get("condition") == "service_completed_successfully"
    }


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) for each published port, in short or long syntax."""
    pairs: list[tuple[int, int]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if port.get("published") is not None:
                target = int(port["target"])
                pairs.extend((host, target) for host in _port_range(str(port["published"])))
            continue
        parts = str(port).split("/")[0].split(":")  # [[ip:]host:]container[/protocol]
        if len(parts) < 2:
            continue  # container port only: Docker picks an ephemeral host port
        pairs.extend(zip(_port_range(parts[-2]), _port_range(parts[-1]), strict=True))
    return pairs


def _port_range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def make_run_ports(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """What `make run` listens on with its defaults: the services, workers and infrastructure."""
    for key in list(os.environ):
        if key.startswith("CONTACTS_STACK_"):
            monkeypatch.delenv(key)
    cfg = StackConfig()
    infrastructure = {cfg.kafka_port, cfg.controller_port, cfg.mongo_port, cfg.postgres_port}
    return infrastructure | {port for *_, port in SERVICES} | {port for *_, port in WORKERS}


# -- docker-compose.yml ------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    schema = yaml.safe_load(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)

    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(load_compose())
    ]

    assert errors == []


def test_the_compose_schema_rejects_what_compose_would() -> None:
    schema = yaml.safe_load(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    misspelt = copy.deepcopy(load_compose())
    misspelt["services"]["kafka"]["restrat"] = "always"
    wrong_type = copy.deepcopy(load_compose())
    wrong_type["services"]["mongo"]["ports"] = "27017"

    assert not validator.is_valid(misspelt)
    assert not validator.is_valid(wrong_type)


def test_every_build_is_the_root_dockerfile_for_a_workspace_package() -> None:
    packages = set(workspace_members())
    stages = set(service_table())
    builds = {
        name: build
        for name, service in load_compose()["services"].items()
        if (build := build_of(service)) is not None
    }

    assert builds, "no service builds an image"
    for name, build in builds.items():
        context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
        assert context == ROOT, f"{name} builds from {context}, not the repository root"
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
        package = build_args(build).get("SERVICE")
        assert package in packages, f"{name}: SERVICE={package!r} is no workspace package"
        assert package in stages, f"{name}: SERVICE={package!r} has no stage in the Dockerfile"


def test_every_workspace_service_has_a_compose_service() -> None:
    built = {
        build_args(build).get("SERVICE")
        for service in load_compose()["services"].values()
        if (build := build_of(service)) is not None
    }

    assert set(workspace_services()) <= built


def test_commands_exist_in_their_images() -> None:
    members = workspace_members()
    for name, service in load_compose()["services"].items():
        build = build_of(service)
        command = service.get("command")
        if build is None or command is None:
            continue
        package = build_args(build)["SERVICE"]
        if command[:2] == ["python", "-m"]:
            module = command[2]
            assert module.split(".")[0] in {"contacts_shared", package.replace("-", "_")}, name
            assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
        else:
            project = tomllib.loads((members[package] / "pyproject.toml").read_text())
            scripts = project["project"].get("scripts", {})
            assert command[0] in scripts, f"{name}: {package} has no script {command[0]!r}"


def test_no_two_services_publish_the_same_host_port() -> None:
    owners = Counter(
        host
        for service in load_compose()["services"].values()
        for host, _ in published_ports(service)
    )

    assert owners, "nothing is published"
    assert [port for port, count in owners.items() if count > 1] == []


def test_no_published_host_port_is_one_make_run_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = make_run_ports(monkeypatch)
    clashes = {
        name: host
        for name, service in load_compose()["services"].items()
        for host, _ in published_ports(service)
        if host in taken
    }

    assert {8100, 8114, 9092, 27017} <= taken
    assert clashes == {}


def test_published_ports_reach_the_port_each_image_serves_on() -> None:
    table = service_table()
    for name, service in load_compose()["services"].items():
        build = build_of(service)
        if build is None or "command" in service:
            continue
        port = int(table[build_args(build)["SERVICE"]]["HTTP_PORT"])
        assert {target for _, target in published_ports(service)} == {port}, name


def test_every_long_running_service_has_a_restart_policy() -> None:
    compose = load_compose()
    once = one_shots(compose)
    restarts = {name: service.get("restart", "no") for name, service in compose["services"].items()}

    assert once, "no one-shot service (the topics)"
    for name, policy in restarts.items():
        if name in once:
            # A one-shot retried on failure only: "always" would run it again and again.
            assert policy.startswith("on-failure"), f"{name}: restart {policy!r}"
        else:
            assert policy in {"always", "unless-stopped"} or policy.startswith("on-failure"), (
                f"{name}: restart {policy!r}"
            )


def test_the_apps_start_once_the_topics_are_applied() -> None:
    compose = load_compose()
    services = compose["services"]
    topics = [
        name for name, service in services.items() if service.get("command") == TOPICS_COMMAND
    ]

    assert len(topics) == 1, "one service runs `python -m contacts_shared.topics apply`"
    assert services[topics[0]]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, service in services.items():
        environment = service.get("environment", {})
        if name in topics or "CONTACTS_KAFKA_BOOTSTRAP_SERVERS" not in environment:
            continue
        condition = service["depends_on"].get(topics[0], {}).get("condition")
        assert condition == "service_completed_successfully", name


def test_every_dependency_waits_for_a_condition_it_can_reach() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, condition in depends_on.items():
            if condition["condition"] != "service_healthy":
                continue
            healthcheck = services[dependency].get("healthcheck", {})
            assert not healthcheck.get("disable"), f"{name} waits on {dependency}'s health"
            # Without one of its own, a service is healthy by its image's HEALTHCHECK.
            has_image_check = build_of(services[dependency]) is not None and any(
                keyword == "HEALTHCHECK" for keyword, _ in dockerfile_stages()["runtime"]
            )
            assert "test" in healthcheck or has_image_check, f"{dependency} has no healthcheck"


def test_infrastructure_keeps_its_data_in_named_volumes() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    mounted = {
        name: {
            volume.split(":")[1]
            for volume in service.get("volumes", [])
            if volume.split(":")[0] in declared
        }
        for name, service in compose["services"].items()
    }

    assert "/data/db" in mounted["mongo"]
    assert compose["services"]["kafka"]["environment"]["KAFKA_LOG_DIRS"] in mounted["kafka"]


def test_compose_images_are_pinned_to_exact_versions() -> None:
    images = {
        name: service["image"]
        for name, service in load_compose()["services"].items()
        if "image" in service
    }

    assert images
    for name, image in images.items():
        assert re.search(r":\d+\.\d+\.\d+", image), f"{name}: {image} is not an exact version"


# -- Dockerfile ------------------------------------------------------------------------------


def test_the_dockerfile_has_a_stage_for_every_workspace_service() -> None:
    assert set(service_table()) == set(workspace_services())


def test_each_stage_serves_its_own_app_on_the_make_run_port() -> None:
    make_run = {name: port for name, _, _, port in SERVICES}
    for name, env in service_table().items():
        module, _, factory = env["ASGI_APP"].partition(":")
        assert module == f"{name.replace('-', '_')}.app", name
        assert callable(getattr(importlib.import_module(module), factory)), name
        assert int(env["HTTP_PORT"]) == make_run[name], name
        assert env["HTTP_PORT"] in env["EXPOSE"].split(), name


def test_the_dockerfile_selects_its_stage_by_the_service_argument() -> None:
    stages = dockerfile_stages()
    last = list(stages.values())[-1]

    assert "SERVICE" in dockerfile_global_args()
    assert last[0] == ("FROM", "${SERVICE}")


def test_base_images_and_uv_are_pinned_to_exact_versions() -> None:
    args = dockerfile_global_args()
    stages = set(dockerfile_stages())
    bases = {
        re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], arguments.split()[0])
        for keyword, arguments in dockerfile_instructions()
        if keyword == "FROM" and arguments.split()[0] != "${SERVICE}"
    } - stages

    text = DOCKERFILE.read_text(encoding="utf-8")
    syntax = re.match(r"# syntax=(\S+)", text)
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["python_version"]

    assert bases, "no base image found"
    for base in bases | ({syntax.group(1)} if syntax else set()):
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", base), base
    # The Python the code is checked for (mypy's python_version) is the one the images run.
    assert {re.sub(r"^python:(\d+\.\d+)\..*", r"\1", base) for base in bases} == {python}
    assert re.search(r'"uv==\d+\.\d+\.\d+"', text)


def test_dependencies_are_installed_before_the_sources_are_copied() -> None:
    build = dockerfile_stages()["build"]
    copies = [
        (i, arguments.split()[:-1]) for i, (kw, arguments) in enumerate(build) if kw == "COPY"
    ]
    syncs = [(i, arguments) for i, (kw, arguments) in enumerate(build) if "uv sync" in arguments]
    dependencies_only = [i for i, arguments in syncs if "--no-install-workspace" in arguments]

    assert len(dependencies_only) == 1 and len(syncs) == 2
    first_sync = dependencies_only[0]
    before = {source for i, sources in copies if i < first_sync for source in sources}
    after = {source for i, sources in copies if i > first_sync for source in sources}
    assert before == {"pyproject.toml", "uv.lock"}
    assert {"shared", "services"} <= after
    assert "--frozen" in build[first_sync][1]
    assert "--locked" in syncs[-1][1] and "--no-editable" in syncs[-1][1]


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    runtime = dockerfile_stages()["runtime"]
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    healthchecks = [arguments for keyword, arguments in runtime if keyword == "HEALTHCHECK"]

    assert users == ["10001"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]
    assert "--uid 10001" in " ".join(arguments for keyword, arguments in runtime)


# -- .dockerignore ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker compiles it: Go's filepath.Match plus `**`."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i == len(pattern) else "(.*/)?"
            continue
        if pattern[i] == "[":  # a character class reads the same in both
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
        i += 1
    return re.compile(f"^{out}$")


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the context: the last pattern matching it or
    one of its parent folders decides, a `!` pattern letting it back in."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        cleaned = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        patterns.append((keep, _pattern_regex(cleaned)))
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for keep, regex in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not keep
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".local",
        ".local/uv-cache/archive-v0/x.whl",
        ".local/postgres/data/base/1/1259",
        ".git/HEAD",
        ".venv/bin/python",
        "docs/screenshots/console-profiles.png",
        "bench/import_csv.py",
        "deploy/k8s/base/kustomization.yaml",
        "services/contact-svc/tests/unit/test_domain.py",
        "shared/tests/test_events.py",
        "services/console/src/console/__pycache__/app.cpython-311.pyc",
        "shared/.mypy_cache/3.11/x.json",
        "services/import-svc/.venv/bin/python",
    ],
)
def test_dockerignore_leaves_out(path: str) -> None:
    assert dockerignored(path)


def test_dockerignore_keeps_everything_the_build_copies() -> None:
    sources = {
        source
        for keyword, arguments in dockerfile_stages()["build"]
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    needed = {source for source in sources if (ROOT / source).is_file()}
    for folder in sources - needed:
        assert (ROOT / folder).is_dir(), f"COPY {folder}: no such file or folder"
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT)
            if (
                path.is_file()
                and "__pycache__" not in relative.parts
                and (path.name == "pyproject.toml" or "src" in relative.parts)
            ):
                needed.add(relative.as_posix())

    assert len(needed) > 50, "the sources were not found"
    assert sorted(path for path in needed if dockerignored(path)) == []
