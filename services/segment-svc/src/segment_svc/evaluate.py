"""The one evaluator of virtual-profile rules: does a contact belong to a segment (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

from contacts_shared.rules import BUILTIN_RULE_FIELDS, Condition, RuleGroup, conditions
from contacts_shared.schema import ContactStatus, FieldSpec
from contacts_shared.values import name_key

RELATIVE_DATE_OPS = frozenset({"within_last_days", "more_than_days_ago"})


@dataclass(frozen=True)
class ContactView:
    """What rules read of a contact: its values by field key, status and times."""

    fields: Mapping[str, Any]
    status: ContactStatus
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Segment:
    """A virtual profile as rules see it: its rules over the base profile's current fields."""

    id: str
    account_id: str
    base_profile_id: str
    rules: RuleGroup
    # The virtual profile's version when its rules last changed: a membership change is told
    # once per contact version and rules version.
    rules_version: int
    base_fields: tuple[FieldSpec, ...]

    def missing_fields(self) -> list[str]:
        """Fields the rules name that the base profile no longer has (each such condition
        holds for no contact, and the segment reports it)."""
        known = {name_key(spec.name) for spec in self.base_fields} | set(BUILTIN_RULE_FIELDS)
        return sorted({c.field for c in conditions(self.rules) if name_key(c.field) not in known})

    @cached_property
    def _keys(self) -> dict[str, str]:
        return field_keys(self.base_fields)

    def admits(self, contact: ContactView, today: date) -> bool:
        return _matches(self.rules, self._keys, contact, today)


def reads_relative_dates(rules: RuleGroup) -> bool:
    """Whether membership can change with the date alone (re-evaluated each UTC day)."""
    return any(c.op in RELATIVE_DATE_OPS for c in conditions(rules))


def field_keys(base_fields: Iterable[FieldSpec]) -> dict[str, str]:
    """Stored keys of the fields, by the name rules give them (case and accents folded)."""
    return {name_key(spec.name): spec.key for spec in base_fields}


def matches(
    rules: RuleGroup, base_fields: Iterable[FieldSpec], contact: ContactView, today: date
) -> bool:
    """Whether `contact` satisfies `rules`; `today` (UTC) anchors relative-date conditions."""
    return _matches(rules, field_keys(base_fields), contact, today)


def _matches(rules: RuleGroup, keys: Mapping[str, str], contact: ContactView, today: date) -> bool:
    def holds(node: Condition | RuleGroup) -> bool:
        if isinstance(node, RuleGroup):
            results = (holds(child) for child in node.children)
            return all(results) if node.all is not None else any(results)
        return _condition_holds(node, keys, contact, today)

    return holds(rules)


def _value_of(condition: Condition, keys: Mapping[str, str], contact: ContactView) -> Any:
    name = name_key(condition.field)
    if name == "status":
        return contact.status.value
    if name in ("created_at", "updated_at"):
        moment: datetime = getattr(contact, name)
        return moment.date().isoformat()
    return contact.fields.get(keys[name])


def _condition_holds(
    condition: Condition, keys: Mapping[str, str], contact: ContactView, today: date
) -> bool:
    name = name_key(condition.field)
    if name not in keys and name not in BUILTIN_RULE_FIELDS:
        # A field gone from the base profile: the condition holds for nobody, whatever its
        # operator, so a negative one (not_equals, ...) does not silently admit everyone.
        return False
    value = _value_of(condition, keys, contact)
    empty = value is None or value == ""
    if condition.op == "is_empty":
        return empty
    if condition.op == "is_not_empty":
        return not empty
    if condition.op == "is_true":
        return value is True
    if condition.op == "is_false":
        return value is False
    if condition.op == "is":
        return bool(value == condition.value)
    if condition.op == "is_not":
        return bool(value != condition.value)
    negated = _NEGATIONS.get(condition.op)
    if negated is not None:
        return not _positive_holds(negated, value, condition.value, today)
    return not empty and _positive_holds(condition.op, value, condition.value, today)


# Negative operators hold exactly where their positive holds not, empty values included.
_NEGATIONS = {"not_equals": "equals", "not_contains": "contains", "not_in": "in"}


def _fold(value: Any) -> Any:
    """Texts compare without regard to case, as users type them."""
    return value.casefold() if isinstance(value, str) else value


def _days_before(today: date, days: object) -> str:
    assert isinstance(days, int)
    return (today - timedelta(days=days)).isoformat()


_COMPARISONS: dict[str, Callable[[Any, Any, date], bool]] = {
    "equals": lambda v, want, _: _fold(v) == _fold(want),
    "contains": lambda v, want, _: isinstance(v, str) and _fold(want) in _fold(v),
    "starts_with": lambda v, want, _: isinstance(v, str) and _fold(v).startswith(_fold(want)),
    "ends_with": lambda v, want, _: isinstance(v, str) and _fold(v).endswith(_fold(want)),
    "in": lambda v, want, _: _fold(v) in {_fold(item) for item in want},
    "lt": lambda v, want, _: v < want,
    "lte": lambda v, want, _: v <= want,
    "gt": lambda v, want, _: v > want,
    "gte": lambda v, want, _: v >= want,
    "between": lambda v, want, _: want[0] <= v <= want[1],
    "before": lambda v, want, _: v < _day(want),
    "after": lambda v, want, _: v > _day(want),
    "on": lambda v, want, _: v == _day(want),
    "within_last_days": lambda v, want, today: _days_before(today, want) <= v <= today.isoformat(),
    "more_than_days_ago": lambda v, want, today: v < _days_before(today, want),
}


def _day(value: Any) -> str:
    """A rule's date (ISO date or datetime) as the ISO day stored values are compared with."""
    text = str(value)
    return text if len(text) == 10 else datetime.fromisoformat(text).date().isoformat()


def _positive_holds(op: str, value: Any, wanted: Any, today: date) -> bool:
    if value is None or value == "":
        return False
    if op == "between" and isinstance(value, str):
        wanted = [_day(wanted[0]), _day(wanted[1])]
    try:
        return _COMPARISONS[op](value, wanted, today)
    except (TypeError, ValueError):
        # A stored value of another type than the rule's (a field whose type changed).
        return False
