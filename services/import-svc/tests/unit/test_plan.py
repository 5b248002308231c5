"""The header check before an upload, from a file's first bytes: the delimiter, encoding and
date order an import would find, each column's field, what the import would fail on, and a
mapping to confirm that makes the import pass."""

from __future__ import annotations

import re

import pytest

from contacts_shared.schema import FieldSpec, FieldType
from import_svc.csv_rows import CsvUnreadable, read_rows
from import_svc.header import Match, check_header, plan_columns
from import_svc.plan import PLAN_BYTES, DateCounts, DateOrderSeen, ImportPlan, plan_upload

FIELDS = (
    FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True),
    FieldSpec(name="Nombre", key="nombre", type=FieldType.TEXT),
    FieldSpec(name="Teléfono", key="telefono", type=FieldType.PHONE),
    FieldSpec(name="Fecha de Nacimiento", key="fecha_de_nacimiento", type=FieldType.DATE),
    FieldSpec(name="Alta", key="alta", type=FieldType.DATE),
)


def plan_of(text: str) -> ImportPlan:
    return plan_upload(text.encode(), FIELDS, region="CL")


@pytest.mark.parametrize("delimiter", [";", ",", "\t", "|"])
def test_the_delimiter_is_the_one_the_import_finds(delimiter: str) -> None:
    text = delimiter.join(["email", "Nombre", "Fecha de Nacimiento"]) + "\r\n"
    text += delimiter.join(
        ["ana@x.cl", "Ana, la jefa" if delimiter != "," else "Ana", "31/12/1990"]
    )
    plan = plan_upload(text.encode(), FIELDS, region="CL")
    imported = list(read_rows(iter([text.encode()])))
    assert plan.delimiter == delimiter and plan.encoding == "utf-8" and plan.rows == 1
    assert [c.name for c in plan.header.columns] == imported[0].values
    assert plan.examples[1] == (imported[1].values[1],)
    assert plan.ready and plan.mapping == {
        "email": "email",
        "Nombre": "Nombre",
        "Fecha de Nacimiento": "Fecha de Nacimiento",
    }


def test_utf8_with_a_bom_and_latin1_are_read_as_the_import_reads_them() -> None:
    bom = plan_upload("\ufeffemail;Teléfono\nana@x.cl;9 8765 4321\n".encode(), FIELDS, region="CL")
    assert bom.encoding == "utf-8-sig"
    assert [(c.name, c.match) for c in bom.header.columns] == [
        ("email", Match.EXACT),
        ("Teléfono", Match.EXACT),
    ]
    latin1 = plan_upload(
        "email;Teléfono;Nombre\nana@x.cl;9 8765 4321;Muñoz\n".encode("latin-1"),
        FIELDS,
        region="CL",
    )
    assert latin1.encoding == "windows-1252"  # Latin-1's letters, as Windows saves them
    assert latin1.header.columns[1].field == FIELDS[2]
    assert latin1.examples[2] == ("Muñoz",)


@pytest.mark.parametrize(
    ("dates", "order", "counts"),
    [
        (["31/12/1990", "05/07/85", "2001-02-03"], DateOrderSeen.DAY_FIRST, DateCounts(1, 0, 1)),
        (["12/31/1990", "7/5/1985"], DateOrderSeen.MONTH_FIRST, DateCounts(0, 1, 1)),
        (["03/04/1990", "05/06/2001"], DateOrderSeen.UNKNOWN, DateCounts(0, 0, 2)),
        (["1990-12-31", "05/05/2001"], DateOrderSeen.UNKNOWN, DateCounts()),  # alike both ways
        (["31/12/1990", "12/31/1990"], DateOrderSeen.UNKNOWN, DateCounts(1, 1, 0)),  # mixed
        (["no sé", ""], DateOrderSeen.UNKNOWN, DateCounts()),
    ],
)
def test_the_date_order_is_told_by_dates_that_read_only_one_way(
    dates: list[str], order: DateOrderSeen, counts: DateCounts
) -> None:
    rows = "".join(f"a{n}@x.cl,{date},{date}\n" for n, date in enumerate(dates))
    plan = plan_of("email,Fecha de Nacimiento,Notas\n" + rows)
    assert plan.dates == counts and plan.dates.order is order


