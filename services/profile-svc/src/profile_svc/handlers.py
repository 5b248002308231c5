"""Use cases of profile-svc; each takes its ports as keyword arguments."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bson import ObjectId

from contacts_shared.mongo import bson_now, retry_if_stale
from contacts_shared.rules import RuleGroup
from contacts_shared.schema import FieldSpec, FieldType, ProfileType
from profile_svc.domain import (
    Profile,
    ProfileNotFound,
    ProfileOrder,
    invalid,
    page_cursor,
    parse_cursor,
)
from profile_svc.repository import ProfileFilter, ProfileRepository


def new_profile_id() -> str:
    """Time-ordered ids, so listing by id is listing by creation."""
    return str(ObjectId())


async def load(repo: ProfileRepository, account_id: str, profile_id: str) -> Profile:
    profile = await repo.get(account_id, profile_id)
    if profile is None:
        raise ProfileNotFound(profile_id)
    return profile


@dataclass(frozen=True)
class ProfilePage:
    """A page of profiles, how many match in all, and the cursor of the next page if any."""

    items: list[Profile]
    total: int
    next_cursor: str | None


async def list_profiles(
    *,
    account_id: str,
    filters: ProfileFilter,
    order: ProfileOrder,
    cursor: str | None,
    limit: int,
    repo: ProfileRepository,
) -> ProfilePage:
    """A page of the account's profiles in `order`, and how many match `filters` in all."""
    after = parse_cursor(order, cursor) if cursor else None
    found, total = await asyncio.gather(
        repo.find_page(account_id, filters, order=order, after=after, limit=limit + 1),
        repo.count(account_id, filters),
    )
    page = found[:limit]
    next_cursor = page_cursor(order, page[-1]) if len(found) > limit else None
    return ProfilePage(items=page, total=total, next_cursor=next_cursor)


async def _load_base(repo: ProfileRepository, account_id: str, base_id: str | None) -> Profile:
    base = await repo.get(account_id, base_id) if base_id else None
    if base is None:
        raise invalid("base_profile_id", f"no profile {base_id} in this account")
    return base


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
        now=bson_now(),
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
        profile.update(now=bson_now(), name=name, description=description, rules=rules, base=base)
        await repo.save(profile, expected_version=expected)
        return profile

    return await retry_if_stale(change)


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
        spec = profile.add_field(name=name, type=type, required=required, now=bson_now())
        await repo.save(profile, expected_version=expected)
        return profile, spec

    return await retry_if_stale(change)


async def remove_field(
    *, account_id: str, profile_id: str, name: str, repo: ProfileRepository
) -> Profile:
    async def change() -> Profile:
        profile = await load(repo, account_id, profile_id)
        expected = profile.version
        dependents = await repo.based_on(account_id, profile.id)
        profile.remove_field(name=name, dependents=dependents, now=bson_now())
        await repo.save(profile, expected_version=expected)
        return profile

    return await retry_if_stale(change)


async def delete_profile(*, account_id: str, profile_id: str, repo: ProfileRepository) -> None:
    async def change() -> None:
        profile = await load(repo, account_id, profile_id)
        expected = profile.version
        dependents = await repo.based_on(account_id, profile.id)
        profile.delete(dependents=dependents, now=bson_now())
        await repo.remove(profile, expected_version=expected)

    await retry_if_stale(change)
