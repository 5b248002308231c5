"""Topics as configuration: every topic the platform uses, declared once here with its
partitions, replication factor, `min.insync.replicas`, retention and cleanup policy.

`python -m contacts_shared.topics apply` makes a cluster match the declaration (the Kubernetes
Job, and `make run` locally), `... check` names every topic that does not match, and each
process verifies the topics it needs once Kafka first answers (`topics.gate.TopicGate`);
docs/adr/0020-topics-as-configuration.md says why.

Names come from the settings (`topic_*`, `dead_letter_suffix`), so tests declare topics of
their own by naming them. The declaration holds production values; the replication factor is
the cluster's (`replication_of`): 3 outside local development, 1 in `local` and `test` (one
broker), `CONTACTS_TOPIC_REPLICATION_FACTOR` for any other cluster.

This module is the pure part: the declaration and the comparison of a declared topic with the
one found on a broker. `admin` talks to the broker, `gate` verifies at start, `__main__` is
the command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from contacts_shared.settings import ServiceSettings

# The replay marks of a dead-letter topic: `<dlq topic>.replayed` (`dead_letters`).
MARKS_SUFFIX = ".replayed"

KEEP_FOREVER = -1
WEEK_MS = 7 * 24 * 3600 * 1000

# One broker may fail without losing an acknowledged write (acks=all waits for two replicas)
# or stopping the writes (two of three remain in sync).
PRODUCTION_REPLICATION_FACTOR = 3
PRODUCTION_MIN_INSYNC_REPLICAS = 2
# Environments whose cluster is one broker, where processes also create what they need.
DEVELOPMENT = frozenset({"local", "test"})

# Every topic the platform uses, by the setting that names it, with its retention. Events are
# the record every projection is rebuilt from by replaying its topics from the start (segment
# members, import logs and audit trails, statistics): kept. Commands and batch results are work
# in flight, applied within seconds: a week outlasts any consumer's outage and keeps the
# personal data they carry no longer. Every one is consumed, so each has a dead-letter topic,
# kept until someone has looked (the alert fires at once; a parked record expiring unseen
# would be a silent loss), and that one its compacted replay marks.
DECLARED_RETENTION: tuple[tuple[str, int], ...] = (
    ("topic_profiles_events", KEEP_FOREVER),
    ("topic_contacts_events", KEEP_FOREVER),
    ("topic_imports_events", KEEP_FOREVER),
    ("topic_segments_events", KEEP_FOREVER),
    ("topic_contacts_commands", WEEK_MS),
    ("topic_imports_results", WEEK_MS),
)


@dataclass(frozen=True)
class TopicSpec:
    """A topic as declared (or as found: `FoundTopic`)."""

    name: str
    partitions: int
    replication_factor: int
    # min.insync.replicas, retention.ms, cleanup.policy: set on the topic, compared by `check`.
    configs: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        configs = ", ".join(f"{key}={value}" for key, value in sorted(self.configs.items()))
        return (
            f"{self.partitions} partition{'s' if self.partitions > 1 else ''}, "
            f"replication factor {self.replication_factor}" + (f", {configs}" if configs else "")
        )


def replication_of(settings: ServiceSettings) -> tuple[int, int]:
    """The replication factor and `min.insync.replicas` of every topic on the settings'
    cluster: the setting if given, else 3 (1 in local and test); in-sync replicas one fewer
    than the replicas, between 1 and 2."""
    factor = settings.topic_replication_factor or (
        1 if settings.environment in DEVELOPMENT else PRODUCTION_REPLICATION_FACTOR
    )
    return factor, max(1, min(PRODUCTION_MIN_INSYNC_REPLICAS, factor - 1))


def declared_topics(settings: ServiceSettings) -> tuple[TopicSpec, ...]:
    """Every topic the platform uses, named and sized by `settings`."""
    factor, in_sync = replication_of(settings)

    def spec(name: str, partitions: int, retention_ms: int, policy: str = "delete") -> TopicSpec:
        configs = {
            "cleanup.policy": policy,
            "min.insync.replicas": str(in_sync),
            "retention.ms": str(retention_ms),
        }
        return TopicSpec(name, partitions, factor, configs)

    # One partition count for all: they share the key (`profile_id:contact_key` for contacts),
    # and contact-svc's statistics read one share per partition of contacts.events.
    partitions = settings.topic_partitions
    topics = [
        spec(getattr(settings, setting), partitions, retention)
        for setting, retention in DECLARED_RETENTION
    ]
    dead_letters = [
        spec(t.name + settings.dead_letter_suffix, partitions, KEEP_FOREVER) for t in topics
    ]
    # A mark is a few bytes per replayed record: one partition, compacted, each key kept.
    marks = [spec(d.name + MARKS_SUFFIX, 1, KEEP_FOREVER, "compact") for d in dead_letters]
    return (*topics, *dead_letters, *marks)


# A topic as a broker has it: the same fields, `configs` holding the declared keys' values.
FoundTopic: TypeAlias = TopicSpec


OPERATOR_NEEDED = "needs an operator"


@dataclass(frozen=True)
class TopicChange:
    """What `apply` does to make a found topic (None: missing) match its declaration, and what
    it will not do: fewer partitions than exist (Kafka cannot remove any) or another
    replication factor (a partition reassignment) need an operator."""

    spec: TopicSpec
    found: FoundTopic | None

    @property
    def create(self) -> bool:
        return self.found is None

    @property
    def partitions(self) -> int | None:
        """The count to raise the partitions to, if they are fewer than declared."""
        if self.found is None or self.found.partitions >= self.spec.partitions:
            return None
        return self.spec.partitions

    @property
    def configs(self) -> dict[str, str]:
        """The declared configs whose value differs from the topic's."""
        if self.found is None:
            return {}
        return {k: v for k, v in self.spec.configs.items() if self.found.configs.get(k) != v}

    @property
    def refusals(self) -> list[str]:
        """Why an operator must look at the topic first; `apply` leaves it alone."""
        found, spec = self.found, self.spec
        if found is None:
            return []
        refusals = []
        if found.partitions > spec.partitions:
            refusals.append(
                f"{found.partitions} partitions, declared {spec.partitions}: Kafka cannot "
                "remove partitions; declare the count it has, or recreate the topic"
            )
        if found.replication_factor != spec.replication_factor:
            refusals.append(
                f"replication factor {found.replication_factor}, declared "
                f"{spec.replication_factor}: reassign its partitions "
                "(kafka-reassign-partitions), or declare the cluster's "
                "(CONTACTS_TOPIC_REPLICATION_FACTOR)"
            )
        return refusals

    @property
    def differences(self) -> list[str]:
        """Every way the topic differs from its declaration, worded for `check`."""
        if self.found is None:
            return [f"missing (declared: {self.spec.describe()})"]
        wrong = [f"{OPERATOR_NEEDED}: {refusal}" for refusal in self.refusals]
        if self.partitions is not None:
            wrong.append(f"{self.found.partitions} partitions, declared {self.partitions}")
        wrong += [
            f"{key}={self.found.configs.get(key, '(unset)')}, declared {value}"
            for key, value in sorted(self.configs.items())
        ]
        return wrong


def changes(declared: Sequence[TopicSpec], found: Mapping[str, FoundTopic]) -> list[TopicChange]:
    """The comparison of each declared topic with the one found, in declared order."""
    return [TopicChange(spec, found.get(spec.name)) for spec in declared]


def unusable(spec: TopicSpec, found: FoundTopic | None) -> str | None:
    """Why a process cannot use the topic (missing, fewer partitions than declared, another
    replication factor); None when it can. Configs are `check`'s business: a process works
    whatever its topic's retention."""
    if found is None:
        return f"{spec.name} is missing"
    if found.partitions < spec.partitions:
        return f"{spec.name} has {found.partitions} partitions, declared {spec.partitions}"
    if found.replication_factor != spec.replication_factor:
        return (
            f"{spec.name} has replication factor {found.replication_factor}, "
            f"declared {spec.replication_factor}"
        )
    return None
