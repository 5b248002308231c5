"""Contact values by field type: what a value may be and how it is stored, in one place for
every way contacts arrive (contact-svc's API, webhooks and commands; import-svc's rows, checked
before they are sent). Pure: no I/O."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from contacts_shared.schema import FieldSpec, FieldType

MAX_TEXT_LENGTH = 2000
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "si", "sí", "s", "t", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "f", "off"})
# Day, month and year in the order the user's locale writes them; `/`, `-` or `.` between.
_NUMERIC_DATE = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4}|\d{2})")
_YEAR_FIRST = re.compile(r"(\d{4})[/.](\d{1,2})[/.](\d{1,2})")
DATE_FORMS = "YYYY-MM-DD, dd/mm/yyyy, d/m/yy or dd-mm-yyyy"


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class ValuesInvalid(ValueError):
    """Values that break a profile's fields; names each offending field."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class DateOrder(StrEnum):
    """How `03/04/2025` reads: 3 April (Latin America, Europe) or March 4 (United States)."""

    DAY_FIRST = "day_first"
    MONTH_FIRST = "month_first"


# An export's columns after the profile's fields, which come first, named as an import expects.
EXPORT_TRAILING_COLUMNS = ("status", "created_at", "updated_at")


def csv_cell(value: object) -> str:
    """A stored value as an export's CSV cell, in a form an import reads back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@lru_cache(maxsize=4096)  # a few field names, asked for by every value of every row
def name_key(name: str) -> str:
    """What makes two names the same: case and Unicode form are ignored, accents kept."""
    return unicodedata.normalize("NFKC", name).casefold()


# An address whose part before the @ is plain ASCII (RFC 5322 dot-atom, as email_validator
# reads it) and whose domain is ASCII letters, digits, dots and hyphens: the common case.
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN_ADDRESS = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([a-zA-Z0-9.-]+)")
_MAX_EMAIL_LENGTH = 254


def normalize_email(raw: object) -> str:
    """Trimmed, syntax-checked (as `email_validator` checks it), lower-cased; no DNS lookups.

    A plain address is checked here but for its domain, whose verdict is remembered: domains
    repeat (a few mail providers serve most contacts), and the full check costs tens of
    microseconds an address. The rest, and any plain address that fails, take the full
    check, whose message says what is wrong."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be an email address")
    address = raw.strip()
    if plain := _PLAIN_ADDRESS.fullmatch(address):
        local, domain = plain.groups()
        if (checked_domain := _email_domain(domain)) is not None:
            normalized, longest = checked_domain
            if len(local) + 1 + longest <= _MAX_EMAIL_LENGTH:  # email_validator's length check
                return f"{local}@{normalized}".lower()
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return checked.normalized.lower()


@lru_cache(maxsize=65536)
def _email_domain(domain: str) -> tuple[str, int] | None:
    """The domain as email_validator normalizes it, and the UTF-8 length of its longest form
    (as given, normalized, IDNA); None where it refuses it. Its verdict on a domain does not
    depend on the part before the @, but for the length of the whole, checked apart."""
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    forms = (domain, checked.domain, checked.ascii_domain)
    return checked.domain, max(len(form.encode()) for form in forms)


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


def _full_year(year: str) -> int:
    """Two-digit years as POSIX reads them: 69-99 are 1969-1999, 00-68 are 2000-2068."""
    value = int(year)
    if len(year) == 4:
        return value
    return value + (1900 if value >= 69 else 2000)


