"""End-to-end fixtures: services run as real processes against the real stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from contact_svc.webhooks import signature
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
from contacts_shared.dead_letters import list_dead_letters

# A service's `factory` names its ASGI app factory (`module:function`, run by uvicorn); a
# stream worker's names its module (`segment_svc.worker`), run with the port in `port_setting`.
WORKER_PORT_SETTINGS = {"segment_svc.worker": "CONTACTS_SEGMENT_WORKER_PORT"}


@dataclass
class ServiceProcess:
    """One process of a service (uvicorn) or of a stream worker; its output goes to a log file
    for failure reports."""

    factory: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, within: float = 30.0) -> None:
        """Start the process and wait until it answers, failing after `within` seconds."""
        env = dict(self.env)
        if self.factory in WORKER_PORT_SETTINGS:
            command = [sys.executable, "-m", self.factory]
            env[WORKER_PORT_SETTINGS[self.factory]] = str(self.port)
            health = "/"
        else:
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                self.factory,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
            health = "/healthz"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}{health}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.factory} did not answer {health}:\n{self.log_path.read_text()}")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)


ServiceFactory = Callable[[str, dict[str, str]], ServiceProcess]


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Makes service processes (not started); every one left running is killed at the end."""
    made: list[ServiceProcess] = []

    def make(factory: str, env: dict[str, str]) -> ServiceProcess:
        proc = ServiceProcess(factory, env, tmp_path / f"service-{len(made)}.log")
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()


JsonPoller = Callable[[httpx.AsyncClient, str], Awaitable[dict[str, Any]]]