def test_only_columns_filling_date_fields_tell_the_date_order() -> None:
    plan = plan_of("email,Notas,Alta\na@x.cl,31/12/1990,\n")
    assert plan.dates.order is DateOrderSeen.UNKNOWN
    loose = plan_of("email,Notas,alta\na@x.cl,,12/31/1990\n")
    assert loose.dates.order is DateOrderSeen.MONTH_FIRST


def test_unknown_and_duplicate_columns_are_named_and_the_mapping_skips_them() -> None:
    plan = plan_upload(b"EMAIL,Nombre,Color,nombre\na@x.cl,Ana,rojo,Ana B\n", FIELDS, region="CL")
    assert [(c.name, c.match) for c in plan.header.columns] == [
        ("EMAIL", Match.LOOSE),
        ("Nombre", Match.EXACT),
        ("Color", Match.UNKNOWN),
        ("nombre", Match.DUPLICATE),
    ]
    assert {p.field for p in plan.header.problems} == {"Color", "nombre"}
    assert plan.mapping == {"EMAIL": "email", "Nombre": "Nombre", "Color": None, "nombre": None}
    assert plan.ready
    # The import, given that mapping, reads the columns the plan said.
    columns = plan_columns(["EMAIL", "Nombre", "Color", "nombre"], FIELDS, mapping=plan.mapping)
    assert columns.fields == (FIELDS[0], FIELDS[1], None, None)


def test_a_missing_identity_column_is_named_and_no_mapping_is_ready() -> None:
    plan = plan_upload(b"Nombre,Correo\nAna,a@x.cl\n", FIELDS, region="CL")
    assert plan.header.identity_missing and not plan.ready
    assert "email" in {p.field for p in plan.header.problems}
    assert plan.mapping == {"Nombre": "Nombre", "Correo": None}
    # Once the person maps the column, the same plan is ready.
    mapped = plan_upload(
        b"Nombre,Correo\nAna,a@x.cl\n", FIELDS, region="CL", mapping={"Correo": "email"}
    )
    assert not mapped.header.identity_missing and mapped.ready
    assert mapped.header.columns[1].match is Match.MAPPED
    assert mapped.mapping == {"Nombre": "Nombre", "Correo": "email"}


def test_a_repeated_column_name_cannot_be_mapped_apart_so_it_is_not_ready() -> None:
    plan = plan_upload(b"email,Nombre,Nombre\na@x.cl,A,B\n", FIELDS, region="CL")
    assert plan.header.columns[2].match is Match.DUPLICATE and not plan.ready


def test_only_the_first_bytes_are_read_and_a_cut_record_is_left_out() -> None:
    head = "email,Nombre\n" + "".join(f'a{n}@x.cl,"Nombre\n{n}"\n' for n in range(10_000))
    data = head.encode()
    assert len(data) > PLAN_BYTES
    plan = plan_upload(data, FIELDS, region="CL")
    assert 0 < plan.rows < 10_000  # records whole within the first bytes, no cut one
    assert plan.examples[1] == ("Nombre\n0", "Nombre\n1", "Nombre\n2")
    # A client that sends only the first bytes, cut inside a quoted field, is read alike.
    assert plan_upload(b'email,Nombre\na@x.cl,"Ana\nb@x.cl,"Bo', FIELDS, region="CL").rows == 0
    assert plan_upload(b"email,Nombre\na@x.cl,Ana", FIELDS, region="CL").rows == 1


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", "the file is empty"),
        (b"\n\r\n  \n", "no header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content (NUL bytes)"),
        ("email\na@x.cl\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_what_is_not_a_csv_is_named(data: bytes, found: str) -> None:
    with pytest.raises(CsvUnreadable, match=re.escape(found)):
        plan_upload(data, FIELDS, region="CL")


def test_the_binary_refusal_shows_the_first_bytes_found() -> None:
    with pytest.raises(CsvUnreadable, match="89 50 4e 47 0d 0a 1a 0a"):
        plan_upload(b"\x89PNG\r\n\x1a\n\x00\x00", FIELDS, region="CL")


def test_the_plan_and_the_import_refuse_a_header_alike() -> None:
    header = ["Nombre", "Color", "", "nombre"]
    check = check_header(header, FIELDS)
    plan = plan_upload(",".join(header).encode() + b"\n", FIELDS, region="CL")
    assert plan.header.problems == check.problems
