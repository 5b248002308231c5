"""A request naming a profile the projection has not caught up with waits for it, boundedly."""

from __future__ import annotations

import time

from contacts_shared.profiles import PatientSchemas, ProfileSchema
from contacts_shared.schema import FieldSpec, FieldType, ProfileType

SCHEMA = ProfileSchema(
    profile_id="p1",
    account_id="a1",
    type=ProfileType.REGULAR,
    fields=(FieldSpec(key="email", name="email", type=FieldType.EMAIL, identity=True),),
    version=1,
)


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


async def test_a_profile_arriving_meanwhile_is_found() -> None:
    store = ArrivingLater(arrives_at=4)
    assert await PatientSchemas(store, wait=5, poll=0.01).get("p1") == SCHEMA
    assert store.reads == 4


async def test_an_unknown_profile_is_unknown_after_the_wait_only() -> None:
    store = ArrivingLater(arrives_at=10**6)
    started = time.monotonic()
    assert await PatientSchemas(store, wait=0.2, poll=0.01).get("p1") is None
    assert time.monotonic() - started >= 0.2 and store.reads > 2


async def test_a_known_profile_is_read_once() -> None:
    store = ArrivingLater(arrives_at=1)
    assert await PatientSchemas(store, wait=5).get("p1") == SCHEMA
    assert store.reads == 1
