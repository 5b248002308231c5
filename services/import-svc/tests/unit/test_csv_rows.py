"""Reading real-world CSVs and pasted text incrementally: encodings, delimiters, quoting, line
endings, blank lines, and clear refusals of what is not a CSV."""

from __future__ import annotations

import codecs
import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from import_svc.csv_rows import MAX_RECORD_CHARS, CsvRows, CsvUnreadable, Row, read_rows


def rows_of(data: bytes, chunk: int = 7, **options: str) -> list[Row]:
    """Fed in small chunks, so records, characters and CRLFs are cut everywhere."""
    return list(
        read_rows(iter([data[i : i + chunk] for i in range(0, len(data), chunk)]), **options)
    )


def test_quoted_fields_hold_delimiters_quotes_and_line_breaks() -> None:
    data = (
        "email,Nombre,Notas\r\n"
        'ana@example.com,"Pérez, Ana","dijo ""hola""\r\nen dos líneas"\r\n'
        "bo@example.com,Bo,\r\n"
    ).encode()
    assert rows_of(data) == [
        Row(1, ["email", "Nombre", "Notas"]),
        Row(2, ["ana@example.com", "Pérez, Ana", 'dijo "hola"\r\nen dos líneas']),
        Row(4, ["bo@example.com", "Bo", ""]),
    ]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_found_in_the_header(delimiter: str) -> None:
    city = '"Lima, Perú"' if delimiter == "," else "Lima, Perú"
    data = delimiter.join(["email", "Ciudad", "Edad"]) + "\n"
    data += delimiter.join(["ana@example.com", city, "30"]) + "\n"
    assert rows_of(data.encode())[1] == Row(2, ["ana@example.com", "Lima, Perú", "30"])


def test_a_given_delimiter_wins_over_detection() -> None:
    data = b"email;Nombre\na@x.co;Ana\n"
    assert rows_of(data, delimiter=",")[0] == Row(1, ["email;Nombre"])


def test_windows_1252_accents_are_detected_and_a_bom_dropped() -> None:
    latin = "email;Nombre;Ciudad\nana@example.com;José Muñoz;Concepción\n".encode("windows-1252")
    assert rows_of(latin)[1].values == ["ana@example.com", "José Muñoz", "Concepción"]
    bom = "\ufeffemail,Nombre\nana@example.com,Ñandú\n".encode()
    assert rows_of(bom) == [Row(1, ["email", "Nombre"]), Row(2, ["ana@example.com", "Ñandú"])]


def test_blank_lines_and_lines_of_delimiters_are_skipped_with_lines_still_counted() -> None:
    data = b"email,Nombre\n\n,\r\na@x.co,Ana\n   \nb@x.co,Bo"
    assert rows_of(data) == [
        Row(1, ["email", "Nombre"]),
        Row(4, ["a@x.co", "Ana"]),
        Row(6, ["b@x.co", "Bo"]),
    ]


def test_old_mac_line_endings_and_a_crlf_cut_between_chunks() -> None:
    data = b"email,Nombre\ra@x.co,Ana\rb@x.co,Bo\r\n"
    for chunk in range(1, len(data) + 1):
        assert [r.line for r in rows_of(data, chunk=chunk)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"", 1, "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, "binary"),
        (b'email,Nombre\na@x.co,"Ana\nb@x.co,Bo\n', 2, "never closed"),
        (b"email,Nombre\na@x.co,\xff\xfe\n", 2, "windows-1252"),  # detected 1252: 0xff is ÿ
    ],
)
def test_what_is_not_a_csv_is_refused_with_the_line(data: bytes, line: int, reason: str) -> None:
    if reason == "windows-1252":
        assert rows_of(data)[1].values == ["a@x.co", "ÿþ"]
        return
    with pytest.raises(CsvUnreadable, match=reason) as caught:
        rows_of(data)
    assert caught.value.line == line


def test_invalid_utf8_after_the_detection_window_names_its_line() -> None:
    head = b"email,Nombre\n" + b"a@x.co,Ana\n" * 7000  # past the detection window
    with pytest.raises(CsvUnreadable, match="not utf-8") as caught:
        rows_of(head + b"b@x.co,\xe9\n", chunk=4096)
    assert caught.value.line == 7002


def test_a_record_too_long_is_refused_without_reading_it_all() -> None:
    reader = CsvRows()
    reader.feed(b'email,Nombre\na@x.co,"')
    with pytest.raises(CsvUnreadable, match="over"):
        for _ in range(MAX_RECORD_CHARS // 65536 + 2):
            reader.feed(b"x" * 65536 + b"\n")


cell = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8)


@given(
    st.lists(st.lists(cell, min_size=2, max_size=2), min_size=1, max_size=6),
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from(["\r\n", "\n"]),
    st.integers(1, 9),
)
def test_whatever_the_csv_module_writes_reads_back(
    records: list[list[str]], delimiter: str, ending: str, chunk: int
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=ending, quoting=csv.QUOTE_ALL)
    writer.writerow(["email", "Nombre"])
    writer.writerows(records)
    read = rows_of(out.getvalue().encode(), chunk=chunk, delimiter=delimiter)
    expected = [["email", "Nombre"]] + [r for r in records if any(v.strip() for v in r)]
    assert [row.values for row in read] == expected


@given(
    st.lists(st.lists(cell, min_size=2, max_size=2), min_size=1, max_size=6),
    st.sampled_from([",", ";", "\t", "|"]),
    st.data(),
)
def test_the_start_of_a_file_reads_as_the_first_records_of_the_whole(
    records: list[list[str]], delimiter: str, data: st.DataObject
) -> None:
    """What a plan reads of a file's first bytes, cut anywhere, is what the import reads first."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerows([["email", "Nombre"], *records])
    whole = out.getvalue().encode()
    imported = rows_of(whole)
    cut = data.draw(st.integers(1, len(whole)))
    started = CsvRows().start(whole[:cut], whole=False)
    assert started == imported[: len(started)]
    assert CsvRows().start(whole, whole=True) == imported


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF16_LE + "email\na@x.co\n".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "email\na@x.co\n".encode("utf-16-be"),
    ],
)
def test_utf16_text_is_refused_naming_it(data: bytes) -> None:
    with pytest.raises(CsvUnreadable, match="UTF-16 text"):
        rows_of(data)
