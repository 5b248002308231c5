"""Contacts: identity, typed field values, statuses and their events. Pure: no I/O."""

from __future__ import annotations

import base64
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactStatusChanged,
    ContactUpdated,
    DomainEvent,
)
from contacts_shared.schema import (
    ContactSnapshot,
    ContactStatus,
    FieldSpec,
    FieldType,
    ProfileSnapshot,
    ProfileType,
)

MAX_TEXT_LENGTH = 2000
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "si", "sí", "s", "t", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "f", "off"})
_DAY_FIRST = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")


class ContactError(Exception):
    """Base of the contact rules' refusals."""


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class ContactInvalid(ContactError):
    """Values that break the profile's schema; names each offending field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class ContactExists(ContactError):
    def __init__(self, key: str) -> None:
        super().__init__(f"contact {key} already exists in this profile")


class ContactNotFound(ContactError):
    def __init__(self, key: str) -> None:
        super().__init__(f"contact {key} does not exist in this profile")


class ProfileUnknown(ContactError):
    """The profile is not (yet) in contact-svc's projection of profile events."""

    def __init__(self, profile_id: str) -> None:
        super().__init__(
            f"profile {profile_id} is not known to contact-svc (unknown, deleted, or created "
            "an instant ago and not yet received: retry shortly)"
        )


class ProfileNotWritable(ContactError):
    """Virtual profiles hold no contacts of their own."""


def _name_key(name: str) -> str:
    return unicodedata.normalize("NFKC", name.strip()).casefold()


# -- values by type ------------------------------------------------------------------------------


def normalize_email(raw: object) -> str:
    """Trimmed, syntax-checked, lower-cased; no DNS lookups."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be an email address")
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return checked.normalized.lower()


def normalize_phone(raw: object, default_region: str) -> str:
    """E.164 (`+56912345678`); numbers without a country code take `default_region`'s."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a phone number")
    try:
        number = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"is not a phone number ({exc})") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _number(raw: object) -> int | float:
    if isinstance(raw, bool):
        raise ValueError("must be a number")
    value: int | float
    if isinstance(raw, int | float):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip().replace(",", ".") if raw.count(",") == 1 and "." not in raw else raw
        try:
            value = int(text) if re.fullmatch(r"\s*[-+]?\d+\s*", text) else float(text)
        except ValueError as exc:
            raise ValueError(f"'{raw}' is not a number") from exc
    else:
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _date(raw: object) -> str:
    """ISO `YYYY-MM-DD` from ISO dates or datetimes, or the common `dd/mm/yyyy`."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a date (YYYY-MM-DD or dd/mm/yyyy)")
    text = raw.strip()
    try:
        if match := _DAY_FIRST.fullmatch(text):
            day, month, year = (int(part) for part in match.groups())
            return date(year, month, day).isoformat()
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError as exc:
        raise ValueError(f"'{raw}' is not a date (YYYY-MM-DD or dd/mm/yyyy)") from exc


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().casefold()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"'{raw}' is not a yes/no value")


def _text(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError("must be text")
    text = str(raw).strip()
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"must be at most {MAX_TEXT_LENGTH} characters")
    return text


def convert(spec: FieldSpec, raw: object, default_region: str) -> Any:
    """`raw` as the value stored for a field of `spec`'s type; ValueError says why not."""
    if spec.type is FieldType.EMAIL:
        return normalize_email(raw)
    if spec.type is FieldType.PHONE:
        return normalize_phone(raw, default_region)
    if spec.type is FieldType.NUMBER:
        return _number(raw)
    if spec.type is FieldType.DATE:
        return _date(raw)
    if spec.type is FieldType.BOOLEAN:
        return _boolean(raw)
    return _text(raw)


# -- the profile as contact-svc sees it ----------------------------------------------------------


