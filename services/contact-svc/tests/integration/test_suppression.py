"""An unsubscribe holds account-wide without a window (ADR 15): once it is answered, the email
arrives unsubscribed by every path (API create and replace, contacts:batch, webhooks, import
rows), sent at once and concurrently; contacts added while it was in flight, or held before
in other profiles, end unsubscribed too; only an explicit re-activation lifts it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contact_svc.webhooks import signature
from contacts_shared.commands import ImportAction, ImportContact

pytestmark = pytest.mark.integration

Services = tuple[httpx.AsyncClient, httpx.AsyncClient]
FIELDS = [{"name": "Nombre"}]
RACES = 12  # emails, each raced by every path at once


class Paths:
    """Every way a contact reaches a profile, each into a profile of its own."""

    def __init__(
        self,
        contacts: httpx.AsyncClient,
        profiles: dict[str, str],
        source: dict[str, Any],
        producer: AIOKafkaProducer,
        commands_topic: str,
        account: str,
    ) -> None:
        self.contacts, self.profiles, self.source = contacts, profiles, source
        self.producer, self.commands_topic, self.account = producer, commands_topic, account

    async def delivered(self, records: list[dict[str, str]]) -> httpx.Response:
        body, stamp = json.dumps(records).encode(), str(int(time.time()))
        sign = {
            "x-webhook-timestamp": stamp,
            "x-webhook-signature": signature(self.secret, stamp, body),
        }
        headers = {"content-type": "application/json", **sign}
        return await self.contacts.post(self.source["endpoint"], content=body, headers=headers)

    @property
    def secret(self) -> str:
        return str(self.source["secret"])

    def base(self, path: str) -> str:
        return f"/v1/profiles/{self.profiles[path]}/contacts"

    async def add_everywhere(self, email: str) -> dict[str, httpx.Response]:
        """The email added by each path at once; the API's answers, by path."""
        body = {"fields": {"email": email, "Nombre": "N"}}
        row = ImportContact(
            import_id=f"imp-{email}",
            account_id=self.account,
            profile_id=self.profiles["import"],
            key=email,
            values={"nombre": "N"},
            action=ImportAction.APPEND_OR_UPDATE,
            line=2,
            sequence=0,
        )
        create, put, batch, webhook, _ = await asyncio.gather(
            self.contacts.post(self.base("create"), json=body),
            self.contacts.put(f"{self.base('put')}/{email}", json=body),
            self.contacts.post(f"{self.base('batch')}:batch", json={"contacts": [body["fields"]]}),
            self.delivered([{"email": email}]),
            self.producer.send_and_wait(
                self.commands_topic,
                row.model_dump_json().encode(),
                key=row.partition_key.encode(),
            ),
        )
        for answer in (create, put, batch, webhook):
            assert answer.is_success, answer.text
        return {"create": create, "put": put}

    async def statuses(self, email: str) -> dict[str, tuple[str, str] | None]:
        """(status, status_source) of the email in each profile, None where absent."""
        found: dict[str, tuple[str, str] | None] = {}
        for path in self.profiles:
            read = await self.contacts.get(f"{self.base(path)}/{email}")
            body = read.json() if read.status_code == 200 else None
            found[path] = (body["status"], body["status_source"]) if body else None
        return found


@pytest.fixture
async def paths(services: Services, known_profile: Any, shared_settings: dict[str, Any]) -> Any:
    _, contacts = services
    names = ("home", "create", "put", "batch", "webhook", "import", "before")
    profiles = {name: (await known_profile(name=name, fields=FIELDS))["id"] for name in names}
    source = (
        await contacts.post(
            "/v1/webhook-sources",
            json={"profile_id": profiles["webhook"], "mapping": {"email": "email"}},
        )
    ).json()
    producer = AIOKafkaProducer(bootstrap_servers=shared_settings["kafka_bootstrap_servers"])
    await producer.start()
    try:
        yield Paths(
            contacts,
            profiles,
            source,
            producer,
            shared_settings["topic_contacts_commands"],
            shared_settings["api_keys"]["key-a"],
        )
    finally:
        await producer.stop()


