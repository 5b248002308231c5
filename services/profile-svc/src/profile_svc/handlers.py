"""Use cases of profile-svc; each takes its ports as keyword arguments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from bson import ObjectId

from contacts_shared.rules import RuleGroup
from contacts_shared.schema import FieldSpec, FieldType, ProfileType
from profile_svc.domain import Profile, ProfileNotFound, invalid
from profile_svc.repository import ProfileRepository, StaleProfile

T = TypeVar("T")
MAX_ATTEMPTS = 5


def utc_now() -> datetime:
    """Now, to the millisecond: what BSON dates hold, so stored and returned times agree."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_profile_id() -> str:
    """Time-ordered ids, so listing by id is listing by creation."""
    return str(ObjectId())


async def load(repo: ProfileRepository, account_id: str, profile_id: str) -> Profile:
    profile = await repo.get(account_id, profile_id)
    if profile is None:
        raise ProfileNotFound(profile_id)
    return profile


async def _load_base(repo: ProfileRepository, account_id: str, base_id: str | None) -> Profile:
    base = await repo.get(account_id, base_id) if base_id else None
    if base is None:
        raise invalid("base_profile_id", f"no profile {base_id} in this account")
    return base


async def _retrying(change: Callable[[], Awaitable[T]]) -> T:
    """Run a read-change-write again when a concurrent writer got there first."""
    for _ in range(MAX_ATTEMPTS - 1):
        try:
            return await change()
        except StaleProfile:
            continue
    return await change()


async def create_profile(
    *,
    account_id: str,
    name: str,
    description: str,
    type: ProfileType,
    fields: Sequence[tuple[str, FieldType, bool]],
    base_profile_id: str | None,
    rules: RuleGroup | None,
    repo: ProfileRepository,
) -> Profile:
    base = None
    if type is ProfileType.VIRTUAL:
        base = await _load_base(repo, account_id, base_profile_id)
    elif base_profile_id is not None:
        raise invalid("base_profile_id", "only virtual profiles have a base profile")
    profile = Profile.create(
        id=new_profile_id(),
        account_id=account_id,
        name=name,
        description=description,
        type=type,
        fields=fields,
        now=utc_now(),
        base=base,
        rules=rules,
    )
    await repo.add(profile)
    return profile


async def update_profile(
    *,
    account_id: str,
    profile_id: str,
    name: str | None,
    description: str | None,
    rules: RuleGroup | None,
    repo: ProfileRepository,
) -> Profile:
    async def change() -> Profile:
        profile = await load(repo, account_id, profile_id)
        expected = profile.version
        base = None
        if rules is not None and profile.type is ProfileType.VIRTUAL:
            base = await _load_base(repo, account_id, profile.base_profile_id)
        profile.update(now=utc_now(), name=name, description=description, rules=rules, base=base)
        await repo.save(profile, expected_version=expected)
        return profile

    return await _retrying(change)


async def add_field(
    *,
    account_id: str,
    profile_id: str,
    name: str,
    type: FieldType,
    required: bool,
    repo: ProfileRepository,
) -> tuple[Profile, FieldSpec]:
    async def change() -> tuple[Profile, FieldSpec]:
        profile = await load(repo, account_id, profile_id)
        expected = profile.version
        spec = profile.add_field(name=name, type=type, required=required, now=utc_now())
        await repo.save(profile, expected_version=expected)
        return profile, spec

    return await _retrying(change)


async def remove_field(
    *, account_id: str, profile_id: str, name: str, repo: ProfileRepository
) -> Profile:
    async def change() -> Profile:
        profile = await load(repo, account_id, profile_id)
        expected = profile.version
        dependents = await repo.based_on(account_id, profile.id)
        profile.remove_field(name=name, dependents=dependents, now=utc_now())
        await repo.save(profile, expected_version=expected)
        return profile

    return await _retrying(change)


async def delete_profile(*, account_id: str, profile_id: str, repo: ProfileRepository) -> None:
    async def change() -> None:
        profile = await load(repo, account_id, profile_id)
        expected = profile.version
        dependents = await repo.based_on(account_id, profile.id)
        profile.delete(dependents=dependents, now=utc_now())
        await repo.remove(profile, expected_version=expected)

    await _retrying(change)
