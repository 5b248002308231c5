"""A request naming a profile the projection has not caught up with waits for it, boundedly,
and only when the profile can be new: its id says when it was minted."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from contacts_shared.profiles import (
    MINTING_SLACK_SECONDS,
    PatientSchemas,
    ProfileSchema,
    wait_for_new_profile_until,
)
from contacts_shared.schema import FieldSpec, FieldType, ProfileType

SCHEMA = ProfileSchema(
    profile_id="p1",
    account_id="a1",
    type=ProfileType.REGULAR,
    fields=(FieldSpec(key="email", name="email", type=FieldType.EMAIL, identity=True),),
    version=1,
)


def minted_ago(seconds: float) -> str:
    return str(ObjectId.from_datetime(datetime.now(UTC) - timedelta(seconds=seconds)))


class ArrivingLater:
    """A projection that learns of the profile at its `arrives_at`-th read."""

    def __init__(self, arrives_at: int) -> None:
        self.reads = 0
        self.arrives_at = arrives_at

    async def get(self, profile_id: str) -> ProfileSchema | None:
        self.reads += 1
        return SCHEMA if self.reads >= self.arrives_at else None

    async def apply(self, schema: ProfileSchema, *, deleted: bool) -> bool:
        return True


async def test_a_new_profile_arriving_meanwhile_is_found() -> None:
    store = ArrivingLater(arrives_at=4)
    assert await PatientSchemas(store, wait=5, poll=0.01).get(minted_ago(0)) == SCHEMA
    assert store.reads == 4


async def test_a_new_profile_is_unknown_once_its_wait_is_over() -> None:
    store = ArrivingLater(arrives_at=10**6)
    started = time.monotonic()
    assert await PatientSchemas(store, wait=0.2, poll=0.01).get(minted_ago(0)) is None
    assert time.monotonic() - started >= 0.2 and store.reads > 2


async def test_an_old_profile_id_is_unknown_at_once() -> None:
    store = ArrivingLater(arrives_at=10**6)
    old = minted_ago(3 + MINTING_SLACK_SECONDS + 1)
    assert await PatientSchemas(store, wait=3, poll=0.01).get(old) is None
    assert store.reads == 1


async def test_a_malformed_profile_id_is_unknown_at_once() -> None:
    store = ArrivingLater(arrives_at=10**6)
    assert await PatientSchemas(store, wait=3, poll=0.01).get("not-an-id") is None
    assert store.reads == 1


def test_the_wait_ends_a_wait_after_the_minting() -> None:
    minted = datetime(2026, 12, 5, 10, 0, 0, tzinfo=UTC)
    until = wait_for_new_profile_until(str(ObjectId.from_datetime(minted)), 3.0)
    assert until == minted.timestamp() + 3.0 + MINTING_SLACK_SECONDS
    assert wait_for_new_profile_until("0" * 23, 3.0) is None


async def test_a_known_profile_is_read_once() -> None:
    store = ArrivingLater(arrives_at=1)
    assert await PatientSchemas(store, wait=5).get("p1") == SCHEMA
    assert store.reads == 1
