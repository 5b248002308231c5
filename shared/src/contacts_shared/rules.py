"""Virtual-profile rules: the JSON tree of `all`/`any` groups and its validation (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from contacts_shared.schema import ContactStatus, FieldSpec, FieldType

MAX_DEPTH = 6
MAX_CONDITIONS = 200


class ValueShape(StrEnum):
    """What a condition's `value` holds for an operator."""

    NONE = "none"  # no value at all
    ONE = "one"  # one value of the field's type
    TWO = "two"  # [low, high], each of the field's type
    LIST = "list"  # a non-empty list of values of the field's type
    DAYS = "days"  # a positive whole number of days


class RuleOperator(StrEnum):
    """An operator of a rule condition, with its English label and the shape of its value."""

    label: str
    shape: ValueShape

    def __new__(cls, name: str, label: str, shape: ValueShape) -> RuleOperator:
        operator = str.__new__(cls, name)
        operator._value_ = name
        operator.label = label
        operator.shape = shape
        return operator

    EQUALS = "equals", "equals", ValueShape.ONE
    NOT_EQUALS = "not_equals", "does not equal", ValueShape.ONE
    CONTAINS = "contains", "contains", ValueShape.ONE
    NOT_CONTAINS = "not_contains", "does not contain", ValueShape.ONE
    STARTS_WITH = "starts_with", "starts with", ValueShape.ONE
    ENDS_WITH = "ends_with", "ends with", ValueShape.ONE
    IN = "in", "is one of", ValueShape.LIST
    NOT_IN = "not_in", "is none of", ValueShape.LIST
    LT = "lt", "is less than", ValueShape.ONE
    LTE = "lte", "is at most", ValueShape.ONE
    GT = "gt", "is greater than", ValueShape.ONE
    GTE = "gte", "is at least", ValueShape.ONE
    BETWEEN = "between", "is between", ValueShape.TWO
    ON = "on", "is on", ValueShape.ONE
    BEFORE = "before", "is before", ValueShape.ONE
    AFTER = "after", "is after", ValueShape.ONE
    WITHIN_LAST_DAYS = "within_last_days", "is in the last N days", ValueShape.DAYS
    MORE_THAN_DAYS_AGO = "more_than_days_ago", "is more than N days ago", ValueShape.DAYS
    IS_TRUE = "is_true", "is true", ValueShape.NONE
    IS_FALSE = "is_false", "is false", ValueShape.NONE
    IS = "is", "is", ValueShape.ONE
    IS_NOT = "is_not", "is not", ValueShape.ONE
    IS_EMPTY = "is_empty", "is empty", ValueShape.NONE
    IS_NOT_EMPTY = "is_not_empty", "is not empty", ValueShape.NONE


_TEXT_OPS = (
    RuleOperator.EQUALS,
    RuleOperator.NOT_EQUALS,
    RuleOperator.CONTAINS,
    RuleOperator.NOT_CONTAINS,
    RuleOperator.STARTS_WITH,
    RuleOperator.ENDS_WITH,
    RuleOperator.IN,
    RuleOperator.NOT_IN,
    RuleOperator.IS_EMPTY,
    RuleOperator.IS_NOT_EMPTY,
)
# Rule "kinds": the field types plus the contact's status. Each kind's operators in the order a
# rule builder offers them.
STATUS_KIND = "status"
OPS_BY_KIND: dict[str, tuple[RuleOperator, ...]] = {
    FieldType.TEXT: _TEXT_OPS,
    FieldType.EMAIL: _TEXT_OPS,
    FieldType.PHONE: _TEXT_OPS,
    FieldType.NUMBER: (
        RuleOperator.EQUALS,
        RuleOperator.NOT_EQUALS,
        RuleOperator.LT,
        RuleOperator.LTE,
        RuleOperator.GT,
        RuleOperator.GTE,
        RuleOperator.BETWEEN,
        RuleOperator.IS_EMPTY,
        RuleOperator.IS_NOT_EMPTY,
    ),
    FieldType.DATE: (
        RuleOperator.ON,
        RuleOperator.BEFORE,
        RuleOperator.AFTER,
        RuleOperator.BETWEEN,
        RuleOperator.WITHIN_LAST_DAYS,
        RuleOperator.MORE_THAN_DAYS_AGO,
        RuleOperator.IS_EMPTY,
        RuleOperator.IS_NOT_EMPTY,
    ),
    FieldType.BOOLEAN: (
        RuleOperator.IS_TRUE,
        RuleOperator.IS_FALSE,
        RuleOperator.IS_EMPTY,
        RuleOperator.IS_NOT_EMPTY,
    ),
    STATUS_KIND: (RuleOperator.IS, RuleOperator.IS_NOT),
}
# Every contact has these besides the profile's own fields.
BUILTIN_RULE_FIELDS: dict[str, str] = {
    "status": STATUS_KIND,
    "created_at": FieldType.DATE,
    "updated_at": FieldType.DATE,
}


class Condition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(min_length=1)
    op: RuleOperator
    value: Any = Field(default=None, description="as the operator's value shape says")


