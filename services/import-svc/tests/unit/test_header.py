"""Matching an import's header to the profile's fields, before any row is read."""

from __future__ import annotations

from typing import Any

import pytest

from contacts_shared.schema import FieldSpec, FieldType
from import_svc.header import HeaderRefused, check_mapping, plan_columns

FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="Nombre", key="nombre", type=FieldType.TEXT),
    FieldSpec(name="Ciudad", key="ciudad", type=FieldType.TEXT),
    FieldSpec(name="Fecha de Nacimiento", key="fecha_de_nacimiento", type=FieldType.DATE),
)


def refusal(header: list[str], **options: Any) -> dict[str, str]:
    with pytest.raises(HeaderRefused) as caught:
        plan_columns(header, FIELDS, **options)
    return {p.field: p.message for p in caught.value.problems}


def test_columns_written_as_the_field_names_fill_those_fields_in_any_order() -> None:
    plan = plan_columns(["Ciudad", "email", "Nombre"], FIELDS)
    assert [s.key if s else None for s in plan.fields] == ["ciudad", "email", "nombre"]
    assert plan.identity_column == 1 and plan.loose_matches == ()
    assert plan.values(["Lima", "a@x.co", "Ana"]) == (
        "a@x.co",
        [(FIELDS[2], "Lima"), (FIELDS[1], "Ana")],
    )


def test_case_and_accent_differences_match_and_are_reported() -> None:
    plan = plan_columns(["EMAIL", "nómbre", " fecha de nacimiento "], FIELDS)
    assert [s.key if s else None for s in plan.fields] == ["email", "nombre", "fecha_de_nacimiento"]
    assert plan.loose_matches == (
        ("EMAIL", "email"),
        ("nómbre", "Nombre"),
        ("fecha de nacimiento", "Fecha de Nacimiento"),
    )


def test_a_mapping_and_ignored_columns() -> None:
    plan = plan_columns(
        ["Correo", "Name", "Notas internas"],
        FIELDS,
        mapping={"Correo": "email", "Name": "nombre"},
        ignore=["Notas internas"],
    )
    assert [s.key if s else None for s in plan.fields] == ["email", "nombre", None]
    assert plan.values(["a@x.co", "Ana", "vip!"]) == ("a@x.co", [(FIELDS[1], "Ana")])


def test_everything_wrong_is_named_at_once() -> None:
    problems = refusal(["Nombre", "Color", "", "nombre", "Edad"], mapping={"Edad": "Age"})
    assert problems == {
        "Color": "matches no field of the profile (its fields: 'email', 'Nombre', 'Ciudad', "
        "'Fecha de Nacimiento')",
        "column 3": "has no name in the header",
        "nombre": "fills 'Nombre', as column 'Nombre' already does",
        "Edad": "is mapped to 'Age', no field of the profile",
        "email": "the column identifying contacts is missing from the header",
    }


def test_a_mapped_column_missing_from_the_header_is_named() -> None:
    assert refusal(["email"], mapping={"Correo": "email"}) == {
        "Correo": "is mapped but is not in the header"
    }


def test_the_identity_column_mapped_twice_is_refused() -> None:
    assert "Correo" in refusal(["email", "Correo"], mapping={"Correo": "email"})


def test_a_confirmed_mapping_applies_instead_of_the_header_names_and_null_skips() -> None:
    plan = plan_columns(
        ["Correo", "Nombre", "Ciudad", "Color"],
        FIELDS,
        mapping={"Correo": "email", "Nombre": "Ciudad", "Ciudad": None, "Color": None},
    )
    assert [s.key if s else None for s in plan.fields] == ["email", "ciudad", None, None]
    assert plan.values(["a@x.co", "Lima", "Quito", "rojo"]) == ("a@x.co", [(FIELDS[2], "Lima")])


def test_a_mapping_is_checked_against_the_profile_before_any_header() -> None:
    assert check_mapping({}, FIELDS) == []
    assert check_mapping({"Correo": "EMAIL", "Nombre": "nombre", "Color": None}, FIELDS) == []
    problems = {
        p.field: p.message for p in check_mapping({"Correo": "email", "Color": "Colour"}, FIELDS)
    }
    assert problems == {
        "mapping.Color": "'Colour' is no field of the profile (its fields: 'email', 'Nombre', "
        "'Ciudad', 'Fecha de Nacimiento')"
    }
    # A partial mapping is fine: the header's other columns still match by name.
    assert check_mapping({"Correo": None}, FIELDS) == []