async def settled(paths: Paths, emails: list[str], eventually: Any, expected: Any) -> None:
    """Wait until every email stands as `expected(path, status)` says in every profile."""
    last: dict[str, Any] = {}

    async def holds() -> bool:
        for email in emails:
            last[email] = await paths.statuses(email)
            if not all(expected(path, state) for path, state in last[email].items()):
                return False
        return True

    assert await eventually(holds, timeout=60), last


async def test_additions_after_the_unsubscribe_is_answered_arrive_unsubscribed(
    paths: Paths, eventually: Any
) -> None:
    emails = [f"after{i}@race.example" for i in range(RACES)]
    home = paths.base("home")
    batch = await paths.contacts.post(
        f"{home}:batch", json={"contacts": [{"email": email} for email in emails]}
    )
    assert batch.status_code == 200, batch.text
    answers: dict[str, dict[str, httpx.Response]] = {}

    async def race(email: str) -> None:
        unsubscribed = await paths.contacts.patch(
            f"{home}/{email}", json={"status": "unsubscribed", "status_reason": "link"}
        )
        assert unsubscribed.status_code == 200, unsubscribed.text
        answers[email] = await paths.add_everywhere(email)

    await asyncio.gather(*(race(email) for email in emails))

    # The API's own answers already say so: no window, nothing corrected afterwards.
    for email, by_path in answers.items():
        for path, answer in by_path.items():
            body = answer.json()
            assert (body["status"], body["status_source"]) == ("unsubscribed", "suppression"), (
                email,
                path,
            )

    def suppressed(path: str, state: tuple[str, str] | None) -> bool:
        if path == "before":
            return state is None
        if path == "home":
            return state == ("unsubscribed", "api")
        return state == ("unsubscribed", "suppression")

    await settled(paths, emails, eventually, suppressed)
    # And stay so once every event of theirs has been through the consumers.
    for email in emails:
        assert all(suppressed(p, s) for p, s in (await paths.statuses(email)).items())


async def test_contacts_added_meanwhile_or_before_end_unsubscribed_until_reactivated(
    paths: Paths, eventually: Any
) -> None:
    emails = [f"meanwhile{i}@race.example" for i in range(RACES)]
    home, before = paths.base("home"), paths.base("before")
    for base in (home, before):  # held in two profiles before the unsubscribe
        batch = [{"email": email} for email in emails]
        assert (await paths.contacts.post(f"{base}:batch", json={"contacts": batch})).is_success

    async def race(email: str) -> None:
        unsubscribe = paths.contacts.patch(f"{home}/{email}", json={"status": "bounced"})
        answered, _ = await asyncio.gather(unsubscribe, paths.add_everywhere(email))
        assert answered.status_code == 200, answered.text

    await asyncio.gather(*(race(email) for email in emails))

    def bounced(path: str, state: tuple[str, str] | None) -> bool:
        return state == ("bounced", "api" if path == "home" else "suppression")

    await settled(paths, emails, eventually, bounced)

    # An explicit re-activation lifts the suppression: that contact stays active, later
    # arrivals are active, and the others stay as the suppression left them.
    email = emails[0]
    reactivated = await paths.contacts.patch(f"{before}/{email}", json={"status": "active"})
    assert reactivated.json()["status"] == "active"
    fresh = await paths.contacts.post(
        paths.base("create"), json={"fields": {"email": "other@race.example"}}
    )
    assert fresh.status_code == 201
    await paths.contacts.delete(f"{paths.base('create')}/{email}")
    again = await paths.contacts.post(paths.base("create"), json={"fields": {"email": email}})
    assert again.json()["status"] == "active", again.text

    def lifted(path: str, state: tuple[str, str] | None) -> bool:
        if path in ("before", "create"):
            return state is not None and state[0] == "active"
        return bounced(path, state)

    await settled(paths, [email], eventually, lifted)