def _node_kind(node: object) -> str:
    """A group has `all` or `any`, anything else is meant as a condition: a bad node is checked
    (and its errors named) as the one kind it is meant to be, not as both."""
    is_group = isinstance(node, RuleGroup) or (
        isinstance(node, dict) and ("all" in node or "any" in node)
    )
    return "group" if is_group else "condition"


RuleNode = Annotated[
    Annotated[Condition, Tag("condition")] | Annotated["RuleGroup", Tag("group")],
    Discriminator(_node_kind),
]


class RuleGroup(BaseModel):
    """Exactly one of `all` (every child holds) or `any` (at least one holds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    all: list[RuleNode] | None = Field(default=None, min_length=1)
    any: list[RuleNode] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def one_combinator(self) -> RuleGroup:
        if (self.all is None) == (self.any is None):
            raise ValueError("a rule group has exactly one of 'all' or 'any'")
        return self

    @property
    def children(self) -> list[Condition | RuleGroup]:
        return self.all if self.all is not None else self.any or []


@dataclass(frozen=True)
class RuleProblem:
    """Where in the tree (`rules.all[1].value`) and what is wrong."""

    path: str
    message: str


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return False
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            parse(value)
        except ValueError:
            continue
        return True
    return False


def _is_text(value: object) -> bool:
    return isinstance(value, str)


_STATUSES = frozenset(status.value for status in ContactStatus)


def _is_status(value: object) -> bool:
    return isinstance(value, str) and value in _STATUSES


# What one value of each kind is; kinds not listed (text, email, phone) take a text.
_VALUE_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    FieldType.NUMBER: (_is_number, "a number"),
    FieldType.DATE: (_is_date, "an ISO date (YYYY-MM-DD)"),
    STATUS_KIND: (_is_status, f"one of {sorted(_STATUSES)}"),
}


def _value_problem(kind: str, op: RuleOperator, value: object) -> str | None:
    """Why `value` does not have the shape `op` declares on a field of `kind`, or None."""
    check, what = _VALUE_CHECKS.get(kind, (_is_text, "a text"))
    match op.shape:
        case ValueShape.NONE:
            return None if value is None else f"operator '{op}' takes no value"
        case ValueShape.ONE:
            return None if check(value) else f"operator '{op}' takes {what}"
        case ValueShape.TWO:
            if not (isinstance(value, list) and len(value) == 2 and all(map(check, value))):
                return f"operator '{op}' takes [low, high], each {what}"
            low, high = value
            return None if low <= high else f"operator '{op}' needs low <= high"
        case ValueShape.LIST:
            ok = isinstance(value, list) and value and all(map(check, value))
            return None if ok else f"operator '{op}' takes a non-empty list, each {what}"
        case ValueShape.DAYS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            return None if ok else f"operator '{op}' takes a positive whole number of days"


def rule_kinds(fields: Iterable[FieldSpec]) -> dict[str, str]:
    """Field names (case-folded) that rules may name, mapped to their kind."""
    kinds = dict(BUILTIN_RULE_FIELDS)
    kinds.update({spec.name.casefold(): spec.type for spec in fields})
    return kinds


def find_rule_problems(rules: RuleGroup, fields: Iterable[FieldSpec]) -> list[RuleProblem]:
    """Every problem of `rules` against a base profile's fields: unknown fields, wrong operators
    for the field's type, values that do not suit the operator, too deep or too large trees."""
    kinds = rule_kinds(fields)
    problems: list[RuleProblem] = []
    count = 0

    def visit(group: RuleGroup, path: str, depth: int) -> None:
        nonlocal count
        if depth > MAX_DEPTH:
            problems.append(RuleProblem(path, f"rules nest deeper than {MAX_DEPTH} groups"))
            return
        combinator = "all" if group.all is not None else "any"
        for index, child in enumerate(group.children):
            child_path = f"{path}.{combinator}[{index}]"
            if isinstance(child, RuleGroup):
                visit(child, child_path, depth + 1)
                continue
            count += 1
            kind = kinds.get(child.field.casefold())
            if kind is None:
                problems.append(
                    RuleProblem(f"{child_path}.field", f"unknown field '{child.field}'")
                )
                continue
            if child.op not in OPS_BY_KIND[kind]:
                allowed = ", ".join(OPS_BY_KIND[kind])
                problems.append(
                    RuleProblem(
                        f"{child_path}.op",
                        f"operator '{child.op}' does not apply to {kind} field "
                        f"'{child.field}' (use one of: {allowed})",
                    )
                )
                continue
            if (message := _value_problem(kind, child.op, child.value)) is not None:
                problems.append(RuleProblem(f"{child_path}.value", message))

    visit(rules, "rules", 1)
    if count > MAX_CONDITIONS:
        problems.append(RuleProblem("rules", f"more than {MAX_CONDITIONS} conditions"))
    return problems


def conditions(rules: RuleGroup) -> Iterator[Condition]:
    """Every condition of the tree, at any depth."""
    stack: list[Condition | RuleGroup] = [rules]
    while stack:
        node = stack.pop()
        if isinstance(node, RuleGroup):
            stack.extend(node.children)
        else:
            yield node


def referenced_fields(rules: RuleGroup) -> set[str]:
    """Case-folded names of every field the rules read."""
    return {condition.field.casefold() for condition in conditions(rules)}
