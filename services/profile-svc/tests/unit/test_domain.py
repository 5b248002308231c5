"""The profile rules, without I/O."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contacts_shared.events import (
    ProfileCreated,
    ProfileDeleted,
    ProfileFieldAdded,
    ProfileFieldRemoved,
    ProfileUpdated,
    VirtualProfileRulesChanged,
)
from contacts_shared.rules import RuleGroup
from contacts_shared.schema import FieldType, ProfileType
from profile_svc.domain import (
    PagePosition,
    Profile,
    ProfileConflict,
    ProfileInvalid,
    ProfileNotFound,
    ProfileOrder,
    page_cursor,
    parse_cursor,
    storage_key,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)


def regular(name: str = "Shop", fields: Any = (), account: str = "acct") -> Profile:
    return Profile.create(
        id=f"id-{name}",
        account_id=account,
        name=name,
        description="",
        type=ProfileType.REGULAR,
        fields=list(fields),
        now=NOW,
    )


def virtual(base: Profile, rules: dict[str, Any], name: str = "Segment") -> Profile:
    return Profile.create(
        id=f"id-{name}",
        account_id=base.account_id,
        name=name,
        description="",
        type=ProfileType.VIRTUAL,
        fields=[],
        now=NOW,
        base=base,
        rules=RuleGroup.model_validate(rules),
    )


def test_regular_profiles_start_with_the_email_identity_and_one_event() -> None:
    profile = regular(fields=[("Ciudad", FieldType.TEXT, False)])
    assert [(f.name, f.identity, f.required) for f in profile.fields] == [
        ("email", True, True),
        ("Ciudad", False, False),
    ]
    [event] = profile.take_events()
    assert isinstance(event, ProfileCreated) and event.profile.version == 1


def test_mobile_only_profiles_are_keyed_by_phone() -> None:
    profile = Profile.create(
        id="m",
        account_id="a",
        name="SMS",
        description="",
        type=ProfileType.MOBILE_ONLY,
        fields=[],
        now=NOW,
    )
    assert [(f.name, f.type, f.identity) for f in profile.fields] == [
        ("phone", FieldType.PHONE, True)
    ]


def test_email_given_again_with_another_type_is_a_conflict() -> None:
    with pytest.raises(ProfileConflict):
        regular(fields=[("Email", FieldType.TEXT, False)])


def test_field_names_are_unique_ignoring_case_and_unicode_form() -> None:
    profile = regular(fields=[("Año", FieldType.TEXT, False)])
    with pytest.raises(ProfileConflict):
        profile.add_field(name="AN\u0303O", type=FieldType.TEXT, required=False, now=LATER)


@pytest.mark.parametrize("name", ["", "   ", "status", "Created_At", "a\x00b", "x" * 101])
def test_bad_field_names_are_invalid(name: str) -> None:
    with pytest.raises(ProfileInvalid):
        regular().add_field(name=name, type=FieldType.TEXT, required=False, now=LATER)


def test_adding_and_removing_fields_bumps_the_version_and_records_events() -> None:
    profile = regular()
    profile.take_events()
    spec = profile.add_field(name="Edad", type=FieldType.NUMBER, required=False, now=LATER)
    profile.remove_field(name="EDAD", dependents=[], now=LATER)
    added, removed = profile.take_events()
    assert isinstance(added, ProfileFieldAdded) and added.field == spec
    assert isinstance(removed, ProfileFieldRemoved) and removed.profile.version == 3
    assert profile.updated_at == LATER


def test_the_identity_field_cannot_be_removed() -> None:
    with pytest.raises(ProfileConflict, match="identifies"):
        regular().remove_field(name="email", dependents=[], now=LATER)
    with pytest.raises(ProfileNotFound):
        regular().remove_field(name="missing", dependents=[], now=LATER)


def test_fields_read_by_virtual_rules_and_bases_of_virtual_profiles_are_kept() -> None:
    base = regular(fields=[("City", FieldType.TEXT, False), ("Age", FieldType.NUMBER, False)])
    segment = virtual(base, {"all": [{"field": "city", "op": "equals", "value": "Lima"}]})
    with pytest.raises(ProfileConflict, match="Segment"):
        base.remove_field(name="City", dependents=[segment], now=LATER)
    base.remove_field(name="Age", dependents=[segment], now=LATER)
    with pytest.raises(ProfileConflict, match="Segment"):
        base.delete(dependents=[segment], now=LATER)


def test_virtual_profiles_need_a_regular_base_and_valid_rules() -> None:
    base = regular(fields=[("Age", FieldType.NUMBER, False)])
    rules = {"all": [{"field": "Age", "op": "gte", "value": 18}]}
    segment = virtual(base, rules)
    assert segment.base_profile_id == base.id and segment.fields == []
    with pytest.raises(ProfileInvalid, match="regular"):
        virtual(segment, rules, name="Nested")
    with pytest.raises(ProfileInvalid, match="rules.all\\[0\\].value"):
        virtual(base, {"all": [{"field": "Age", "op": "gte", "value": "18"}]})
    with pytest.raises(ProfileNotFound):
        Profile.create(
            id="v",
            account_id="acct",
            name="V",
            description="",
            type=ProfileType.VIRTUAL,
            fields=[],
            now=NOW,
            base=regular(account="other"),
            rules=RuleGroup.model_validate(rules),
        )
    with pytest.raises(ProfileConflict):
        segment.add_field(name="X", type=FieldType.TEXT, required=False, now=LATER)


def test_updates_record_what_changed_and_nothing_when_nothing_did() -> None:
    base = regular(fields=[("Age", FieldType.NUMBER, False)])
    segment = virtual(base, {"all": [{"field": "Age", "op": "gte", "value": 18}]})
    segment.take_events()
    segment.update(now=LATER, name="Segment", description="")
    assert segment.take_events() == [] and segment.version == 1
    new_rules = RuleGroup.model_validate({"any": [{"field": "Age", "op": "lt", "value": 18}]})
    segment.update(now=LATER, name="Minors", rules=new_rules, base=base)
    updated, rules_changed = segment.take_events()
    assert isinstance(updated, ProfileUpdated) and updated.changed == ("name",)
    assert isinstance(rules_changed, VirtualProfileRulesChanged)
    assert segment.version == 2
    with pytest.raises(ProfileInvalid):
        base.update(now=LATER, rules=new_rules, base=base)


def test_delete_records_the_last_version() -> None:
    profile = regular()
    profile.delete(dependents=[], now=LATER)
    assert profile.take_events()[-1] == ProfileDeleted(
        profile_id=profile.id, type=ProfileType.REGULAR, version=2
    )


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Fecha de Nacimiento", "fecha_de_nacimiento"),
        ("Año.Nivel", "ano_nivel"),
        ("$where", "where"),
        ("2024 total", "f_2024_total"),
        ("日本", "field"),
    ],
)
def test_storage_keys_are_mongodb_safe(name: str, key: str) -> None:
    assert storage_key(name, []) == key


@given(st.lists(st.text(min_size=1, max_size=30), max_size=20))
def test_storage_keys_are_always_safe_and_unique(names: list[str]) -> None:
    taken: list[str] = []
    for name in names:
        taken.append(storage_key(name, taken))
    assert len(set(taken)) == len(taken)
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", key) for key in taken)


@pytest.mark.parametrize("order", list(ProfileOrder))
def test_a_cursor_names_the_last_profile_of_its_order(order: ProfileOrder) -> None:
    profile = regular("Ñandú Shop")
    profile.update(now=LATER, description="changed")
    value = {"name": "ñandú shop", "created_at": NOW, "updated_at": LATER}[order.attribute]
    assert parse_cursor(order, page_cursor(order, profile)) == PagePosition(value, profile.id)


def encoded(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "zzz",
        "",
        encoded("[]"),
        encoded('["-created_at", 5, "id"]'),
        encoded('["-created_at", "yesterday", "id"]'),
        page_cursor(ProfileOrder.CREATED, regular()),  # another order's
        page_cursor(ProfileOrder.CREATED_DESC, regular())[:-4],  # cut short
    ],
)
def test_a_cursor_of_another_order_or_tampered_with_is_invalid(token: str) -> None:
    with pytest.raises(ProfileInvalid) as caught:
        parse_cursor(ProfileOrder.CREATED_DESC, token)
    assert [problem.field for problem in caught.value.problems] == ["cursor"]
