"""The header check before an upload: from the first bytes of a file or of pasted text, what an
import of it would find (encoding, delimiter, each column's field, the problems the import
would fail on), the order its dates are written in, and a suggested mapping to confirm. It
reads with the import's own reader (`csv_rows`) and checks with its own header check
(`header`), so the plan and the import say the same of a file. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from contacts_shared.schema import FieldSpec, FieldType
from contacts_shared.values import DateOrder, convert
from import_svc.csv_rows import DETECTION_BYTES, CsvRows, CsvUnreadable, Row
from import_svc.header import FILLING, ColumnMapping, ColumnMatch, HeaderCheck, check_header

# The import chooses the encoding from this many first bytes: the plan reads no more.
PLAN_BYTES = DETECTION_BYTES
EXAMPLES = 3  # values shown a column
EXAMPLE_CHARS = 200


class DateOrderSeen(StrEnum):
    """How the sample's dates are written; unknown when no date tells (all read both ways
    alike or differently, none at all) or the dates disagree."""

    DAY_FIRST = "day_first"
    MONTH_FIRST = "month_first"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DateCounts:
    """The sample's dates (in columns filling date fields) by the orders that read them."""

    day_first: int = 0  # read day first only, as 31/12/1990
    month_first: int = 0  # read month first only, as 12/31/1990
    ambiguous: int = 0  # read both ways as different dates, as 03/04/1990

    @property
    def order(self) -> DateOrderSeen:
        if self.day_first and not self.month_first:
            return DateOrderSeen.DAY_FIRST
        if self.month_first and not self.day_first:
            return DateOrderSeen.MONTH_FIRST
        return DateOrderSeen.UNKNOWN


@dataclass(frozen=True)
class ImportPlan:
    """What an import of the sampled file would do with it, stored nowhere."""

    encoding: str
    delimiter: str
    header: HeaderCheck
    rows: int  # complete rows sampled after the header
    examples: tuple[tuple[str, ...], ...]  # the first non-empty values of each column
    dates: DateCounts
    mapping: dict[str, str | None]  # suggested: each named column's field, or None to skip it
    ready: bool  # an import given the suggested mapping passes its header check


def plan_upload(
    data: bytes,
    fields: Sequence[FieldSpec],
    *,
    region: str,
    encoding: str | None = None,
    delimiter: str | None = None,
    mapping: ColumnMapping | None = None,
) -> ImportPlan:
    """The plan for `data`, a file's first bytes (over `PLAN_BYTES` of them: the file goes
    on, and only those are read). CsvUnreadable says what was found instead of a CSV."""
    reader = CsvRows(encoding=encoding, delimiter=delimiter)
    rows = reader.start(data[:PLAN_BYTES], whole=len(data) <= PLAN_BYTES)
    if not rows:
        raise CsvUnreadable(
            1, f"no header in the first {PLAN_BYTES} bytes: blank lines, or one line longer"
        )
    assert reader.encoding is not None and reader.delimiter is not None  # chosen on reading
    header, sample = rows[0], rows[1:]
    check = check_header(header.values, fields, mapping=mapping)
    suggested: dict[str, str | None] = {}
    for column in check.columns:
        if column.name:  # an unnamed column cannot be named in a mapping
            filled = column.field if column.match in FILLING else None
            suggested.setdefault(column.name, filled.name if filled else None)
    ready = not check_header(header.values, fields, mapping=suggested).problems
    return ImportPlan(
        encoding=reader.encoding,
        delimiter=reader.delimiter,
        header=check,
        rows=len(sample),
        examples=tuple(_examples(sample, index) for index in range(len(check.columns))),
        dates=_dates(sample, check.columns, region),
        mapping=suggested,
        ready=ready,
    )


def _examples(rows: Sequence[Row], index: int) -> tuple[str, ...]:
    values = (row.values[index] for row in rows if index < len(row.values))
    found = [value[:EXAMPLE_CHARS] for value in values if value.strip()]
    return tuple(found[:EXAMPLES])


def _read_as(spec: FieldSpec, value: str, order: DateOrder, region: str) -> object:
    """The date as the import would store it in `order`; None if it would refuse it."""
    try:
        return convert(spec, value, region, date_order=order)
    except ValueError:
        return None


def _dates(rows: Sequence[Row], columns: Sequence[ColumnMatch], region: str) -> DateCounts:
    """Each date read day first and month first, by the import's own date rule."""
    day_first = month_first = ambiguous = 0
    dated = [
        (index, column.field)
        for index, column in enumerate(columns)
        if column.match in FILLING and column.field and column.field.type is FieldType.DATE
    ]
    for row in rows:
        for index, spec in dated:
            value = row.values[index] if index < len(row.values) else ""
            if not value.strip():
                continue
            as_day = _read_as(spec, value, DateOrder.DAY_FIRST, region)
            as_month = _read_as(spec, value, DateOrder.MONTH_FIRST, region)
            if as_day is not None and as_month is not None:
                if as_day != as_month:  # alike both ways (ISO, 05/05/1990): tells nothing
                    ambiguous += 1
            elif as_day is not None:
                day_first += 1
            elif as_month is not None:
                month_first += 1
    return DateCounts(day_first, month_first, ambiguous)