def _date(raw: object, order: DateOrder) -> str:
    """ISO `YYYY-MM-DD` from ISO dates or datetimes, `yyyy/mm/dd`, or day, month and year
    (in `order`) with a two- or four-digit year."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be a date ({DATE_FORMS})")
    text = raw.strip()
    try:
        if match := _NUMERIC_DATE.fullmatch(text):
            first, second, year = match.groups()
            day, month = (first, second) if order is DateOrder.DAY_FIRST else (second, first)
            return date(_full_year(year), int(month), int(day)).isoformat()
        if match := _YEAR_FIRST.fullmatch(text):
            year, month, day = (int(part) for part in match.groups())
            return date(year, month, day).isoformat()
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError as exc:
        raise ValueError(f"'{raw}' is not a date ({DATE_FORMS})") from exc


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


def convert(
    spec: FieldSpec,
    raw: object,
    default_region: str,
    date_order: DateOrder = DateOrder.DAY_FIRST,
) -> Any:
    """`raw` as the value stored for a field of `spec`'s type; ValueError says why not."""
    if spec.type is FieldType.EMAIL:
        return normalize_email(raw)
    if spec.type is FieldType.PHONE:
        return normalize_phone(raw, default_region)
    if spec.type is FieldType.NUMBER:
        return _number(raw)
    if spec.type is FieldType.DATE:
        return _date(raw, date_order)
    if spec.type is FieldType.BOOLEAN:
        return _boolean(raw)
    return _text(raw)


def fields_by_name(fields: Sequence[FieldSpec]) -> dict[str, FieldSpec]:
    """The fields under their names' `name_key` (of two alike, the first): what `field_named`
    looks in, built once for a profile."""
    return {name_key(spec.name): spec for spec in reversed(fields)}


def field_named(by_name: Mapping[str, FieldSpec], name: str) -> FieldSpec | None:
    """The field called `name` (see `name_key`), surrounding spaces ignored."""
    return by_name.get(name_key(name.strip()))


def identity_key(identity: FieldSpec, raw: object, default_region: str) -> str:
    """The contact key: normalized email or E.164 phone."""
    try:
        return str(convert(identity, raw, default_region))
    except ValueError as exc:
        raise ValuesInvalid([FieldProblem(identity.name, str(exc))]) from exc


def typed_values(
    fields: Sequence[FieldSpec],
    given: Mapping[str, object],
    *,
    default_region: str,
    partial: bool,
    date_order: DateOrder = DateOrder.DAY_FIRST,
) -> dict[str, Any]:
    """Values by field key from values by field name (the identity apart); every problem
    named at once. `None` (or an empty string) clears an optional field. Unless `partial`,
    required fields must be present."""
    problems: list[FieldProblem] = []
    pairs: list[tuple[FieldSpec, object]] = []
    by_name = fields_by_name(fields)
    for name, raw in given.items():
        spec = field_named(by_name, name)
        if spec is None:
            problems.append(FieldProblem(name, "no such field in this profile"))
        else:
            pairs.append((spec, raw))
    converted = _convert_each(pairs, problems, default_region, date_order)
    if not partial:
        problems += [
            FieldProblem(spec.name, "is required")
            for spec in fields
            if spec.required
            and not spec.identity
            and spec.key not in converted
            and not any(p.field == spec.name for p in problems)
        ]
    if problems:
        raise ValuesInvalid(problems)
    return converted


def values_of(
    pairs: Iterable[tuple[FieldSpec, object]],
    *,
    default_region: str,
    date_order: DateOrder = DateOrder.DAY_FIRST,
) -> dict[str, Any]:
    """`typed_values` (partial) for values already matched to their fields, as an import's
    columns are once, not once a row."""
    problems: list[FieldProblem] = []
    converted = _convert_each(pairs, problems, default_region, date_order)
    if problems:
        raise ValuesInvalid(problems)
    return converted


def _convert_each(
    pairs: Iterable[tuple[FieldSpec, object]],
    problems: list[FieldProblem],
    default_region: str,
    date_order: DateOrder,
) -> dict[str, Any]:
    """Values by field key; each problem added to `problems`."""
    converted: dict[str, Any] = {}
    for spec, raw in pairs:
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
            converted[spec.key] = convert(spec, raw, default_region, date_order)
        except ValueError as exc:
            problems.append(FieldProblem(spec.name, str(exc)))
    return converted
