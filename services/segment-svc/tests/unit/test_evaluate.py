"""The rules evaluator, operator by operator (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from contacts_shared.rules import RuleGroup
from contacts_shared.schema import ContactStatus, FieldSpec, FieldType
from segment_svc.evaluate import ContactView, Segment, matches, reads_relative_dates

FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="Ciudad Natal", key="ciudad_natal", type=FieldType.TEXT),
    FieldSpec(name="Age", key="age", type=FieldType.NUMBER),
    FieldSpec(name="Joined", key="joined", type=FieldType.DATE),
    FieldSpec(name="VIP", key="vip", type=FieldType.BOOLEAN),
)
TODAY = date(2026, 11, 29)
ANA = ContactView(
    {"email": "ana@x.com", "ciudad_natal": "Santiago", "age": 34, "joined": "2026-11-20"},
    ContactStatus.ACTIVE,
    datetime(2026, 1, 5, 12, tzinfo=UTC),
    datetime(2026, 11, 28, 23, tzinfo=UTC),
)


def holds(condition: dict[str, Any], contact: ContactView = ANA) -> bool:
    return matches(RuleGroup.model_validate({"all": [condition]}), FIELDS, contact, TODAY)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "Ciudad Natal", "op": "equals", "value": "santiago"}, True),
        ({"field": "ciudad natal", "op": "equals", "value": "Lima"}, False),
        ({"field": "Ciudad Natal", "op": "not_equals", "value": "Lima"}, True),
        ({"field": "Ciudad Natal", "op": "contains", "value": "TIA"}, True),
        ({"field": "Ciudad Natal", "op": "not_contains", "value": "tia"}, False),
        ({"field": "Ciudad Natal", "op": "starts_with", "value": "san"}, True),
        ({"field": "Ciudad Natal", "op": "ends_with", "value": "ago"}, True),
        ({"field": "Ciudad Natal", "op": "in", "value": ["Lima", "SANTIAGO"]}, True),
        ({"field": "Ciudad Natal", "op": "not_in", "value": ["Lima"]}, True),
        ({"field": "Ciudad Natal", "op": "is_empty"}, False),
        ({"field": "Age", "op": "gte", "value": 34}, True),
        ({"field": "Age", "op": "gt", "value": 34}, False),
        ({"field": "Age", "op": "lt", "value": 40.5}, True),
        ({"field": "Age", "op": "between", "value": [30, 34]}, True),
        ({"field": "Age", "op": "not_equals", "value": 34}, False),
        ({"field": "Joined", "op": "after", "value": "2026-11-19"}, True),
        ({"field": "Joined", "op": "before", "value": "2026-11-20"}, False),
        ({"field": "Joined", "op": "on", "value": "2026-11-20T10:00:00"}, True),
        ({"field": "Joined", "op": "between", "value": ["2026-11-01", "2026-11-30"]}, True),
        ({"field": "Joined", "op": "within_last_days", "value": 9}, True),
        ({"field": "Joined", "op": "within_last_days", "value": 8}, False),
        ({"field": "Joined", "op": "more_than_days_ago", "value": 8}, True),
        ({"field": "Joined", "op": "more_than_days_ago", "value": 9}, False),
        ({"field": "created_at", "op": "before", "value": "2026-01-06"}, True),
        ({"field": "updated_at", "op": "within_last_days", "value": 1}, True),
        ({"field": "status", "op": "is", "value": "active"}, True),
        ({"field": "status", "op": "is_not", "value": "active"}, False),
    ],
)
def test_each_operator_on_a_contact_with_values(condition: dict[str, Any], expected: bool) -> None:
    assert holds(condition) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # A contact without a value: positive conditions fail, negative ones hold.
        ({"field": "VIP", "op": "is_true"}, False),
        ({"field": "VIP", "op": "is_false"}, False),
        ({"field": "VIP", "op": "is_empty"}, True),
        ({"field": "Age", "op": "lt", "value": 100}, False),
        ({"field": "Age", "op": "not_equals", "value": 3}, True),
        ({"field": "Ciudad Natal", "op": "not_contains", "value": "x"}, True),
        ({"field": "Ciudad Natal", "op": "not_in", "value": ["x"]}, True),
        ({"field": "Ciudad Natal", "op": "is_not_empty"}, False),
        ({"field": "Joined", "op": "more_than_days_ago", "value": 1}, False),
    ],
)
def test_a_contact_without_the_value(condition: dict[str, Any], expected: bool) -> None:
    empty = ContactView(
        {"email": "b@x.com", "ciudad_natal": ""},
        ContactStatus.UNSUBSCRIBED,
        ANA.created_at,
        ANA.updated_at,
    )
    assert holds(condition, empty) is expected


def test_groups_nest_all_and_any() -> None:
    rules = RuleGroup.model_validate(
        {
            "all": [
                {"field": "Ciudad Natal", "op": "equals", "value": "Santiago"},
                {
                    "any": [
                        {"field": "Age", "op": "gte", "value": 40},
                        {"field": "status", "op": "is", "value": "active"},
                    ]
                },
            ]
        }
    )
    assert matches(rules, FIELDS, ANA, TODAY)
    unsubscribed = ContactView(
        ANA.fields, ContactStatus.UNSUBSCRIBED, ANA.created_at, ANA.updated_at
    )
    assert not matches(rules, FIELDS, unsubscribed, TODAY)


def test_a_field_gone_from_the_base_profile_admits_nobody_and_is_reported() -> None:
    rules = RuleGroup.model_validate(
        {"any": [{"field": "Region", "op": "not_equals", "value": "North"}]}
    )
    segment = Segment("v", "acct", "p", rules, 1, FIELDS)
    assert not segment.admits(ANA, TODAY)
    assert segment.missing_fields() == ["Region"]
    assert Segment("v", "acct", "p", rules, 1, FIELDS[:1]).missing_fields() == ["Region"]


def test_relative_date_rules_are_known_as_such() -> None:
    relative = RuleGroup.model_validate(
        {"all": [{"field": "Joined", "op": "within_last_days", "value": 3}]}
    )
    fixed = RuleGroup.model_validate({"all": [{"field": "Age", "op": "gt", "value": 3}]})
    assert reads_relative_dates(relative)
    assert not reads_relative_dates(fixed)
