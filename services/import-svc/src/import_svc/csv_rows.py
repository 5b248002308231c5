"""Rows of an uploaded CSV or pasted text, read incrementally: bytes go in as they arrive, whole
records come out with the line each starts on, and memory holds only the record in progress.
Pure: no I/O.

Encoding: UTF-8 (with or without BOM) unless the start of the file is not UTF-8, then
Windows-1252, as Latin American spreadsheets save CSVs; or as given. Delimiter: the one of
`, ; TAB |` that the header line holds most of (outside quotes), or as given. Records follow
RFC 4180: quoted fields may hold delimiters, doubled quotes and line breaks; CRLF, LF or CR end
lines; blank lines (also a line of delimiters only) are skipped."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass

DELIMITERS = (",", ";", "\t", "|")
DETECTION_BYTES = 64 * 1024  # read before the encoding is chosen
MAX_RECORD_CHARS = 1_000_000  # one record; longer is a broken file, not a contact
_BREAK = re.compile(r"\r\n|\r|\n")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class CsvUnreadable(ValueError):
    """The file cannot be read as CSV; `line` is where reading stopped (1 is the header)."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True)
class Row:
    line: int  # the physical line the record starts on; the header is line 1
    values: list[str]


class CsvRows:
    """Feed bytes with `feed`, then `close`; each returns the records completed so far. The
    first record returned is the header."""

    def __init__(self, *, encoding: str | None = None, delimiter: str | None = None) -> None:
        if delimiter is not None and len(delimiter) != 1:
            raise ValueError("the delimiter is one character")
        self.encoding = encoding
        self.delimiter = delimiter
        self._head = b""  # bytes held back until the encoding is known
        self._decoder: codecs.IncrementalDecoder | None = None
        self._partial_line = ""  # text after the last line break
        self._record: list[str] = []  # lines of the record in progress
        self._record_chars = 0
        self._quotes = 0  # quote characters in the record in progress
        self._line = 0  # physical lines completed
        self._record_line = 1

    def feed(self, data: bytes) -> list[Row]:
        if self._decoder is None:
            self._head += data
            if len(self._head) < DETECTION_BYTES:
                return []
            data, self._head = self._head, b""
            self._start_decoding(data)
        return self._text(self._decode(data, final=False))

    def close(self) -> list[Row]:
        if self._decoder is None:
            data, self._head = self._head, b""
            self._start_decoding(data)
        else:
            data = b""
        rows = self._text(self._decode(data, final=True))
        if self._partial_line:
            rows += self._lines([self._partial_line])
            self._partial_line = ""
        if self._record:
            if self._quotes % 2:
                raise CsvUnreadable(self._record_line, "a quoted field is never closed")
            rows += self._parse(self._record)
        if self._line == 0 and not rows:
            raise CsvUnreadable(1, "the file is empty")
        return rows

    def start(self, data: bytes, *, whole: bool) -> list[Row]:
        """The records of `data`, the start of a file (the whole file when `whole`), which
        alone chooses the encoding, as `feed` would have it choose from the first
        `DETECTION_BYTES`. A last record cut short is left out; so is one in a `whole` file
        that cannot be completed, since a client may send only the file's first bytes."""
        self._start_decoding(data)
        rows = self._text(self._decode(data, final=False))
        if whole:
            with suppress(CsvUnreadable):
                rows += self.close()
        return rows

    def _start_decoding(self, head: bytes) -> None:
        if not head:
            raise CsvUnreadable(1, "the file is empty")
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise CsvUnreadable(
                1, "UTF-16 text (a spreadsheet's 'Unicode text'): save it as CSV UTF-8"
            )
        if b"\x00" in head:
            start = head[:8].hex(" ")
            raise CsvUnreadable(
                1, f"binary content (NUL bytes), not a CSV text file; its first bytes: {start}"
            )
        if self.encoding is None:
            self.encoding = _detect_encoding(head)
        try:
            self._decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        except LookupError as exc:
            raise CsvUnreadable(1, f"unknown encoding {self.encoding!r}") from exc

    def _decode(self, data: bytes, *, final: bool) -> str:
        assert self._decoder is not None
        try:
            return self._decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            before = self._partial_line + exc.object[: exc.start].decode(self.encoding or "utf-8")
            raise CsvUnreadable(
                self._line + len(_BREAK.findall(before)) + 1,
                f"not {self.encoding} text ({exc.reason}); give the file's encoding "
                "(utf-8, windows-1252, latin-1)",
            ) from exc

    def _text(self, text: str) -> list[Row]:
        text = self._partial_line + text
        lines = _LINE.findall(text)
        if lines and not lines[-1].endswith(("\n", "\r")):
            self._partial_line = lines.pop()
        else:
            self._partial_line = ""
        if text.endswith("\r") and lines:  # maybe the first half of a CRLF still to come
            self._partial_line = lines.pop()
        if len(self._partial_line) > MAX_RECORD_CHARS:
            raise CsvUnreadable(self._line + 1, f"a line over {MAX_RECORD_CHARS} characters")
        return self._lines(lines)

    def _lines(self, lines: list[str]) -> list[Row]:
        """Group physical lines into records (complete when their quotes pair up) and parse
        the complete ones."""
        rows: list[Row] = []
        for line in lines:
            if not self._record:
                self._record_line = self._line + 1
            self._line += 1
            self._record.append(line)
            self._record_chars += len(line)
            self._quotes += line.count('"')
            if self._record_chars > MAX_RECORD_CHARS:
                raise CsvUnreadable(
                    self._record_line,
                    f"a record over {MAX_RECORD_CHARS} characters (a quote never closed?)",
                )
            if self._quotes % 2 == 0:
                if self.delimiter is None:
                    self.delimiter = _detect_delimiter("".join(self._record))
                rows += self._parse(self._record)
                self._record, self._record_chars, self._quotes = [], 0, 0
        return rows

    def _parse(self, record: list[str]) -> list[Row]:
        assert self.delimiter is not None
        try:
            [values] = list(csv.reader(record, delimiter=self.delimiter, strict=True)) or [[]]
        except (csv.Error, ValueError) as exc:
            raise CsvUnreadable(self._record_line, f"malformed record ({exc})") from exc
        if not any(value.strip() for value in values):
            return []  # a blank line, or one of delimiters only
        return [Row(self._record_line, values)]


def _detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Cut in the middle of a character at the end of the sample is still UTF-8.
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return "windows-1252"
    return "utf-8"


def _detect_delimiter(header: str) -> str:
    outside_quotes = "".join(header.split('"')[::2])
    counts = {d: outside_quotes.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_rows(
    chunks: Iterator[bytes], *, encoding: str | None = None, delimiter: str | None = None
) -> Iterator[Row]:
    """Every record of `chunks`, the header first."""
    reader = CsvRows(encoding=encoding, delimiter=delimiter)
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield from reader.close()
