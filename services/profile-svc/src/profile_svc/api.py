"""HTTP routes of profile-svc: translate requests into handler calls, nothing more."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contacts_shared.rules import OPS_BY_KIND, RuleGroup, RuleOperator, ValueShape
from contacts_shared.schema import FieldSpec, FieldType, ProfileType
from contacts_shared.web import MAX_BATCH_PROFILES, AccountId, current_account
from profile_svc import handlers
from profile_svc.domain import MAX_FIELDS, Profile, ProfileOrder
from profile_svc.repository import ProfileFilter, ProfileRepository

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])
rules_router = APIRouter(prefix="/v1/rule-operators", tags=["rules"])
PROFILE_ID = "^[0-9a-f]{24}$"


class FieldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="exactly as in CSV headers")
    type: FieldType = FieldType.TEXT
    required: bool = False


class ProfileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    type: ProfileType = ProfileType.REGULAR
    fields: list[FieldIn] = Field(default_factory=list, max_length=MAX_FIELDS)
    base_profile_id: str | None = Field(default=None, description="virtual profiles only")
    rules: RuleGroup | None = Field(default=None, description="virtual profiles only")


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    rules: RuleGroup | None = None

    @model_validator(mode="after")
    def something_to_change(self) -> ProfileUpdate:
        if self.name is None and self.description is None and self.rules is None:
            raise ValueError("give at least one of name, description, rules")
        return self


class ProfileOut(BaseModel):
    id: str
    name: str
    description: str
    type: ProfileType
    fields: list[FieldSpec]
    base_profile_id: str | None
    rules: dict[str, Any] | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, profile: Profile) -> ProfileOut:
        snapshot = profile.snapshot()
        return cls.model_validate(snapshot.model_dump(exclude={"account_id"}))


class ProfileListQuery(BaseModel):
    """The parameters of a profile list; an unknown one is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    type: list[ProfileType] = Field(
        default_factory=list, max_length=3, description="any of these types (repeat it)"
    )
    id: list[Annotated[str, Field(pattern=PROFILE_ID)]] = Field(
        default_factory=list,
        max_length=MAX_BATCH_PROFILES,
        description="only these profiles (repeat it): a page of rows naming profiles, in one call",
    )
    name: str | None = Field(default=None, max_length=200, description="name prefix")
    base_profile_id: str | None = Field(
        default=None, pattern=PROFILE_ID, description="the virtual profiles based on this one"
    )
    sort: ProfileOrder = Field(
        default=ProfileOrder.CREATED, description="`-` first: descending; names ignore case"
    )
    cursor: str | None = Field(
        default=None, max_length=1000, description="next_cursor of the page before, same sort"
    )
    limit: int = Field(default=50, ge=1, le=200)


class ProfilePage(BaseModel):
    items: list[ProfileOut]
    total: int = Field(description="how many profiles match the filters, on every page")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class OperatorOut(BaseModel):
    name: RuleOperator
    label: str = Field(description="in English, for people")
    value: ValueShape = Field(
        description="what the condition's value holds: none, one value of the field's type, "
        "two ([low, high]), a non-empty list, or a positive whole number of days"
    )


class RuleOperators(BaseModel):
    field_types: dict[str, list[OperatorOut]] = Field(
        description="operators by field type, and `status` for the contact's status"
    )


def repository(request: Request) -> ProfileRepository:
    repo: ProfileRepository = request.app.state.profiles
    return repo


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_profile(
    body: ProfileCreate, account_id: AccountId, request: Request, response: Response
) -> ProfileOut:
    """Create a regular, virtual or mobile-only profile."""
    profile = await handlers.create_profile(
        account_id=account_id,
        name=body.name,
        description=body.description,
        type=body.type,
        fields=[(f.name, f.type, f.required) for f in body.fields],
        base_profile_id=body.base_profile_id,
        rules=body.rules,
        repo=repository(request),
    )
    response.headers["location"] = f"/v1/profiles/{profile.id}"
    return ProfileOut.of(profile)


@router.get("")
async def list_profiles(
    account_id: AccountId, request: Request, query: Annotated[ProfileListQuery, Query()]
) -> ProfilePage:
    """List the account's profiles sorted, filtered by types, name prefix, base profile or
    ids."""
    page = await handlers.list_profiles(
        account_id=account_id,
        filters=ProfileFilter(
            types=tuple(query.type),
            name_prefix=query.name,
            base_profile_id=query.base_profile_id,
            ids=tuple(query.id),
        ),
        order=query.sort,
        cursor=query.cursor,
        limit=query.limit,
        repo=repository(request),
    )
    return ProfilePage(
        items=[ProfileOut.of(p) for p in page.items],
        total=page.total,
        next_cursor=page.next_cursor,
    )


@router.get("/{profile_id}")
async def get_profile(profile_id: str, account_id: AccountId, request: Request) -> ProfileOut:
    """One profile with its fields."""
    return ProfileOut.of(await handlers.load(repository(request), account_id, profile_id))


@router.patch("/{profile_id}")
async def update_profile(
    profile_id: str, body: ProfileUpdate, account_id: AccountId, request: Request
) -> ProfileOut:
    """Change name, description or (virtual profiles) rules."""
    profile = await handlers.update_profile(
        account_id=account_id,
        profile_id=profile_id,
        name=body.name,
        description=body.description,
        rules=body.rules,
        repo=repository(request),
    )
    return ProfileOut.of(profile)


@router.delete("/{profile_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_profile(profile_id: str, account_id: AccountId, request: Request) -> None:
    """Delete a profile (refused while virtual profiles are based on it)."""
    await handlers.delete_profile(
        account_id=account_id, profile_id=profile_id, repo=repository(request)
    )


@router.post("/{profile_id}/fields", status_code=status.HTTP_201_CREATED)
async def add_field(
    profile_id: str, body: FieldIn, account_id: AccountId, request: Request
) -> ProfileOut:
    """Add a field to a regular or mobile-only profile."""
    profile, _ = await handlers.add_field(
        account_id=account_id,
        profile_id=profile_id,
        name=body.name,
        type=body.type,
        required=body.required,
        repo=repository(request),
    )
    return ProfileOut.of(profile)


@router.delete("/{profile_id}/fields/{field_name}")
async def remove_field(
    profile_id: str, field_name: str, account_id: AccountId, request: Request
) -> ProfileOut:
    """Delete a field (never the identity field, nor one that virtual profiles' rules read)."""
    profile = await handlers.remove_field(
        account_id=account_id, profile_id=profile_id, name=field_name, repo=repository(request)
    )
    return ProfileOut.of(profile)


@rules_router.get("", dependencies=[Depends(current_account)])
async def list_rule_operators() -> RuleOperators:
    """The operators rules take on each field type: name, label and value shape."""
    return RuleOperators(
        field_types={
            kind: [OperatorOut(name=op, label=op.label, value=op.shape) for op in ops]
            for kind, ops in OPS_BY_KIND.items()
        }
    )
