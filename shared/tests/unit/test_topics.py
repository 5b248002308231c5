"""The declared topics and their comparison with what a broker has: pure logic, no broker."""

from __future__ import annotations

import logging

import pytest

from contacts_shared.faults import is_outage
from contacts_shared.settings import ServiceSettings
from contacts_shared.topics import (
    KEEP_FOREVER,
    WEEK_MS,
    FoundTopic,
    TopicChange,
    TopicSpec,
    changes,
    declared_topics,
    replication_of,
    unusable,
)
from contacts_shared.topics.__main__ import TopicSettings
from contacts_shared.topics.gate import TopicGate, TopicsNotReady

PRODUCTION_KEYS = {"s3cr3t-long": "acct"}
CONFIGS = {"cleanup.policy": "delete", "min.insync.replicas": "2", "retention.ms": "-1"}


def spec(name: str = "t", partitions: int = 6, replicas: int = 3) -> TopicSpec:
    return TopicSpec(name, partitions, replicas, CONFIGS)


def found(partitions: int = 6, replicas: int = 3, **configs: str) -> FoundTopic:
    values = {**CONFIGS, **{k.replace("_", "."): v for k, v in configs.items()}}
    return FoundTopic("t", partitions, replicas, values)


def test_every_topic_is_declared_with_its_dead_letters_and_their_replay_marks() -> None:
    settings = ServiceSettings(topic_contacts_events="c.e", dead_letter_suffix=".parked")
    by_name = {s.name: s for s in declared_topics(settings)}
    sources = {
        "profiles.events",
        "c.e",
        "imports.events",
        "segments.events",
        "contacts.commands",
        "imports.results",
    }
    assert set(by_name) == (
        sources | {f"{t}.parked" for t in sources} | {f"{t}.parked.replayed" for t in sources}
    )
    assert by_name["c.e"].configs["retention.ms"] == str(KEEP_FOREVER)
    assert by_name["contacts.commands"].configs["retention.ms"] == str(WEEK_MS)
    assert by_name["c.e.parked"].configs["cleanup.policy"] == "delete"
    marks = by_name["c.e.parked.replayed"]
    assert (marks.partitions, marks.configs["cleanup.policy"]) == (1, "compact")
    assert {s.partitions for s in by_name.values() if not s.name.endswith(".replayed")} == {6}


@pytest.mark.parametrize(
    ("environment", "override", "expected"),
    [
        ("local", None, (1, 1)),
        ("test", None, (1, 1)),
        ("staging", None, (3, 2)),
        ("production", None, (3, 2)),
        ("production", 1, (1, 1)),  # a one-broker cluster, said so
        ("production", 2, (2, 1)),
        ("local", 5, (5, 2)),
    ],
)
def test_replication_is_the_clusters_and_in_sync_replicas_follow(
    environment: str, override: int | None, expected: tuple[int, int]
) -> None:
    settings = ServiceSettings.model_validate(
        {
            "environment": environment,
            "topic_replication_factor": override,
            "api_keys": PRODUCTION_KEYS,
        }
    )
    assert replication_of(settings) == expected
    assert {
        (s.replication_factor, s.configs["min.insync.replicas"]) for s in declared_topics(settings)
    } == {(expected[0], str(expected[1]))}


def test_a_missing_topic_is_created_and_nothing_else() -> None:
    change = TopicChange(spec(), None)
    assert (change.create, change.partitions, change.configs, change.refusals) == (
        True,
        None,
        {},
        [],
    )
    assert change.differences == [
        "missing (declared: 6 partitions, replication factor 3, cleanup.policy=delete, "
        "min.insync.replicas=2, retention.ms=-1)"
    ]


def test_a_topic_as_declared_needs_nothing() -> None:
    change = TopicChange(spec(), found())
    assert not change.create
    assert (change.partitions, change.configs, change.refusals, change.differences) == (
        None,
        {},
        [],
        [],
    )


def test_partitions_declared_higher_are_added() -> None:
    change = TopicChange(spec(partitions=12), found(partitions=6))
    assert (change.partitions, change.refusals) == (12, [])
    assert change.differences == ["6 partitions, declared 12"]


def test_only_the_configs_that_differ_are_set() -> None:
    change = TopicChange(spec(), found(retention_ms="604800000", min_insync_replicas="2"))
    assert change.configs == {"retention.ms": "-1"}
    assert change.differences == ["retention.ms=604800000, declared -1"]
    unset = TopicChange(spec(), FoundTopic("t", 6, 3, {}))
    assert unset.configs == CONFIGS
    assert "cleanup.policy=(unset), declared delete" in unset.differences


def test_fewer_partitions_or_another_replication_factor_need_an_operator() -> None:
    fewer = TopicChange(spec(partitions=3), found(partitions=6))
    assert fewer.partitions is None
    [refusal] = fewer.refusals
    assert "6 partitions, declared 3" in refusal and "cannot remove" in refusal
    replicas = TopicChange(spec(replicas=3), found(replicas=1, retention_ms="1"))
    [refusal] = replicas.refusals
    assert "replication factor 1, declared 3" in refusal
    # `check` names both what needs an operator and what apply would set.
    assert replicas.differences == [
        f"needs an operator: {refusal}",
        "retention.ms=1, declared -1",
    ]


def test_changes_keep_the_declared_order() -> None:
    declared = [spec("b"), spec("a")]
    compared = changes(declared, {"a": FoundTopic("a", 6, 3, CONFIGS)})
    assert [(c.spec.name, c.create) for c in compared] == [("b", True), ("a", False)]


def test_a_process_can_use_a_topic_with_its_partitions_or_more_and_its_replication() -> None:
    assert unusable(spec(), None) == "t is missing"
    assert unusable(spec(), found(partitions=4)) == "t has 4 partitions, declared 6"
    assert unusable(spec(), found(replicas=1)) == "t has replication factor 1, declared 3"
    assert unusable(spec(), found(partitions=12, retention_ms="5")) is None


def test_a_process_needs_declared_topics_only() -> None:
    gate = TopicGate.of_service(ServiceSettings())
    gate.need(["contacts.events", "contacts.events.dlq"])
    with pytest.raises(ValueError, match="not declared"):
        gate.need(["contacts.evnets"])


def test_the_command_reads_production_settings_without_api_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONTACTS_ENVIRONMENT", "production")
    monkeypatch.delenv("CONTACTS_API_KEYS", raising=False)
    assert replication_of(TopicSettings()) == (3, 2)


async def test_a_gate_whose_kafka_does_not_answer_is_an_outage_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = ServiceSettings(
        kafka_bootstrap_servers="127.0.0.1:1", environment="production", api_keys=PRODUCTION_KEYS
    )
    gate = TopicGate.of_service(settings)
    gate.need(["profiles.events"])
    for _ in range(3):
        with caplog.at_level(logging.ERROR), pytest.raises(TopicsNotReady) as refused:
            await gate.ensure()
    assert is_outage(refused.value)
    assert "Kafka at 127.0.0.1:1 did not answer" in str(refused.value)
    said = [r for r in caplog.records if r.name == "contacts_shared.topics.gate"]
    assert len(said) == 1, said


async def test_a_gate_with_nothing_to_verify_asks_no_broker() -> None:
    gate = TopicGate.creating("127.0.0.1:1", partitions=1)
    await gate.ensure()
