"""No committed change loses its event: not when Kafka is down, not when the process dies
right after the MongoDB write, before anything reached Kafka."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from contacts_shared.events import parse_event

pytestmark = pytest.mark.integration


async def test_events_of_changes_made_while_kafka_is_down_survive_a_kill(
    infrastructure: Any, unique: str, service_process: Any, read_envelopes: Any
) -> None:
    topic = f"profiles.events.crash.{unique}"
    env = {
        "CONTACTS_ENVIRONMENT": "test",
        "CONTACTS_MONGODB_URL": infrastructure.mongodb_url,
        "CONTACTS_MONGODB_DATABASE": f"profile_svc_crash_{unique}",
        "CONTACTS_TOPIC_PROFILES_EVENTS": topic,
        "CONTACTS_API_KEYS": f"crash-key=acct-{unique}",
        "CONTACTS_OUTBOX_SCAN_SECONDS": "0.5",
    }
    # First life: Kafka unreachable, so every change stays in its document's outbox.
    nothing_listens = f"127.0.0.1:{service_process('x', {}).port}"
    first = service_process(
        "profile_svc.app:create_app", {**env, "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": nothing_listens}
    )
    first.start()
    expected: set[tuple[str, str, int]] = set()
    async with httpx.AsyncClient(
        base_url=first.url, headers={"Authorization": "Bearer crash-key"}, timeout=10
    ) as api:
        assert (await api.get("/readyz")).status_code == 503
        for index in range(5):
            created = await api.post("/v1/profiles", json={"name": f"Crash {index}"})
            assert created.status_code == 201, created.text
            profile_id = created.json()["id"]
            expected.add((profile_id, "contacts.profile.created", 1))
            added = await api.post(f"/v1/profiles/{profile_id}/fields", json={"name": "City"})
            assert added.status_code == 201, added.text
            expected.add((profile_id, "contacts.profile.field_added", 2))
            renamed = await api.patch(f"/v1/profiles/{profile_id}", json={"name": f"R{index}"})
            assert renamed.status_code == 200, renamed.text
            expected.add((profile_id, "contacts.profile.updated", 3))
            if index % 2 == 0:
                assert (await api.delete(f"/v1/profiles/{profile_id}")).status_code == 204
                expected.add((profile_id, "contacts.profile.deleted", 4))
    first.kill(signal.SIGKILL)

    # Second life: Kafka is back; the relay publishes what the first life committed.
    second = service_process(
        "profile_svc.app:create_app",
        {**env, "CONTACTS_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap_servers},
    )
    second.start()

    def distinct(envelopes: list[Any]) -> dict[str, Any]:
        return {envelope.id: envelope for envelope in envelopes}

    envelopes = await read_envelopes(
        topic, until=lambda found: len(distinct(found)) >= len(expected), timeout=60
    )
    second.kill(signal.SIGTERM)

    published = set()
    for envelope in distinct(envelopes).values():
        data = parse_event(envelope).model_dump()
        version = data["version"] if "version" in data else data["profile"]["version"]
        published.add((envelope.subject, envelope.type, version))
    assert len(distinct(envelopes)) == len(expected) == 18
    assert published == expected
