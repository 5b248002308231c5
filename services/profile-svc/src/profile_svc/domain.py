"""Profiles and their fields: the pure rules (no I/O). Each change records its events."""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from contacts_shared.events import (
    DomainEvent,
    ProfileCreated,
    ProfileDeleted,
    ProfileFieldAdded,
    ProfileFieldRemoved,
    ProfileUpdated,
    VirtualProfileRulesChanged,
)
from contacts_shared.rules import RuleGroup, find_rule_problems, referenced_fields
from contacts_shared.schema import FieldSpec, FieldType, ProfileSnapshot, ProfileType
from contacts_shared.values import FieldProblem, ValuesInvalid, name_key

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_FIELD_NAME_LENGTH = 100
MAX_FIELDS = 200
# Names that rules use for every contact's own attributes; a field may not shadow them.
RESERVED_FIELD_NAMES = frozenset({"status", "created_at", "updated_at"})
IDENTITY_FIELDS = {
    ProfileType.REGULAR: FieldSpec(
        name="email", key="email", type=FieldType.EMAIL, required=True, identity=True
    ),
    ProfileType.MOBILE_ONLY: FieldSpec(
        name="phone", key="phone", type=FieldType.PHONE, required=True, identity=True
    ),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProfileError(Exception):
    """Base of the profile rules' refusals."""


class ProfileInvalid(ProfileError, ValuesInvalid):
    """Input that breaks a rule; names each offending field."""


class ProfileConflict(ProfileError):
    """A change that clashes with the profile's state or with other profiles; `field`: the
    input it comes from, when one does (a taken name), for forms to show it there."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ProfileNotFound(ProfileError):
    def __init__(self, profile_id: str) -> None:
        self.profile_id = profile_id
        super().__init__(f"profile {profile_id} does not exist")


def invalid(field_name: str, message: str) -> ProfileInvalid:
    return ProfileInvalid([FieldProblem(field_name, message)])


def clean_text(value: str, *, what: str, max_length: int, allow_empty: bool = False) -> str:
    """Trimmed `value`, refused when empty, too long or holding control characters."""
    text = value.strip()
    if not text and not allow_empty:
        raise invalid(what, "must not be empty")
    if len(text) > max_length:
        raise invalid(what, f"must be at most {max_length} characters")
    if _CONTROL.search(text) and what != "description":
        raise invalid(what, "must not contain control characters")
    return text


def storage_key(name: str, taken: Iterable[str]) -> str:
    """A stable MongoDB-safe key for a field name: ASCII letters, digits and `_`, unique.

    `Fecha de Nacimiento` -> `fecha_de_nacimiento`; `Año.Nivel` -> `ano_nivel`; `$x` -> `x`.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_name).strip("_") or "field"
    if base[0].isdigit():
        base = f"f_{base}"
    used = set(taken)
    key, suffix = base, 2
    while key in used:
        key, suffix = f"{base}_{suffix}", suffix + 1
    return key


