"""Contact values by field type: emails, phones, numbers, dates as exports write them, yes/no."""

from __future__ import annotations

from datetime import date

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import strategies as st

from contacts_shared.schema import FieldSpec, FieldType
from contacts_shared.values import (
    DateOrder,
    ValuesInvalid,
    convert,
    field_named,
    fields_by_name,
    identity_key,
    normalize_email,
    normalize_phone,
)

BIRTHDAY = FieldSpec(name="Fecha de Nacimiento", key="fecha_de_nacimiento", type=FieldType.DATE)
EMAIL = FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True)


def test_emails_are_trimmed_lowercased_and_checked_without_dns() -> None:
    assert normalize_email("  Ana.Perez@Example.COM ") == "ana.perez@example.com"
    for bad in ("ana", "ana@", "@example.com", "ana@@example.com", "", 42):
        with pytest.raises(ValueError):
            normalize_email(bad)


def email_validator_verdict(address: str) -> str | None:
    """What email_validator alone makes of an address (the rule normalize_email keeps)."""
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def assert_checked_as_email_validator_does(address: str) -> None:
    expected = email_validator_verdict(address)
    for _ in range(2):  # the second time, the domain's verdict comes from memory
        if expected is None:
            with pytest.raises(ValueError):
                normalize_email(address)
        else:
            assert normalize_email(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "Ana.Perez@Example.COM",
        "o'brien+tag@mail.example.org",
        "a@localhost",  # special-use names email_validator refuses
        "a@printer.local",
        "a@site.test",
        "a@x.invalid",
        "a@example.123",  # an all-numeric top-level domain
        "a@-bad.example.com",
        "a@bad-.example.com",
        "a@example..com",
        "a@example.com.",
        "a@com",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a@xn--bcher-kva.example",  # IDNA: normalized to its Unicode form
        "a@xn--zz.example",  # not valid IDNA
        "a@bücher.example",
        '"quoted"@example.com',
        "Ana <ana@example.com>",
        "x" * 64 + "@example.com",
        "x" * 70 + "@example.com",  # email_validator allows a long local part unless strict
        "x" * 200 + "@" + "d" * 49 + ".com",  # 254 characters
        "x" * 200 + "@" + "d" * 50 + ".com",  # 255
        "a@" + "d" * 64 + ".com",  # a label over 63
    ],
)
def test_emails_are_checked_as_email_validator_checks_them(address: str) -> None:
    assert_checked_as_email_validator_does(address)


@given(st.from_regex(r"[a-zA-Z0-9.!#_+-]{1,80}@[a-zA-Z0-9.-]{1,80}", fullmatch=True))
def test_plain_addresses_are_checked_as_email_validator_checks_them(address: str) -> None:
    assert_checked_as_email_validator_does(address)


def test_phones_become_e164_with_the_default_region() -> None:
    assert normalize_phone("9 8765 4321", "CL") == "+56987654321"
    assert normalize_phone("+1 (415) 555-2671", "CL") == "+14155552671"
    assert normalize_phone("+52 55 1234 5678", "CL") == "+525512345678"
    assert normalize_phone("011 4123-4567", "AR") == "+541141234567"
    for bad in ("123", "hello", ""):
        with pytest.raises(ValueError):
            normalize_phone(bad, "CL")


@pytest.mark.parametrize(
    ("raw", "order", "stored"),
    [
        ("31/12/1990", DateOrder.DAY_FIRST, "1990-12-31"),
        ("3/4/2025", DateOrder.DAY_FIRST, "2025-04-03"),
        ("3/4/2025", DateOrder.MONTH_FIRST, "2025-03-04"),
        ("12/31/1990", DateOrder.MONTH_FIRST, "1990-12-31"),
        ("31-12-1990", DateOrder.DAY_FIRST, "1990-12-31"),
        ("31.12.1990", DateOrder.DAY_FIRST, "1990-12-31"),
        ("5/7/85", DateOrder.DAY_FIRST, "1985-07-05"),
        ("5/7/08", DateOrder.DAY_FIRST, "2008-07-05"),
        ("1/2/69", DateOrder.MONTH_FIRST, "1969-01-02"),
        ("1990-12-31", DateOrder.MONTH_FIRST, "1990-12-31"),
        ("1990/12/31", DateOrder.DAY_FIRST, "1990-12-31"),
        ("1990-12-31T10:00:00", DateOrder.DAY_FIRST, "1990-12-31"),
    ],
)
def test_dates_in_the_forms_exports_use(raw: str, order: DateOrder, stored: str) -> None:
    assert convert(BIRTHDAY, raw, "CL", order) == stored


@pytest.mark.parametrize(
    ("raw", "order"),
    [
        ("31/02/2020", DateOrder.DAY_FIRST),
        ("12/31/1990", DateOrder.DAY_FIRST),  # month 31
        ("31/12/1990", DateOrder.MONTH_FIRST),
        ("2020-13-01", DateOrder.DAY_FIRST),
        ("yesterday", DateOrder.DAY_FIRST),
        ("1/2/345", DateOrder.DAY_FIRST),
    ],
)
def test_impossible_dates_are_refused_with_the_forms_accepted(raw: str, order: DateOrder) -> None:
    with pytest.raises(ValueError, match="dd/mm/yyyy"):
        convert(BIRTHDAY, raw, "CL", order)


@given(st.dates(min_value=date(1000, 1, 1)), st.sampled_from(["/", "-", "."]))
def test_any_date_written_day_first_or_month_first_reads_back(day: date, sep: str) -> None:
    d, m, y = day.day, day.month, day.year
    assert convert(BIRTHDAY, f"{d}{sep}{m}{sep}{y:04d}", "CL") == day.isoformat()
    written = f"{m:02d}{sep}{d:02d}{sep}{y:04d}"
    assert convert(BIRTHDAY, written, "CL", DateOrder.MONTH_FIRST) == day.isoformat()


def test_field_names_match_ignoring_case_but_not_accents() -> None:
    fields = fields_by_name((EMAIL, BIRTHDAY))
    assert field_named(fields, "  FECHA DE NACIMIENTO ") is BIRTHDAY
    assert field_named(fields, "Fécha de Nacimiento") is None


def test_a_bad_identity_names_its_field() -> None:
    assert identity_key(EMAIL, " Ana@Example.com", "CL") == "ana@example.com"
    with pytest.raises(ValuesInvalid) as caught:
        identity_key(EMAIL, "not an email", "CL")
    assert [p.field for p in caught.value.problems] == ["email"]


@given(st.emails())
def test_any_valid_email_normalizes_to_a_fixed_point(email: str) -> None:
    try:
        once = normalize_email(email)
    except ValueError:
        return  # hypothesis' grammar is wider than deliverable-looking addresses
    assert normalize_email(once) == once
    assert once == once.strip().lower()
