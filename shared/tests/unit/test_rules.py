"""Rules validation against a base profile's fields."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contacts_shared.rules import (
    MAX_DEPTH,
    OPS_BY_KIND,
    RuleGroup,
    find_rule_problems,
    referenced_fields,
)
from contacts_shared.schema import FieldSpec, FieldType

FIELDS = [
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="City", key="city", type=FieldType.TEXT),
    FieldSpec(name="Age", key="age", type=FieldType.NUMBER),
    FieldSpec(name="Birthday", key="birthday", type=FieldType.DATE),
    FieldSpec(name="VIP", key="vip", type=FieldType.BOOLEAN),
]


def problems(rules: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (p.path, p.message) for p in find_rule_problems(RuleGroup.model_validate(rules), FIELDS)
    ]


def test_the_design_example_is_valid() -> None:
    rules = {
        "all": [
            {"field": "City", "op": "equals", "value": "Santiago"},
            {
                "any": [
                    {"field": "Age", "op": "gte", "value": 30},
                    {"field": "status", "op": "is", "value": "active"},
                ]
            },
        ]
    }
    assert problems(rules) == []
    assert referenced_fields(RuleGroup.model_validate(rules)) == {"city", "age", "status"}


@pytest.mark.parametrize(
    ("condition", "path", "fragment"),
    [
        ({"field": "Nope", "op": "equals", "value": "x"}, "rules.all[0].field", "unknown field"),
        ({"field": "Age", "op": "contains", "value": "3"}, "rules.all[0].op", "does not apply"),
        ({"field": "Age", "op": "gt", "value": "30"}, "rules.all[0].value", "a number"),
        ({"field": "Age", "op": "gt", "value": True}, "rules.all[0].value", "a number"),
        ({"field": "Age", "op": "between", "value": [40, 30]}, "rules.all[0].value", "low <="),
        ({"field": "Age", "op": "between", "value": [1]}, "rules.all[0].value", "[low, high]"),
        (
            {"field": "Birthday", "op": "before", "value": "31/12/2020"},
            "rules.all[0].value",
            "ISO date",
        ),
        (
            {"field": "Birthday", "op": "within_last_days", "value": 0},
            "rules.all[0].value",
            "positive",
        ),
        ({"field": "City", "op": "in", "value": []}, "rules.all[0].value", "non-empty list"),
        ({"field": "VIP", "op": "is_true", "value": 1}, "rules.all[0].value", "no value"),
        ({"field": "status", "op": "is", "value": "asleep"}, "rules.all[0].value", "one of"),
        ({"field": "status", "op": "equals", "value": "active"}, "rules.all[0].op", "is, is_not"),
    ],
)
def test_each_wrong_condition_is_named_by_its_path(
    condition: dict[str, Any], path: str, fragment: str
) -> None:
    found = problems({"all": [condition]})
    assert len(found) == 1
    assert found[0][0] == path
    assert fragment in found[0][1]


def test_field_names_match_ignoring_case() -> None:
    assert problems({"any": [{"field": "city", "op": "starts_with", "value": "San"}]}) == []


def test_too_deep_trees_are_refused() -> None:
    rules: dict[str, Any] = {"all": [{"field": "City", "op": "is_empty"}]}
    for _ in range(MAX_DEPTH):
        rules = {"any": [rules]}
    assert any("deeper" in message for _, message in problems(rules))


@pytest.mark.parametrize(
    "rules",
    [
        {},
        {"all": []},
        {"all": [{"field": "City", "op": "is_empty"}], "any": []},
        {"all": [{"field": "City"}]},
        {"all": [{"field": "City", "op": "is_empty", "x": 1}]},
    ],
)
def test_malformed_trees_are_refused_by_the_model(rules: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RuleGroup.model_validate(rules)


VALID_CONDITION = st.sampled_from(
    [
        {"field": "City", "op": "equals", "value": "Santiago"},
        {"field": "City", "op": "not_in", "value": ["A", "B"]},
        {"field": "Age", "op": "between", "value": [18, 65]},
        {"field": "Birthday", "op": "after", "value": "1990-01-01"},
        {"field": "Birthday", "op": "more_than_days_ago", "value": 30},
        {"field": "VIP", "op": "is_false"},
        {"field": "status", "op": "is_not", "value": "bounced"},
        {"field": "email", "op": "ends_with", "value": "@example.com"},
    ]
)
TREES = st.recursive(
    VALID_CONDITION,
    lambda children: st.builds(
        lambda combinator, items: {combinator: items},
        st.sampled_from(["all", "any"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


@given(TREES)
def test_trees_of_valid_conditions_have_no_problems(tree: dict[str, Any]) -> None:
    rules = tree if ("all" in tree or "any" in tree) else {"all": [tree]}
    depth_ok = [p for p in problems(rules) if "deeper" not in p[1]]
    assert depth_ok == []


def test_every_kind_has_operators() -> None:
    assert all(OPS_BY_KIND[kind] for kind in OPS_BY_KIND)
