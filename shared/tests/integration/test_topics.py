"""`python -m contacts_shared.topics apply|check` against the real broker, on topics of the
test's own (every declared name carries the test's id): apply creates them as declared, a
second run changes nothing, check names each difference, apply fixes what it may (configs,
partitions declared higher) keeping what it does not declare, and leaves to an operator a
topic with more partitions than declared or another replication factor."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contacts_shared.settings import ServiceSettings
from contacts_shared.topics import DECLARED_RETENTION, declared_topics
from contacts_shared.topics.__main__ import run
from contacts_shared.topics.admin import topic_admin
from contacts_shared.topics.gate import TopicGate, TopicsNotReady

pytestmark = pytest.mark.integration


def own_settings(infrastructure: Any, unique: str, **more: Any) -> ServiceSettings:
    """Settings naming every declared topic with the test's id (the `unique` fixture deletes
    them afterwards)."""
    defaults = ServiceSettings()
    names = {setting: f"{getattr(defaults, setting)}.{unique}" for setting, _ in DECLARED_RETENTION}
    return ServiceSettings.model_validate(
        {"kafka_bootstrap_servers": infrastructure.kafka_bootstrap_servers, **names, **more}
    )


async def broker_view(
    bootstrap_servers: str, names: list[str], keys: list[str]
) -> dict[str, tuple[int, int, dict[str, str]]]:
    """Each topic's partitions, replication factor and `keys` configs, read with aiokafka's
    own admin client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        metadata = {t["topic"]: t for t in await admin.describe_topics() if t["topic"] in names}
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(keys)) for name in names
        ]
        configs = {
            r["resource_name"]: {e["config_names"]: e["config_value"] for e in r["config_entries"]}
            for response in await admin.describe_configs(resources)
            for r in response.to_object()["resources"]
        }
    finally:
        await admin.close()
    return {
        name: (len(t["partitions"]), len(t["partitions"][0]["replicas"]), configs[name])
        for name, t in metadata.items()
    }


async def command(name: str, settings: ServiceSettings) -> tuple[int, str]:
    out = io.StringIO()
    status = await run(name, settings, out)
    return status, out.getvalue()


async def until_checked(settings: ServiceSettings) -> None:
    """Until `check` passes: a broker shows a topic just created or changed a moment later."""
    deadline = time.monotonic() + 30
    while (found := await command("check", settings))[0]:
        assert time.monotonic() < deadline, found[1]
        await asyncio.sleep(0.1)


async def test_apply_creates_the_declared_topics_and_a_second_run_changes_nothing(
    infrastructure: Any, unique: str
) -> None:
    settings = own_settings(infrastructure, unique, topic_partitions=2)
    declared = declared_topics(settings)
    assert all(unique in spec.name for spec in declared)

    status, out = await command("apply", settings)
    assert status == 0, out
    assert out.count("created ") == len(declared) == 18, out
    await until_checked(settings)

    keys = ["cleanup.policy", "min.insync.replicas", "retention.ms"]
    view = await broker_view(
        infrastructure.kafka_bootstrap_servers, [s.name for s in declared], keys
    )
    assert view == {
        spec.name: (spec.partitions, spec.replication_factor, dict(spec.configs))
        for spec in declared
    }
    assert view[f"contacts.events.{unique}"][2]["retention.ms"] == "-1"
    assert view[f"contacts.commands.{unique}"][2]["retention.ms"] == "604800000"
    assert view[f"contacts.events.{unique}.dlq.replayed"][:2] == (1, 1)
    assert view[f"contacts.events.{unique}.dlq.replayed"][2]["cleanup.policy"] == "compact"

    status, out = await command("apply", settings)
    assert (status, out.splitlines()[1:]) == (0, ["nothing to change", "every topic as declared"])


async def test_check_names_each_difference_and_apply_fixes_what_it_may(
    infrastructure: Any, unique: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap_servers
    settings = own_settings(infrastructure, unique, topic_partitions=2)
    assert (await command("apply", settings))[0] == 0
    await until_checked(settings)
    events = f"contacts.events.{unique}"
    # Changed by hand: a declared config, and one the declaration leaves alone.
    async with topic_admin(bootstrap, 10) as admin:
        await admin.set_configs({events: {"retention.ms": "3600000", "segment.ms": "7200000"}})
    more = settings.model_copy(update={"topic_partitions": 3})

    status, out = await command("check", more)
    assert status == 1
    wrong = [line for line in out.splitlines() if line.startswith("NOT AS DECLARED")]
    assert f"NOT AS DECLARED {events}: retention.ms=3600000, declared -1" in wrong
    assert f"NOT AS DECLARED {events}: 2 partitions, declared 3" in wrong
    assert len(wrong) == 1 + 12, out  # the retention; partitions of 6 topics and 6 dead letters

    status, out = await command("apply", more)
    assert status == 0, out
    assert f"set {events} retention.ms=-1" in out
    assert f"raised {events} to 3 partitions" in out
    await until_checked(more)
    view = await broker_view(bootstrap, [events], ["retention.ms", "segment.ms"])
    assert view[events] == (3, 1, {"retention.ms": "-1", "segment.ms": "7200000"})

    # Fewer partitions than exist, or another replication factor: named, left alone.
    for wrong_settings, says in [
        (settings, "3 partitions, declared 2: Kafka cannot remove partitions"),
        (
            more.model_copy(update={"topic_replication_factor": 3}),
            "replication factor 1, declared 3",
        ),
    ]:
        status, out = await command("apply", wrong_settings)
        assert status == 1, out
        assert f"NOT AS DECLARED {events}: {says}" in out
        assert "created" not in out and "raised" not in out
    assert (await broker_view(bootstrap, [events], []))[events][:2] == (3, 1)


async def test_outside_development_a_gate_creates_nothing_and_waits_for_the_topics(
    infrastructure: Any, unique: str
) -> None:
    settings = own_settings(
        infrastructure,
        unique,
        environment="production",
        api_keys={"s3cr3t-long": "account"},
        topic_replication_factor=1,  # one broker here
    )
    gate = TopicGate.of_service(settings)
    needed = [settings.topic_contacts_events, settings.topic_contacts_events + ".dlq"]
    gate.need(needed)
    waiting = asyncio.create_task(gate.wait())  # as segment-worker does before it starts
    await asyncio.sleep(1)
    assert not waiting.done()
    with pytest.raises(TopicsNotReady, match=f"{needed[0]} is missing"):
        await gate.ensure()
    assert not (await broker_view(infrastructure.kafka_bootstrap_servers, needed, []))

    assert (await command("apply", settings))[0] == 0  # the topics Job
    await asyncio.wait_for(waiting, timeout=30)
    await gate.ensure()