async def answer_through_restarts(api: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The JSON a GET of `url` answers with 200, asked again while its service restarts."""
    while True:
        try:
            response = await api.get(url)
            if response.status_code == 200:
                return dict(response.json())
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)


@pytest.fixture
def job_state() -> JsonPoller:
    """Reads a job's state (an import's, a bulk action's) while its service is killed and
    started again: `await state(api, url)`."""
    return answer_through_restarts


WebhookSender = Callable[
    [httpx.AsyncClient, str, str, list[dict[str, object]]], Awaitable[httpx.Response]
]


async def post_signed(
    api: httpx.AsyncClient, endpoint: str, secret: str, records: list[dict[str, object]]
) -> httpx.Response:
    """Posts records to a webhook endpoint, signed with the source's secret as a store would."""
    body = json.dumps(records).encode()
    stamp = str(int(time.time()))
    return await api.post(
        endpoint,
        content=body,
        headers={
            "content-type": "application/json",
            "x-webhook-timestamp": stamp,
            "x-webhook-signature": signature(secret, stamp, body),
        },
    )


@pytest.fixture
def send_webhook() -> WebhookSender:
    """Posts records to a webhook endpoint, signed with the source's secret as a store would."""
    return post_signed


@dataclass(frozen=True)
class Answer:
    """One webhook delivery: when it was sent, how long its answer took, what it was."""

    started: float  # time.monotonic()
    elapsed: float
    status: int | None  # None: no answer (the client gave up, or the connection failed)
    emails: tuple[str, ...]
    content_type: str = ""
    retry_after: str | None = None
    detail: str = ""

    @property
    def answered(self) -> float:
        return self.started + self.elapsed


@dataclass(frozen=True)
class WebhookSource:
    """A webhook source of a profile: its id, the URL stores post to, the secret they sign with."""

    id: str
    url: str
    secret: str


WebhookSourceMaker = Callable[[httpx.AsyncClient, str, str], Awaitable[WebhookSource]]


@pytest.fixture
def webhook_source() -> WebhookSourceMaker:
    """Creates a webhook source of a profile through contact-svc, a record's `email` its email."""

    async def make(api: httpx.AsyncClient, contact_url: str, profile_id: str) -> WebhookSource:
        created = await api.post(
            f"{contact_url}/v1/webhook-sources",
            json={"profile_id": profile_id, "mapping": {"email": "email"}},
        )
        assert created.status_code == 201, created.text
        source = created.json()
        return WebhookSource(source["id"], f"{contact_url}{source['endpoint']}", source["secret"])

    return make


class WebhookLoad:
    """Stores posting deliveries of new contacts to a webhook source, each sender from a task of
    its own between `start` and `stop`, every answer kept in `answers`."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        source: WebhookSource,
        senders: int,
        per_batch: int,
        pause: float,
        email_domain: str,
    ) -> None:
        """`client`: the stores' (its timeout is how long a store waits for an answer); `pause`:
        between one sender's deliveries; each record's email is new, at `email_domain`."""
        self.client, self.source = client, source
        self.senders, self.per_batch, self.pause = senders, per_batch, pause
        self.email_domain = email_domain
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start every sender."""
        assert not self._tasks, "the load already started"
        self._tasks = [asyncio.create_task(self._send(n)) for n in range(self.senders)]

    async def stop(self) -> None:
        """Stop every sender once its delivery in flight is answered."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def accepted_since(self, moment: float) -> list[Answer]:
        """The deliveries sent at or after `moment` (time.monotonic()) and answered 202."""
        return [a for a in self.answers if a.status == 202 and a.started >= moment]

    async def wait_accepted(
        self, count: int, since: float, timeout: float, failure: str, *, lasting: float = 0.0
    ) -> list[Answer]:
        """Waits until `count` deliveries sent since `since` are answered 202 and the load has
        gone on `lasting` seconds since then, and returns those; fails with `failure` and the
        last answers once `timeout` seconds are over."""
        deadline = time.monotonic() + timeout
        while (
            len(accepted := self.accepted_since(since)) < count
            or time.monotonic() - since < lasting
        ):
            # The last answers of the moment the wait gives up, not of its start.
            assert time.monotonic() < deadline, f"{failure}: {self.answers[-3:]}"
            await asyncio.sleep(0.05)
        return accepted

    async def _send(self, sender: int) -> None:
        batch = 0
        while not self._stop.is_set():
            emails = tuple(
                f"s{sender}-b{batch}-{record}@{self.email_domain}"
                for record in range(self.per_batch)
            )
            batch += 1
            records: list[dict[str, object]] = [{"email": email} for email in emails]
            started = time.monotonic()
            try:
                response = await post_signed(
                    self.client, self.source.url, self.source.secret, records
                )
            except httpx.HTTPError as exc:  # a client timeout among them: a hang
                elapsed = time.monotonic() - started
                self.answers.append(Answer(started, elapsed, None, emails, detail=repr(exc)))
            else:
                elapsed = time.monotonic() - started
                self.answers.append(
                    Answer(
                        started,
                        elapsed,
                        response.status_code,
                        emails,
                        response.headers.get("content-type", ""),
                        response.headers.get("retry-after"),
                        "" if response.status_code == 202 else response.text[:500],
                    )
                )
            await asyncio.sleep(self.pause)


@pytest.fixture
def webhook_load() -> type[WebhookLoad]:
    """The class of a webhook load: `WebhookLoad(client, source, senders, per_batch, pause,
    email_domain)`, then `start()` and, in a `finally`, `await stop()`."""
    return WebhookLoad


KeyCounter = Callable[[httpx.AsyncClient, str], Awaitable[dict[str, int]]]


@pytest.fixture
def stored_keys() -> KeyCounter:
    """How many times each key is listed at a listing URL, over every page (by cursor)."""

    async def count(api: httpx.AsyncClient, base: str) -> dict[str, int]:
        found: dict[str, int] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            response = await api.get(base, params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            for item in page["items"]:
                found[item["key"]] = found.get(item["key"], 0) + 1
            cursor = page["next_cursor"]
            if not cursor:
                return found

    return count


DeadLetterReader = Callable[[str, list[str]], Awaitable[dict[str, list[str]]]]


@pytest.fixture
def dead_letters() -> DeadLetterReader:
    """The records in each of the named dead-letter topics of a broker, from their beginning to
    their end, each shown by its position and error (`contacts dead-letters list`). Every topic
    must exist (the services create them when their consumers start), or the check would be
    void: a missing one raises."""

    async def read(bootstrap: str, topics: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for topic in topics:
            async with aclosing(list_dead_letters(bootstrap, topic)) as letters:
                found[topic] = [
                    f"{letter.position}: {letter.error[:300]}" async for letter in letters
                ]
        return found

    return read


@dataclass(frozen=True)
class Readiness:
    """One answer of a service's /readyz."""

    at: float  # time.monotonic()
    service: str
    status: int  # 0: no answer
    body: str


class ReadinessWatch(Protocol):
    def __call__(
        self, api: httpx.AsyncClient, services: dict[str, ServiceProcess], *, poll: float = ...
    ) -> contextlib.AbstractAsyncContextManager[list[Readiness]]: ...


@pytest.fixture
def readiness_watch() -> ReadinessWatch:
    """While in use, every `poll` seconds, each named service's /readyz, from a task of its own;
    it yields the answers as they come."""

    @contextlib.asynccontextmanager
    async def watching(
        api: httpx.AsyncClient, services: dict[str, ServiceProcess], *, poll: float = 0.25
    ) -> AsyncIterator[list[Readiness]]:
        answers: list[Readiness] = []
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                for name, service in services.items():
                    try:
                        ready = await api.get(f"{service.url}/readyz")
                    except httpx.HTTPError as exc:
                        answers.append(Readiness(time.monotonic(), name, 0, repr(exc)))
                    else:
                        answers.append(
                            Readiness(time.monotonic(), name, ready.status_code, ready.text)
                        )
                await asyncio.sleep(poll)

        task = asyncio.create_task(watch())
        try:
            yield answers
        finally:
            stop.set()
            await task

    return watching


PlatformEnv = Callable[[str], dict[str, dict[str, str]]]


@pytest.fixture
def platform_env(infrastructure: Any, unique: str) -> PlatformEnv:
    """Settings of a profile-svc, contact-svc, import-svc, log-svc and segment-svc (its API and
    its worker) of a test's own, by service, given a tag: topics, databases and consumer groups
    named after `unique`, and the API key `<tag>-key` of account `acct-<unique>`."""

    def settings(tag: str) -> dict[str, dict[str, str]]:
        env = {
            "CONTACTS_ENVIRONMENT": "test",
            "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap_servers,
            "CONTACTS_MONGODB_URL": infrastructure.mongodb_url,
            "CONTACTS_TOPIC_PROFILES_EVENTS": f"profiles.events.{tag}.{unique}",
            "CONTACTS_TOPIC_CONTACTS_EVENTS": f"contacts.events.{tag}.{unique}",
            "CONTACTS_TOPIC_CONTACTS_COMMANDS": f"contacts.commands.{tag}.{unique}",
            "CONTACTS_TOPIC_IMPORTS_RESULTS": f"imports.results.{tag}.{unique}",
            "CONTACTS_TOPIC_IMPORTS_EVENTS": f"imports.events.{tag}.{unique}",
            "CONTACTS_TOPIC_SEGMENTS_EVENTS": f"segments.events.{tag}.{unique}",
            "CONTACTS_API_KEYS": f"{tag}-key=acct-{unique}",
        }
        profile_env = {**env, "CONTACTS_MONGODB_DATABASE": f"profile_svc_{tag}_{unique}"}
        contact_env = {
            **env,
            "CONTACTS_MONGODB_DATABASE": f"contact_svc_{tag}_{unique}",
            "CONTACTS_PROFILE_EVENTS_GROUP": f"schemas-{unique}",
            "CONTACTS_CONTACT_COMMANDS_GROUP": f"commands-{unique}",
            "CONTACTS_CONTACT_EVENTS_GROUP": f"contact-events-{unique}",
        }
        import_env = {
            **env,
            "CONTACTS_MONGODB_DATABASE": f"import_svc_{tag}_{unique}",
            "CONTACTS_PROFILE_EVENTS_GROUP": f"import-schemas-{unique}",
            "CONTACTS_RESULTS_GROUP": f"results-{unique}",
            "CONTACTS_POLL_SECONDS": "0.2",
        }
        log_env = {
            **env,
            "CONTACTS_MONGODB_DATABASE": f"log_svc_{tag}_{unique}",
            "CONTACTS_IMPORTS_EVENTS_GROUP": f"log-{unique}",
            "CONTACTS_CONTACTS_EVENTS_GROUP": f"log-contacts-{unique}",
        }
        segment_env = {
            **env,
            "CONTACTS_MONGODB_DATABASE": f"segment_svc_{tag}_{unique}",
            "CONTACTS_SEGMENT_WORKER_ID": f"segments-{tag}-{unique}",
            "CONTACTS_REBUILD_POLL_SECONDS": "0.2",
        }
        return {
            "profile": profile_env,
            "contact": contact_env,
            "import": import_env,
            "log": log_env,
            "segment": segment_env,
        }

    return settings


class ProfileMaker(Protocol):
    async def __call__(
        self,
        api: httpx.AsyncClient,
        profile_url: str,
        contact_url: str,
        body: dict[str, object],
        *,
        import_url: str | None = None,
    ) -> dict[str, Any]: ...


@pytest.fixture
def profile_known_to_contacts() -> ProfileMaker:
    """Creates a profile through profile-svc and returns it once contact-svc knows it (and
    import-svc, given `import_url`): each learns of it from profiles.events, a moment later."""

    async def make(
        api: httpx.AsyncClient,
        profile_url: str,
        contact_url: str,
        body: dict[str, object],
        *,
        import_url: str | None = None,
    ) -> dict[str, Any]:
        profile: dict[str, Any] = (await api.post(f"{profile_url}/v1/profiles", json=body)).json()
        contacts = f"{contact_url}/v1/profiles/{profile['id']}/contacts"
        deadline = time.monotonic() + 30
        while (await api.get(contacts)).status_code == 404:
            assert time.monotonic() < deadline, "contact-svc never learnt of the profile"
            await asyncio.sleep(0.1)
        while import_url is not None:
            # An empty file is refused: 422 once the profile is known, 404 before.
            probe = await api.post(
                f"{import_url}/v1/imports",
                data={"profile_id": profile["id"], "action": "append"},
                files={"file": ("empty.csv", b"")},
            )
            if probe.status_code != 404:
                break
            assert time.monotonic() < deadline, "import-svc never learnt of the profile"
            await asyncio.sleep(0.1)
        return profile

    return make


class PrivateCluster:
    """A PostgreSQL cluster and FerretDB of the test's own under `.local/` (the `postgres` user
    must reach its data), on free ports, with the installed extensions and FerretDB; started,
    and started again after a kill, by devstack's own function (which, after an unclean stop,
    kills what a dead postmaster left and checks and repairs the documents before serving)."""

    def __init__(self) -> None:
        shared = StackConfig()
        documentdb.install(shared)  # the extensions and FerretDB, if this machine lacks them
        home = REPO_ROOT / ".local" / f"e2e-crash-{uuid.uuid4().hex[:8]}"
        home.mkdir(parents=True)
        (home / "bin").symlink_to(shared.home / "bin")
        self.cfg = replace(shared, home=home, postgres_port=free_port(), mongo_port=free_port())

    @property
    def mongodb_url(self) -> str:
        return self.cfg.mongodb_url

    def start(self) -> recovery.CheckReport | None:
        """Start PostgreSQL (unless its postmaster runs) and FerretDB (unless it listens);
        devstack's check after an unclean stop, if there was one."""
        return start_local_server(self.cfg)

    def kill_every_process(self) -> None:
        """SIGKILL of every PostgreSQL process of the cluster's data directory."""
        recovery.kill_data_dir_processes(self.cfg.postgres_data, "test")

    def kill_postmaster(self) -> None:
        """SIGKILL of the postmaster alone: its backends live on, orphaned, a moment."""
        postmaster = read_pid(self.cfg, "postgres")
        assert postmaster is not None
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(postmaster):
            assert time.monotonic() < deadline, "the postmaster survived SIGKILL"
            time.sleep(0.05)

    def postgres_running(self) -> bool:
        return bool(
            recovery.processes_of_data_dir(self.cfg.postgres_data, recovery.running_processes())
        )

    def close(self) -> None:
        stop_process(self.cfg, "ferretdb")
        recovery.kill_data_dir_processes(self.cfg.postgres_data, "end of test")
        shutil.rmtree(self.cfg.home, ignore_errors=True)


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL cluster and FerretDB (not started), removed at the end: a test may
    kill it at will, whatever servers the rest of the suite uses."""
    made = PrivateCluster()
    try:
        yield made
    finally:
        made.close()


def chromium_path() -> str:
    """Debian's Chromium, which `make setup` installs."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(path).exists(), "Debian's chromium is missing: `make setup` installs it"
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium that resolves no host name but 127.0.0.1 and localhost: even a request
    the pages' check would miss (one of Chromium's own) cannot leave the machine."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"],
        )
        try:
            yield browser
        finally:
            await browser.close()


