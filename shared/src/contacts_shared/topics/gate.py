"""Each process verifies the topics it publishes to and consumes once Kafka first answers: in
local and test it creates the missing ones from the declaration; elsewhere it never creates
any, and until they are there as declared it is not ready, saying which topic and why."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import NoReturn

from aiokafka.errors import KafkaError

from contacts_shared.faults import FIRST_OUTAGE_PAUSE_SECONDS, next_outage_pause
from contacts_shared.settings import ServiceSettings
from contacts_shared.topics import DEVELOPMENT, TopicSpec, declared_topics, unusable
from contacts_shared.topics.admin import TopicAdminError, topic_admin

log = logging.getLogger(__name__)

APPLY = "python -m contacts_shared.topics apply"


class TopicsNotReady(KafkaError):  # type: ignore[misc]
    """The topics a process needs are missing or not as declared, or Kafka has not answered
    to say: an outage until fixed (requests answer 503, consumers wait, readiness fails)."""


class TopicGate:
    """The topics one process needs (`need`), verified once (`ensure`), again for topics
    needed later. The first verification waits for Kafka to answer: until it passes the
    process is not ready; once it has, a broker away later is an outage like any other."""

    def __init__(
        self,
        bootstrap_servers: str,
        resolve: Callable[[str], TopicSpec],
        *,
        create: bool,
        call_timeout: float = 8.0,
    ) -> None:
        """`resolve`: the declared spec of a topic name; `create`: create what is missing."""
        self._bootstrap_servers = bootstrap_servers
        self._resolve = resolve
        self._create = create
        self._call_timeout = call_timeout
        self._wanted: dict[str, TopicSpec] = {}
        self._verified: set[str] = set()
        self._verifying: asyncio.Task[None] | None = None  # one at a time, callers share it
        self._said: str | None = None  # the problem last logged: each is logged once

    @classmethod
    def of_service(cls, settings: ServiceSettings) -> TopicGate:
        """A gate of the declared topics; it creates missing ones in local and test only."""
        declared = {spec.name: spec for spec in declared_topics(settings)}

        def resolve(name: str) -> TopicSpec:
            if name not in declared:
                raise ValueError(f"topic {name} is not declared in contacts_shared.topics")
            return declared[name]

        return cls(
            settings.kafka_bootstrap_servers,
            resolve,
            create=settings.environment in DEVELOPMENT,
            call_timeout=settings.kafka_call_timeout_seconds,
        )

    @classmethod
    def creating(cls, bootstrap_servers: str, partitions: int) -> TopicGate:
        """A gate that creates whatever it is asked for with `partitions` partitions and one
        replica, as declared nowhere: the throwaway topics of tests, benches and tools."""
        return cls(bootstrap_servers, lambda name: TopicSpec(name, partitions, 1), create=True)

    def need(self, names: Iterable[str]) -> None:
        """Add topics this process uses; a name not declared is refused at once."""
        for name in names:
            self._wanted.setdefault(name, self._resolve(name))

    async def ensure(self) -> None:
        """Return once every topic needed is there as declared (created first where the gate
        creates); raise TopicsNotReady naming what is not, or that Kafka did not answer."""
        while not self._wanted.keys() <= self._verified:
            if self._verifying is None or self._verifying.done():
                self._verifying = asyncio.create_task(self._verify_pending())
                self._verifying.add_done_callback(_retrieve)
            # Shielded: a caller that gives up (a readiness probe past its timeout) leaves the
            # verification to end, and to say why it failed.
            await asyncio.shield(self._verifying)

    async def wait(self) -> None:
        """Return once `ensure` passes, trying again with backoff meanwhile (each problem is
        logged once)."""
        pause = FIRST_OUTAGE_PAUSE_SECONDS
        while True:
            try:
                await self.ensure()
                return
            except TopicsNotReady:
                await asyncio.sleep(pause)
                pause = next_outage_pause(pause)

    async def _verify_pending(self) -> None:
        pending = [spec for name, spec in self._wanted.items() if name not in self._verified]
        try:
            async with asyncio.timeout(self._call_timeout):
                problems = await self._verify(pending)
        except (KafkaError, TimeoutError, OSError) as exc:
            self._refuse(
                f"Kafka at {self._bootstrap_servers} did not answer ({type(exc).__name__}): "
                "the topics this process needs are not verified"
            )
        except TopicAdminError as exc:
            self._refuse(f"topics could not be created: {exc}")
        if problems:
            self._refuse(
                "topics not as declared: "
                + "; ".join(problems)
                + f". Create or fix them with `{APPLY}` (the topics Job), with this "
                "process's settings"
            )
        self._verified.update(spec.name for spec in pending)
        self._said = None
        log.info("topics verified", extra={"topics": sorted(s.name for s in pending)})

    async def _verify(self, pending: list[TopicSpec]) -> list[str]:
        async with topic_admin(self._bootstrap_servers, self._call_timeout) as admin:
            found = await admin.found(spec.name for spec in pending)
            missing = [spec for spec in pending if spec.name not in found]
            if self._create and missing:
                await admin.create(missing)
                log.info("created topics", extra={"topics": [spec.name for spec in missing]})
                found.update((spec.name, spec) for spec in missing)
        return [problem for s in pending if (problem := unusable(s, found.get(s.name)))]

    def _refuse(self, problem: str) -> NoReturn:
        if problem != self._said:
            log.error(problem)
            self._said = problem
        raise TopicsNotReady(problem)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Take a verification's outcome, which its callers may all have stopped waiting for."""
    if not task.cancelled():
        task.exception()
