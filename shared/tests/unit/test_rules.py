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
    STATUS_KIND,
    RuleGroup,
    RuleOperator,
    ValueShape,
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
    FieldSpec(name="Mobile", key="mobile", type=FieldType.PHONE),
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
        {"all": [{"field": "City", "op": "like", "value": "San%"}]},
    ],
)
def test_malformed_trees_are_refused_by_the_model(rules: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RuleGroup.model_validate(rules)


def test_a_bad_node_is_reported_once_as_the_kind_it_means_to_be() -> None:
    for rules, loc in [
        ({"all": [{"field": "City", "op": "like", "value": "x"}]}, ("all", 0, "condition", "op")),
        (
            {"any": [{"all": [{"field": "City", "op": "is_empty"}], "x": 1}]},
            ("any", 0, "group", "x"),
        ),
    ]:
        with pytest.raises(ValidationError) as caught:
            RuleGroup.model_validate(rules)
        assert [error["loc"] for error in caught.value.errors()] == [loc]


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


def test_the_table_covers_every_field_type_and_operator() -> None:
    assert set(OPS_BY_KIND) == set(FieldType) | {STATUS_KIND}
    assert {op for ops in OPS_BY_KIND.values() for op in ops} == set(RuleOperator)
    assert all(len(set(ops)) == len(ops) for ops in OPS_BY_KIND.values())
    assert all(op.label and op.shape in ValueShape for op in RuleOperator)


FIELD_OF_KIND = {spec.type: spec.name for spec in FIELDS} | {STATUS_KIND: "status"}
ONE_VALUE: dict[str, object] = {
    FieldType.NUMBER: 7,
    FieldType.DATE: "2024-05-01",
    STATUS_KIND: "active",
}


def shaped(shape: ValueShape, one: object) -> object:
    """A value of `shape` made of `one`."""
    return {
        ValueShape.NONE: None,
        ValueShape.ONE: one,
        ValueShape.TWO: [one, one],
        ValueShape.LIST: [one],
        ValueShape.DAYS: 7,
    }[shape]


# For each shape, values of other shapes it must refuse (None aside, refused by all but NONE).
MISSHAPEN: dict[ValueShape, list[Any]] = {
    ValueShape.NONE: [["x"], 7],
    ValueShape.ONE: [[None], {"x": 1}],
    ValueShape.TWO: [[], ["one"], [1, 2, 3], {"low": 1}],
    ValueShape.LIST: [[], {"x": 1}],
    ValueShape.DAYS: [0, -3, 1.5, "7", True, [7]],
}


@pytest.mark.parametrize(
    ("kind", "op"),
    [(kind, op) for kind, ops in OPS_BY_KIND.items() for op in ops],
    ids=lambda item: str(item),
)
def test_every_operator_validates_with_the_shape_it_declares(kind: str, op: RuleOperator) -> None:
    field = FIELD_OF_KIND[kind]
    one = ONE_VALUE.get(kind, "Santiago")
    assert problems({"all": [{"field": field, "op": op, "value": shaped(op.shape, one)}]}) == []
    wrong = MISSHAPEN[op.shape] + ([one] if op.shape is ValueShape.NONE else [None])
    for value in wrong:
        found = problems({"all": [{"field": field, "op": op, "value": value}]})
        assert [path for path, _ in found] == ["rules.all[0].value"], (value, found)
