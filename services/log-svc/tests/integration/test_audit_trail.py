"""The audit trail's store against the real server: entries told twice (a redelivery, an event
published twice, both in one batch) are kept once."""

from __future__ import annotations

from typing import Any

import pytest

from contacts_shared.mongo import connect
from log_svc.repository import AuditTrail

pytestmark = pytest.mark.integration


def entry(version: int, change: str) -> dict[str, Any]:
    return {"_id": f"p1:a@x.io\x1f{version:012d}", "version": version, "change": change}


async def test_entries_told_twice_are_kept_once(infrastructure: Any, unique: str) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    trail = AuditTrail(client[f"audit_{unique}"]["audit_trail"])
    await trail.record([entry(1, "created"), entry(2, "updated")])
    await trail.record([entry(2, "updated"), entry(3, "status"), entry(3, "status")])
    listed = await trail.of_contact("p1:a@x.io", after_version=0, limit=10)
    await client.close()
    assert [(e["version"], e["change"]) for e in listed] == [
        (1, "created"),
        (2, "updated"),
        (3, "status"),
    ]
