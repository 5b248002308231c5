"""`python -m contacts_shared.topics apply|check`, with the services' settings (CONTACTS_*:
bootstrap servers, topic names, partitions, replication factor).

`apply` creates the missing topics, raises partitions declared higher and sets the declared
configs; a topic with more partitions than declared or another replication factor is left as
it is and named, for an operator. A second run changes nothing. `check` names every topic that
is missing or differs. Exit status 0 when every topic is as declared (after `apply`: or made
so), 1 when one is not, 2 when Kafka did not answer or refused a request."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from aiokafka.errors import KafkaError
from pydantic import model_validator

from contacts_shared.settings import ServiceSettings
from contacts_shared.topics import declared_topics, replication_of
from contacts_shared.topics.admin import TopicAdminError, apply_topics, compare, topic_admin


class TopicSettings(ServiceSettings):
    """The services' settings, read the same way (the Job shares their ConfigMap)."""

    service_name: str = "topics"

    @model_validator(mode="after")
    def refuse_local_keys_outside_dev(self) -> TopicSettings:
        """The command serves no requests: it needs no API keys, so it checks none."""
        return self


async def run(command: str, settings: ServiceSettings, out: TextIO) -> int:
    """Run `apply` or `check` against the settings' cluster; the exit status."""
    declared = declared_topics(settings)
    factor, in_sync = replication_of(settings)
    out.write(
        f"{len(declared)} topics declared for Kafka at {settings.kafka_bootstrap_servers} "
        f"({settings.environment}): replication factor {factor}, "
        f"min.insync.replicas {in_sync}, {settings.topic_partitions} partitions\n"
    )
    timeout = settings.kafka_call_timeout_seconds
    async with topic_admin(settings.kafka_bootstrap_servers, timeout) as admin:
        if command == "apply":
            applied = await apply_topics(admin, declared)
            done = applied.done or ["nothing to change"]
            wrong = [f"{c.spec.name}: {why}" for c in applied.refused for why in c.refusals]
        else:
            done = []
            compared = await compare(admin, declared)
            wrong = [f"{c.spec.name}: {why}" for c in compared for why in c.differences]
    out.writelines(f"{line}\n" for line in done)
    out.writelines(f"NOT AS DECLARED {line}\n" for line in wrong)
    if not wrong:
        out.write("every topic as declared\n")
    return 1 if wrong else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m contacts_shared.topics", description=__doc__)
    parser.add_argument("command", choices=["apply", "check"])
    args = parser.parse_args(argv)
    settings = TopicSettings()
    try:
        status = asyncio.run(run(args.command, settings, sys.stdout))
    except (KafkaError, TopicAdminError, TimeoutError, OSError) as exc:
        sys.stderr.write(f"topics: Kafka at {settings.kafka_bootstrap_servers}: {exc!r}\n")
        status = 2
    raise SystemExit(status)


if __name__ == "__main__":
    main()
