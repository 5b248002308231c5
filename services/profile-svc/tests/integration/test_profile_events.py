"""Every profile change is published on Kafka, in order, as a CloudEvents envelope."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from contacts_shared.events import (
    ProfileCreated,
    ProfileDeleted,
    ProfileFieldAdded,
    ProfileFieldRemoved,
    ProfileUpdated,
    VirtualProfileRulesChanged,
    parse_event,
)
from profile_svc.settings import ProfileSettings

pytestmark = pytest.mark.integration


async def test_changes_are_published_in_order_with_their_envelope(
    api: httpx.AsyncClient, profile_settings: ProfileSettings, read_envelopes: Any
) -> None:
    base = (await api.post("/v1/profiles", json={"name": "Base"})).json()
    path = f"/v1/profiles/{base['id']}"
    assert (await api.post(f"{path}/fields", json={"name": "Edad", "type": "number"})).is_success
    assert (await api.patch(path, json={"name": "Base 2", "description": "d"})).is_success
    rules = {"all": [{"field": "Edad", "op": "gt", "value": 17}]}
    virtual = (
        await api.post(
            "/v1/profiles",
            json={
                "name": "Adults",
                "type": "virtual",
                "base_profile_id": base["id"],
                "rules": rules,
            },
        )
    ).json()
    new_rules = {"all": [{"field": "Edad", "op": "gt", "value": 20}]}
    assert (await api.patch(f"/v1/profiles/{virtual['id']}", json={"rules": new_rules})).is_success
    assert (await api.delete(f"/v1/profiles/{virtual['id']}")).status_code == 204
    assert (await api.delete(f"{path}/fields/Edad")).is_success
    assert (await api.delete(path)).status_code == 204

    envelopes = await read_envelopes(
        profile_settings.topic_profiles_events, until=lambda found: len(found) >= 8
    )
    assert len(envelopes) == 8, [(e.type, e.subject) for e in envelopes]
    assert len({e.id for e in envelopes}) == 8
    for envelope in envelopes:
        assert envelope.specversion == "1.0"
        assert envelope.source == "/profile-svc"
        assert envelope.accountid == profile_settings.api_keys["key-a"]
        assert envelope.dataversion == "1"
        assert envelope.datacontenttype == "application/json"

    def story(profile_id: str) -> list[tuple[type, int]]:
        events = [parse_event(e) for e in envelopes if e.subject == profile_id]
        return [
            (
                type(event),
                event.version if isinstance(event, ProfileDeleted) else event.profile.version,
            )  # type: ignore[attr-defined]
            for event in events
        ]

    assert story(base["id"]) == [
        (ProfileCreated, 1),
        (ProfileFieldAdded, 2),
        (ProfileUpdated, 3),
        (ProfileFieldRemoved, 4),
        (ProfileDeleted, 5),
    ]
    assert story(virtual["id"]) == [
        (ProfileCreated, 1),
        (VirtualProfileRulesChanged, 2),
        (ProfileDeleted, 3),
    ]
    updated = parse_event(next(e for e in envelopes if e.type == ProfileUpdated.event_type))
    assert isinstance(updated, ProfileUpdated)
    assert updated.changed == ("name", "description") and updated.profile.name == "Base 2"
    added = parse_event(next(e for e in envelopes if e.type == ProfileFieldAdded.event_type))
    assert isinstance(added, ProfileFieldAdded)
    assert (added.field.name, added.field.key, added.field.type) == ("Edad", "edad", "number")
