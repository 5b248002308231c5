"""`python -m contacts_shared.rewind GROUP TOPIC... [--execute]`: moves a stopped consumer
group's committed offsets back to the start of its topics, so that its consumers, started
again, read every record kept there once more. It is how a projection is rebuilt from the
events (docs/operations.md, "Rebuilding a projection"): every consumer is idempotent under
redelivery, and event topics are kept for ever (`contacts_shared.topics`).

Without `--execute` it only says what it would move. It refuses while the group has members:
a running consumer would commit its own position over the rewind (stop the deployment first).
Exit status 0 when done (or, dry, when it could be done), 1 when the group is active or a
topic unknown, 2 when Kafka did not answer."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from contacts_shared.settings import ServiceSettings


class RewindRefused(Exception):
    """The group cannot be rewound as it stands; the message says why and what to do."""


@dataclass(frozen=True)
class Moved:
    """A partition's committed offset (None: none committed) and the start it moves to."""

    partition: TopicPartition
    committed: int | None
    start: int


async def group_and_topics(bootstrap_servers: str, group: str) -> tuple[int, dict[str, list[int]]]:
    """How many members the group has now (0: none, or no such group), and the partition
    numbers of every topic (from the metadata of all: asking for one could create it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [described] = response.to_object()["groups"]
        topics = await admin.describe_topics()
    finally:
        await admin.close()
    partitions = {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in topics}
    return len(described["members"]), partitions


async def rewind(
    bootstrap_servers: str, group: str, topics: Sequence[str], *, execute: bool
) -> list[Moved]:
    """Each partition of `topics` with the group's committed offset and the topic's start;
    committed to the start when `execute`. Raises RewindRefused while the group has members
    or a topic does not exist."""
    members, known = await group_and_topics(bootstrap_servers, group)
    if members:
        raise RewindRefused(
            f"group {group} has {members} member(s): stop its consumers first (scale the "
            "deployment to 0), then rewind"
        )
    missing = sorted(set(topics) - known.keys())
    if missing:
        raise RewindRefused(f"no such topic: {', '.join(missing)}")
    partitions = [TopicPartition(topic, number) for topic in topics for number in known[topic]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        moved = [Moved(tp, await consumer.committed(tp), starts[tp]) for tp in partitions]
        if execute:
            await consumer.commit({tp: starts[tp] for tp in partitions})
        return moved
    finally:
        await consumer.stop()


def report(group: str, moved: Sequence[Moved], *, execute: bool, out: TextIO) -> None:
    behind = sum(m.committed - m.start for m in moved if m.committed is not None)
    for m in moved:
        committed = "none" if m.committed is None else str(m.committed)
        out.write(f"{m.partition.topic}[{m.partition.partition}]: {committed} -> {m.start}\n")
    verb = "rewound" if execute else "would rewind (dry run: --execute to do it)"
    out.write(f"group {group} {verb}: {len(moved)} partitions, {behind} records to read again\n")


async def command(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """The command's work; its exit status."""
    parser = argparse.ArgumentParser(prog="python -m contacts_shared.rewind", description=__doc__)
    parser.add_argument("group", help="the consumer group (a service's `*_group` setting)")
    parser.add_argument("topics", nargs="+", metavar="topic", help="the topics it reads")
    parser.add_argument("--execute", action="store_true", help="commit; else only say what")
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka's addresses; default: CONTACTS_KAFKA_BOOTSTRAP_SERVERS, as the services",
    )
    args = parser.parse_args(argv)
    servers = args.bootstrap_servers or os.environ.get(
        "CONTACTS_KAFKA_BOOTSTRAP_SERVERS",
        str(ServiceSettings.model_fields["kafka_bootstrap_servers"].default),
    )
    try:
        moved = await rewind(servers, args.group, args.topics, execute=args.execute)
    except RewindRefused as refused:
        out.write(f"refused: {refused}\n")
        return 1
    except KafkaError as exc:
        out.write(f"Kafka at {servers} did not answer: {exc!r}\n")
        return 2
    report(args.group, moved, execute=args.execute, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(command()))
