"""The broker side of `contacts_shared.topics`: the topics a cluster has, and the admin
requests that make them as declared (create, add partitions, set configs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

from contacts_shared.topics import FoundTopic, TopicChange, TopicSpec, changes

UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION: a describe of a topic that does not exist
SET = 0  # IncrementalAlterConfigs' operation: set the value


class TopicAdminError(Exception):
    """The broker refused an admin request for a topic."""


def _refused(name: str, code: int, message: str | None) -> TopicAdminError:
    return TopicAdminError(f"{name}: {for_code(code).__name__} {message or ''}".rstrip())


# IncrementalAlterConfigs (KIP-339, Kafka 2.3+), version 0: aiokafka 0.14 sends only the older
# AlterConfigs, which replaces every config set on a topic, so an override an operator set
# outside the declared keys would be dropped. This one sets the declared keys alone.
class _IncrementalAlterConfigsResponse(Response):  # type: ignore[misc]
    API_KEY = 44
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "responses",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
            ),
        ),
    )


class _IncrementalAlterConfigsRequestV0(RequestStruct):  # type: ignore[misc]
    API_KEY = 44
    API_VERSION = 0
    RESPONSE_TYPE = _IncrementalAlterConfigsResponse
    SCHEMA = Schema(
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                (
                    "configs",
                    Array(
                        ("name", String("utf-8")),
                        ("config_operation", Int8),
                        ("value", String("utf-8")),
                    ),
                ),
            ),
        ),
        ("validate_only", Boolean),
    )


class _IncrementalAlterConfigsRequest(Request[_IncrementalAlterConfigsRequestV0]):  # type: ignore[misc]
    API_KEY = 44

    def __init__(self, resources: list[tuple[int, str, list[tuple[str, int, str]]]]) -> None:
        self._resources = resources

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(self._resources, False)


class TopicAdmin(AIOKafkaAdminClient):  # type: ignore[misc]
    """aiokafka's admin client, speaking in declared and found topics."""

    async def found(
        self, names: Iterable[str], *, configs: Iterable[str] = ()
    ) -> dict[str, FoundTopic]:
        """The topics among `names` that exist, with the values of their `configs` keys.
        Described from the metadata of every topic: asking for topics by name would have a
        broker that creates topics on first use create them."""
        wanted = set(names)
        found = {}
        for topic in await self.describe_topics():
            if topic["topic"] in wanted and topic["error_code"] == 0 and topic["partitions"]:
                partitions = topic["partitions"]
                replicas = max(len(p["replicas"]) for p in partitions)
                found[topic["topic"]] = FoundTopic(topic["topic"], len(partitions), replicas)
        keys = sorted(set(configs))
        return await self._with_configs(found, keys) if keys and found else found

    async def _with_configs(
        self, found: Mapping[str, FoundTopic], keys: list[str]
    ) -> dict[str, FoundTopic]:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(keys)) for name in found
        ]
        described = {}
        for response in await self.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                name = resource["resource_name"]
                if resource["error_code"] not in (0, UNKNOWN_TOPIC):
                    raise _refused(name, resource["error_code"], resource["error_message"])
                values = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
                topic = found[name]
                described[name] = FoundTopic(
                    name, topic.partitions, topic.replication_factor, values
                )
        return described

    async def create(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics; one another process created meanwhile counts as created."""
        if not specs:
            return
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
            for s in specs
        ]
        response = await self.create_topics(new)
        for name, code, *rest in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise _refused(name, code, rest[0] if rest else None)

    async def add_partitions(self, counts: Mapping[str, int]) -> None:
        """Raise each topic's partitions to the count."""
        if counts:
            await self.create_partitions({n: NewPartitions(c) for n, c in counts.items()})

    async def set_configs(self, configs: Mapping[str, Mapping[str, str]]) -> None:
        """Set these configs of each topic, leaving its others as they are."""
        resources = [
            (
                int(ConfigResourceType.TOPIC),
                name,
                [(key, SET, value) for key, value in sorted(values.items())],
            )
            for name, values in configs.items()
            if values
        ]
        if not resources:
            return
        response = await self._send_request(_IncrementalAlterConfigsRequest(resources))
        for code, message, _, name in response.responses:
            if code:
                raise _refused(name, code, message)


@asynccontextmanager
async def topic_admin(bootstrap_servers: str, timeout: float) -> AsyncIterator[TopicAdmin]:
    """A started admin client whose every request waits at most `timeout` seconds."""
    admin = TopicAdmin(
        bootstrap_servers=bootstrap_servers,
        client_id="contacts-topics",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def compare(admin: TopicAdmin, declared: Sequence[TopicSpec]) -> list[TopicChange]:
    """Each declared topic beside the one the cluster has."""
    keys = {key for spec in declared for key in spec.configs}
    return changes(declared, await admin.found((s.name for s in declared), configs=keys))


@dataclass(frozen=True)
class Applied:
    """What `apply_topics` did, and the topics it left to an operator."""

    done: list[str]
    refused: list[TopicChange]


async def apply_topics(admin: TopicAdmin, declared: Sequence[TopicSpec]) -> Applied:
    """Create the missing topics, raise partitions declared higher, set the configs that
    differ; a topic that needs an operator (`TopicChange.refusals`) is left as it is."""
    compared = await compare(admin, declared)
    refused = [c for c in compared if c.refusals]
    fixable = [c for c in compared if not c.refusals]
    created = [c.spec for c in fixable if c.create]
    raised = {c.spec.name: c.partitions for c in fixable if c.partitions is not None}
    configured = {c.spec.name: c.configs for c in fixable if c.configs}
    await admin.create(created)
    await admin.add_partitions(raised)
    await admin.set_configs(configured)
    done = [f"created {s.name} ({s.describe()})" for s in created]
    done += [f"raised {name} to {count} partitions" for name, count in raised.items()]
    done += [
        f"set {name} " + ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
        for name, values in configured.items()
    ]
    return Applied(done, refused)
