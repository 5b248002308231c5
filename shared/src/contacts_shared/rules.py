"""Virtual-profile rules: the JSON tree of `all`/`any` groups and its validation (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contacts_shared.schema import ContactStatus, FieldSpec, FieldType

MAX_DEPTH = 6
MAX_CONDITIONS = 200

TEXT_OPS = frozenset(
    {
        "equals",
        "not_equals",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        "is_empty",
        "is_not_empty",
        "in",
        "not_in",
    }
)
NUMBER_OPS = frozenset(
    {"equals", "not_equals", "lt", "lte", "gt", "gte", "between", "is_empty", "is_not_empty"}
)
DATE_OPS = frozenset(
    {
        "before",
        "after",
        "on",
        "between",
        "within_last_days",
        "more_than_days_ago",
        "is_empty",
        "is_not_empty",
    }
)
BOOLEAN_OPS = frozenset({"is_true", "is_false", "is_empty", "is_not_empty"})
STATUS_OPS = frozenset({"is", "is_not"})
VALUELESS_OPS = frozenset({"is_empty", "is_not_empty", "is_true", "is_false"})

# Rule "kinds": the field types plus the contact's status.
STATUS_KIND = "status"
OPS_BY_KIND: dict[str, frozenset[str]] = {
    FieldType.TEXT: TEXT_OPS,
    FieldType.EMAIL: TEXT_OPS,
    FieldType.PHONE: TEXT_OPS,
    FieldType.NUMBER: NUMBER_OPS,
    FieldType.DATE: DATE_OPS,
    FieldType.BOOLEAN: BOOLEAN_OPS,
    STATUS_KIND: STATUS_OPS,
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
    op: str = Field(min_length=1)
    value: Any = None


class RuleGroup(BaseModel):
    """Exactly one of `all` (every child holds) or `any` (at least one holds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    all: list[Condition | RuleGroup] | None = Field(default=None, min_length=1)
    any: list[Condition | RuleGroup] | None = Field(default=None, min_length=1)

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


_VALUE_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    FieldType.NUMBER: (_is_number, "a number"),
    FieldType.DATE: (_is_date, "an ISO date (YYYY-MM-DD)"),
}


def _value_problem(kind: str, op: str, value: object) -> str | None:
    """Why `value` does not suit `op` on a field of `kind`, or None when it does."""
    if op in VALUELESS_OPS:
        return None if value is None else f"operator '{op}' takes no value"
    if kind == STATUS_KIND:
        allowed = {status.value for status in ContactStatus}
        return None if value in allowed else f"status must be one of {sorted(allowed)}"
    if op in {"in", "not_in"}:
        ok = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        return None if ok else f"operator '{op}' takes a non-empty list of texts"
    if op in {"within_last_days", "more_than_days_ago"}:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        return None if ok else f"operator '{op}' takes a positive whole number of days"
    check, what = _VALUE_CHECKS.get(kind, (_is_text, "a text"))
    if op == "between":
        if not (isinstance(value, list) and len(value) == 2 and all(map(check, value))):
            return f"operator 'between' takes [low, high], each {what}"
        low, high = value
        return None if low <= high else "between needs low <= high"
    return None if check(value) else f"operator '{op}' takes {what}"


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
                allowed = ", ".join(sorted(OPS_BY_KIND[kind]))
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