@dataclass(frozen=True)
class ProfileSchema:
    """A profile's fields, projected from profile events."""

    profile_id: str
    account_id: str
    type: ProfileType
    fields: tuple[FieldSpec, ...]
    version: int
    # No contact of the profile is older: where pages in creation order start looking.
    created_at: datetime | None = None

    @classmethod
    def of(cls, snapshot: ProfileSnapshot) -> ProfileSchema:
        return cls(
            profile_id=snapshot.id,
            account_id=snapshot.account_id,
            type=snapshot.type,
            fields=snapshot.fields,
            version=snapshot.version,
            created_at=snapshot.created_at,
        )

    @property
    def identity(self) -> FieldSpec:
        if self.type is ProfileType.VIRTUAL:
            raise ProfileNotWritable("virtual profiles hold no contacts of their own")
        return next(spec for spec in self.fields if spec.identity)

    def field_named(self, name: str) -> FieldSpec | None:
        wanted = _name_key(name)
        return next((spec for spec in self.fields if _name_key(spec.name) == wanted), None)

    def identity_key(self, raw: object, default_region: str) -> str:
        """The contact key: normalized email or E.164 phone."""
        try:
            return str(convert(self.identity, raw, default_region))
        except ValueError as exc:
            raise ContactInvalid([FieldProblem(self.identity.name, str(exc))]) from exc

    def values(
        self, given: Mapping[str, object], *, default_region: str, partial: bool
    ) -> dict[str, Any]:
        """Values by field key from values by field name (the identity apart); every problem
        named at once. `None` (or an empty string) clears an optional field. Unless `partial`,
        required fields must be present."""
        problems: list[FieldProblem] = []
        converted: dict[str, Any] = {}
        for name, raw in given.items():
            spec = self.field_named(name)
            if spec is None:
                problems.append(FieldProblem(name, "no such field in this profile"))
                continue
            if spec.identity:
                problems.append(FieldProblem(spec.name, "identifies the contact and cannot change"))
                continue
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if spec.required:
                    problems.append(FieldProblem(spec.name, "is required"))
                else:
                    converted[spec.key] = None
                continue
            try:
                converted[spec.key] = convert(spec, raw, default_region)
            except ValueError as exc:
                problems.append(FieldProblem(spec.name, str(exc)))
        if not partial:
            problems += [
                FieldProblem(spec.name, "is required")
                for spec in self.fields
                if spec.required
                and not spec.identity
                and spec.key not in converted
                and not any(p.field == spec.name for p in problems)
            ]
        if problems:
            raise ContactInvalid(problems)
        return converted


# Statuses that follow an email or phone into every profile of the account.
SUPPRESSING = frozenset(
    {ContactStatus.UNSUBSCRIBED, ContactStatus.BOUNCED, ContactStatus.COMPLAINED}
)


@dataclass(frozen=True)
class Suppression:
    """An email or phone unsubscribed, bounced or complained somewhere in the account: added
    to any other profile, it arrives with that status, not active. Only a manual re-activation
    through the API lifts it."""

    account_id: str
    key: str
    status: ContactStatus
    profile_id: str
    at: datetime

    def reason(self) -> str:
        return f"{self.status.value} in profile {self.profile_id} (account-wide suppression)"


def contact_id(profile_id: str, key: str) -> str:
    return f"{profile_id}:{key}"


# -- contacts ------------------------------------------------------------------------------------