AXE = REPO_ROOT / ".local" / "browser" / "node_modules" / "axe-core" / "axe.min.js"


@dataclass(frozen=True)
class Console:
    """The web console of a test's own platform, as a person uses it in the browser."""

    url: str
    screenshots: Path | None
    # Each service's API by name (`profile`, `contact`, `import`, `segment`, `log`), for a
    # test to set things up or check them the way another program would.
    services: dict[str, str]

    async def sign_in(self, page: Page, key: str = "console-key") -> None:
        await page.goto(f"{self.url}/profiles")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="List Profiles")).to_be_visible()

    async def go(self, page: Page, section: str) -> None:
        """Open a section from the navigation."""
        await page.get_by_role("navigation").get_by_role("link", name=section).click()
        await expect(page.get_by_role("heading", name=section)).to_be_visible()

    async def reload_until(self, page: Page, text: str, within: float = 30.0) -> None:
        """Reloads the page until it shows `text`: what a service learns from another's events,
        or counts from them, a moment after the write."""
        deadline = time.monotonic() + within
        while await page.get_by_text(text).count() == 0:
            assert time.monotonic() < deadline, f"never shown: {text}"
            await page.wait_for_timeout(250)
            await page.reload()

    async def accessible(self, page: Page, name: str) -> None:
        """No serious or critical axe-core violation on the page as it stands; with
        `CONTACTS_SCREENSHOTS=<folder>`, a screenshot of it there as `<name>.png`."""
        assert AXE.exists(), "axe-core is missing: `make setup` installs it"
        await page.add_script_tag(path=str(AXE))
        violations = await page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter(v => ['serious', 'critical'].includes(v.impact))"
            ".map(v => `${v.id}: ${v.help} (${v.nodes.map(n => n.target).join(' ')})`)"
        )
        assert violations == [], f"{name}: {violations}"
        if self.screenshots is not None:
            self.screenshots.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(self.screenshots / f"{name}.png"))