@dataclass
class Profile:
    id: str
    account_id: str
    name: str
    description: str
    type: ProfileType
    fields: list[FieldSpec]
    created_at: datetime
    updated_at: datetime
    version: int = 1
    base_profile_id: str | None = None
    rules: RuleGroup | None = None
    events: list[DomainEvent] = field(default_factory=list, compare=False)

    # -- creation ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        id: str,
        account_id: str,
        name: str,
        description: str,
        type: ProfileType,
        fields: Sequence[tuple[str, FieldType, bool]],
        now: datetime,
        base: Profile | None = None,
        rules: RuleGroup | None = None,
    ) -> Profile:
        """A new profile. Virtual ones need their regular `base` profile and `rules`."""
        profile = cls(
            id=id,
            account_id=account_id,
            name=clean_text(name, what="name", max_length=MAX_NAME_LENGTH),
            description=clean_text(
                description,
                what="description",
                max_length=MAX_DESCRIPTION_LENGTH,
                allow_empty=True,
            ),
            type=type,
            fields=[],
            created_at=now,
            updated_at=now,
        )
        if type is ProfileType.VIRTUAL:
            if fields:
                raise invalid("fields", "virtual profiles take their fields from the base profile")
            profile._set_base(base, rules)
        else:
            if base is not None or rules is not None:
                what = "base_profile_id" if base is not None else "rules"
                raise invalid(what, "only virtual profiles have a base profile and rules")
            identity = IDENTITY_FIELDS[type]
            profile.fields.append(identity)
            for index, (field_name, field_type, required) in enumerate(fields):
                if name_key(field_name.strip()) == identity.name and field_type is identity.type:
                    continue  # the identity field, given again: it is there already
                profile._append_field(field_name, field_type, required, where=f"fields[{index}]")
        profile.events.append(ProfileCreated(profile=profile.snapshot()))
        return profile

    def _set_base(self, base: Profile | None, rules: RuleGroup | None) -> None:
        if base is None:
            raise invalid("base_profile_id", "virtual profiles need a regular base profile")
        if base.type is not ProfileType.REGULAR:
            raise invalid("base_profile_id", f"profile {base.id} is {base.type}, not regular")
        if base.account_id != self.account_id:
            raise ProfileNotFound(base.id)
        if rules is None:
            raise invalid("rules", "virtual profiles need rules")
        self.base_profile_id = base.id
        self._set_rules(rules, base.fields)

    def _set_rules(self, rules: RuleGroup, base_fields: Sequence[FieldSpec]) -> None:
        problems = find_rule_problems(rules, base_fields)
        if problems:
            raise ProfileInvalid([FieldProblem(p.path, p.message) for p in problems])
        self.rules = rules

    def _append_field(
        self, field_name: str, field_type: FieldType, required: bool, *, where: str
    ) -> FieldSpec:
        name = clean_text(field_name, what=f"{where}.name", max_length=MAX_FIELD_NAME_LENGTH)
        key_of_name = name_key(name)
        if key_of_name in RESERVED_FIELD_NAMES:
            raise invalid(f"{where}.name", f"'{name}' is reserved for every contact's own data")
        clash = next((f for f in self.fields if name_key(f.name) == key_of_name), None)
        if clash is not None:
            raise ProfileConflict(
                f"profile already has a field named '{clash.name}'", field=f"{where}.name"
            )
        if len(self.fields) >= MAX_FIELDS:
            raise ProfileConflict(f"a profile has at most {MAX_FIELDS} fields")
        spec = FieldSpec(
            name=name,
            key=storage_key(name, (f.key for f in self.fields)),
            type=field_type,
            required=required,
        )
        self.fields.append(spec)
        return spec

    # -- changes -------------------------------------------------------------------------------

    def _changed(self, now: datetime) -> None:
        self.version += 1
        self.updated_at = now

    def update(
        self,
        *,
        now: datetime,
        name: str | None = None,
        description: str | None = None,
        rules: RuleGroup | None = None,
        base: Profile | None = None,
    ) -> None:
        """Change name, description and (virtual profiles) rules; `base` is needed for rules."""
        changed: list[str] = []
        if name is not None:
            new_name = clean_text(name, what="name", max_length=MAX_NAME_LENGTH)
            if new_name != self.name:
                self.name = new_name
                changed.append("name")
        if description is not None:
            new_description = clean_text(
                description,
                what="description",
                max_length=MAX_DESCRIPTION_LENGTH,
                allow_empty=True,
            )
            if new_description != self.description:
                self.description = new_description
                changed.append("description")
        rules_changed = False
        if rules is not None:
            if self.type is not ProfileType.VIRTUAL or base is None:
                raise invalid("rules", "only virtual profiles have rules")
            rules_changed = rules != self.rules
            self._set_rules(rules, base.fields)
        if not changed and not rules_changed:
            return
        self._changed(now)
        if changed:
            self.events.append(ProfileUpdated(profile=self.snapshot(), changed=tuple(changed)))
        if rules_changed:
            self.events.append(VirtualProfileRulesChanged(profile=self.snapshot()))

    def add_field(self, *, name: str, type: FieldType, required: bool, now: datetime) -> FieldSpec:
        if self.type is ProfileType.VIRTUAL:
            raise ProfileConflict("virtual profiles take their fields from the base profile")
        spec = self._append_field(name, type, required, where="field")
        self._changed(now)
        self.events.append(ProfileFieldAdded(profile=self.snapshot(), field=spec))
        return spec

    def find_field(self, name: str) -> FieldSpec | None:
        wanted = name_key(name.strip())
        return next((f for f in self.fields if name_key(f.name) == wanted), None)

    def remove_field(self, *, name: str, dependents: Sequence[Profile], now: datetime) -> None:
        """Delete a field; refused for the identity field and for fields that rules read."""
        spec = self.find_field(name)
        if spec is None:
            raise ProfileNotFound(f"{self.id}/fields/{name}")
        if spec.identity:
            raise ProfileConflict(f"'{spec.name}' identifies the contacts and cannot be deleted")
        readers = [
            p.name
            for p in dependents
            if p.rules is not None and name_key(spec.name) in referenced_fields(p.rules)
        ]
        if readers:
            raise ProfileConflict(
                f"field '{spec.name}' is used by the rules of virtual profiles: "
                + ", ".join(sorted(readers)[:10])
            )
        self.fields.remove(spec)
        self._changed(now)
        self.events.append(ProfileFieldRemoved(profile=self.snapshot(), field=spec))

    def delete(self, *, dependents: Sequence[Profile], now: datetime) -> None:
        """Delete the profile; a regular profile that virtual profiles are based on is kept."""
        if dependents:
            raise ProfileConflict(
                "virtual profiles are based on this profile; delete them first: "
                + ", ".join(sorted(p.name for p in dependents)[:10])
            )
        self._changed(now)
        self.events.append(ProfileDeleted(profile_id=self.id, type=self.type, version=self.version))

    def snapshot(self) -> ProfileSnapshot:
        return ProfileSnapshot(
            id=self.id,
            account_id=self.account_id,
            name=self.name,
            description=self.description,
            type=self.type,
            fields=tuple(self.fields),
            base_profile_id=self.base_profile_id,
            rules=self.rules.model_dump(exclude_none=True) if self.rules else None,
            version=self.version,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def take_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events


# -- listing order and cursors -------------------------------------------------------------------


class ProfileOrder(StrEnum):
    """The order of a profile list; a leading `-` reverses it."""

    NAME = "name"
    NAME_DESC = "-name"
    CREATED = "created_at"
    CREATED_DESC = "-created_at"
    UPDATED = "updated_at"
    UPDATED_DESC = "-updated_at"

    @property
    def attribute(self) -> str:
        """The profile attribute sorted on."""
        return self.value.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


@dataclass(frozen=True)
class PagePosition:
    """Where a page ended: the last profile's sort value and its id (which breaks ties)."""

    value: str | datetime
    id: str


def sort_value(order: ProfileOrder, profile: Profile) -> str | datetime:
    """What `order` compares of `profile`: names as their key (case and form folded), times."""
    if order.attribute == "name":
        return name_key(profile.name)
    return profile.created_at if order.attribute == "created_at" else profile.updated_at


def page_cursor(order: ProfileOrder, profile: Profile) -> str:
    """An opaque token for the page after `profile`."""
    value = sort_value(order, profile)
    text = value.isoformat() if isinstance(value, datetime) else value
    raw = json.dumps([order.value, text, profile.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(order: ProfileOrder, token: str) -> PagePosition:
    """The position a cursor token names; ProfileInvalid if it is not one of this order's."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        token_order, text, profile_id = json.loads(raw)
        if token_order != order.value or not isinstance(text, str):
            raise ValueError(token_order)
        value = text if order.attribute == "name" else datetime.fromisoformat(text)
        return PagePosition(value, str(profile_id))
    except (ValueError, TypeError) as exc:  # binascii and JSON errors are ValueErrors
        raise invalid("cursor", "not a cursor of this order (use next_cursor as given)") from exc