@dataclass
class Contact:
    account_id: str
    profile_id: str
    key: str
    fields: dict[str, Any]
    status: ContactStatus
    status_source: str
    status_changed_at: datetime
    source: str
    created_at: datetime
    updated_at: datetime
    status_reason: str | None = None
    version: int = 1
    deleted: bool = False
    events: list[DomainEvent] = field(default_factory=list, compare=False)

    @property
    def id(self) -> str:
        return contact_id(self.profile_id, self.key)

    @classmethod
    def create(
        cls,
        *,
        schema: ProfileSchema,
        key: str,
        values: dict[str, Any],
        source: str,
        now: datetime,
        status: ContactStatus = ContactStatus.ACTIVE,
        status_reason: str | None = None,
        status_source: str | None = None,
        version: int = 1,
    ) -> Contact:
        """A new contact; `values` are by field key, already converted. A contact added again
        after a deletion continues its version sequence (`version` = the deleted one's + 1)."""
        fields = {k: v for k, v in values.items() if v is not None}
        fields[schema.identity.key] = key
        contact = cls(
            account_id=schema.account_id,
            profile_id=schema.profile_id,
            key=key,
            fields=fields,
            status=status,
            status_reason=status_reason,
            status_source=status_source or source,
            status_changed_at=now,
            source=source,
            created_at=now,
            updated_at=now,
            version=version,
        )
        contact.events.append(ContactCreated(contact=contact.snapshot()))
        return contact

    def _bump(self, now: datetime, source: str) -> None:
        self.version += 1
        self.updated_at = now
        self.source = source

    def set_values(
        self,
        values: dict[str, Any],
        *,
        schema: ProfileSchema,
        replace_all: bool,
        source: str,
        now: datetime,
    ) -> tuple[str, ...]:
        """Change field values (all of them when `replace_all`); the keys that changed."""
        identity = schema.identity.key
        new = dict(values) if replace_all else {**self.fields, **values}
        new[identity] = self.key
        new = {k: v for k, v in new.items() if v is not None}
        changed = tuple(
            sorted(k for k in new.keys() | self.fields.keys() if new.get(k) != self.fields.get(k))
        )
        if changed:
            self.fields = new
            self._bump(now, source)
            self.events.append(ContactUpdated(contact=self.snapshot(), changed=changed))
        return changed

    def change_status(
        self, status: ContactStatus, *, reason: str | None, source: str, now: datetime
    ) -> bool:
        """Set the status; False when it already was that."""
        if status is self.status:
            return False
        previous = self.status
        self.status, self.status_reason = status, reason
        self.status_source, self.status_changed_at = source, now
        self._bump(now, source)
        self.events.append(ContactStatusChanged(contact=self.snapshot(), previous_status=previous))
        return True

    def delete(self, *, source: str, now: datetime) -> None:
        self.deleted = True
        self._bump(now, source)
        self.events.append(
            ContactDeleted(
                contact_id=self.id,
                account_id=self.account_id,
                profile_id=self.profile_id,
                key=self.key,
                version=self.version,
                status=self.status,
                created_at=self.created_at,
            )
        )

    def snapshot(self) -> ContactSnapshot:
        return ContactSnapshot(
            id=self.id,
            account_id=self.account_id,
            profile_id=self.profile_id,
            key=self.key,
            fields=dict(self.fields),
            status=self.status,
            status_reason=self.status_reason,
            status_source=self.status_source,
            status_changed_at=self.status_changed_at,
            source=self.source,
            version=self.version,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def take_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events


# -- listing order and cursors -------------------------------------------------------------------


class ContactOrder(StrEnum):
    KEY = "key"
    OLDEST = "created_at"
    NEWEST = "-created_at"


@dataclass(frozen=True)
class PagePosition:
    """Where a page ended: the last contact's creation time (time orders) and key."""

    key: str
    created_at: datetime | None = None


def page_cursor(order: ContactOrder, contact: Contact) -> str:
    """An opaque token for the page after `contact`."""
    created = contact.created_at.isoformat() if order is not ContactOrder.KEY else None
    raw = json.dumps([order.value, created, contact.key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(order: ContactOrder, token: str) -> PagePosition:
    """The position a cursor token names; ContactInvalid if it is not one of this order's."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        token_order, created, key = json.loads(raw)
        if token_order != order.value or not isinstance(key, str):
            raise ValueError(token_order)
        return PagePosition(key, datetime.fromisoformat(created) if created else None)
    except (ValueError, TypeError) as exc:
        raise ContactInvalid(
            [FieldProblem("cursor", "not a cursor of this listing (use next_cursor as given)")]
        ) from exc