@pytest.fixture
def console(service_process: ServiceFactory, platform_env: PlatformEnv, unique: str) -> Console:
    """Every service (segment-svc's worker too) and the console, as processes of the test's
    own; API keys `console-key` (account acct-<unique>) and `other-key` (another account)."""
    envs = platform_env("console")
    keys = {"CONTACTS_API_KEYS": f"console-key=acct-{unique},other-key=other-{unique}"}
    started = {
        name: service_process(factory, envs[tag] | keys)
        for name, factory, tag in (
            ("profile", "profile_svc.app:create_app", "profile"),
            ("contact", "contact_svc.app:create_app", "contact"),
            ("import", "import_svc.app:create_app", "import"),
            ("segment", "segment_svc.app:create_app", "segment"),
            ("segment-worker", "segment_svc.worker", "segment"),
            ("log", "log_svc.app:create_app", "log"),
        )
    }
    console = service_process(
        "console.app:create_app",
        {
            "CONTACTS_ENVIRONMENT": "test",
            "CONTACTS_PROFILE_SVC_URL": started["profile"].url,
            "CONTACTS_CONTACT_SVC_URL": started["contact"].url,
            "CONTACTS_IMPORT_SVC_URL": started["import"].url,
            "CONTACTS_SEGMENT_SVC_URL": started["segment"].url,
            "CONTACTS_LOG_SVC_URL": started["log"].url,
        },
    )
    for process in [*started.values(), console]:
        process.start()
    shots = os.environ.get("CONTACTS_SCREENSHOTS")
    apis = {name: process.url for name, process in started.items() if name != "segment-worker"}
    return Console(console.url, Path(shots) if shots else None, apis)
