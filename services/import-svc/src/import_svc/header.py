"""Which profile field each column of an import fills, decided from the header before any row
is read. The seed product asks headers to be written exactly as the profile's field names; we
also match a header differing only in case or accents (and say so), follow an explicit mapping
of columns to fields (a column mapped to null is skipped), and skip columns the user chose to
ignore. Everything wrong is named at once. The same check serves the plan shown before an
upload and the import itself, so both say the same of a header. Pure: no I/O."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from contacts_shared.schema import FieldSpec
from contacts_shared.values import (
    FieldProblem,
    ValuesInvalid,
    field_named,
    fields_by_name,
    name_key,
)

# Column -> field name; a column mapped to None is skipped.
ColumnMapping: TypeAlias = Mapping[str, str | None]


class HeaderRefused(ValuesInvalid):
    """The header cannot be matched to the profile's fields; each problem names its column."""


class Match(StrEnum):
    """How a column was matched to a field, or why it fills none."""

    EXACT = "exact"  # written as the field's name
    LOOSE = "loose"  # the field's name once case and accents are set aside
    MAPPED = "mapped"  # the mapping names its field
    SKIPPED = "skipped"  # mapped to null, or ignored
    UNKNOWN = "unknown"  # no field of the profile
    DUPLICATE = "duplicate"  # a field another column fills already
    UNNAMED = "unnamed"  # an empty name in the header


FILLING = frozenset({Match.EXACT, Match.LOOSE, Match.MAPPED})


@dataclass(frozen=True)
class ColumnMatch:
    """One column: its name (surrounding spaces dropped), how it matched, and the field it
    fills (for a duplicate, the field it would fill a second time)."""

    name: str
    match: Match
    field: FieldSpec | None


@dataclass(frozen=True)
class ColumnPlan:
    """The field of each column (None: ignored), the identity's column, and the columns
    matched only once case or accents were set aside."""

    fields: tuple[FieldSpec | None, ...]
    identity_column: int
    loose_matches: tuple[tuple[str, str], ...]  # (column, field name)

    def values(self, row: Sequence[str]) -> tuple[str, list[tuple[FieldSpec, str]]]:
        """The row's raw identity, and its other values with the field each fills."""
        identity = row[self.identity_column]
        values = [
            (spec, value)
            for spec, value in zip(self.fields, row, strict=False)
            if spec is not None and not spec.identity
        ]
        return identity, values


@dataclass(frozen=True)
class HeaderCheck:
    """Each column's match, and what stops the header from being imported."""

    columns: tuple[ColumnMatch, ...]
    problems: tuple[FieldProblem, ...]
    identity: FieldSpec

    @property
    def identity_missing(self) -> bool:
        return not any(
            c.field is not None and c.field.key == self.identity.key and c.match in FILLING
            for c in self.columns
        )

    def plan(self) -> ColumnPlan:
        """The columns' fields; HeaderRefused names every problem."""
        if self.problems:
            raise HeaderRefused(self.problems)
        fields = tuple(c.field if c.match in FILLING else None for c in self.columns)
        identity_column = fields.index(self.identity)
        loose = tuple(
            (c.name, c.field.name) for c in self.columns if c.match is Match.LOOSE and c.field
        )
        return ColumnPlan(fields, identity_column, loose)


def _loose(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name_key(name.strip()))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _fields_named(fields: Sequence[FieldSpec]) -> str:
    return ", ".join(f"'{s.name}'" for s in fields)


def check_mapping(mapping: ColumnMapping, fields: Sequence[FieldSpec]) -> list[FieldProblem]:
    """What is wrong with a mapping before any header is seen: a field the profile lacks,
    named `mapping.<column>`. (Whether the identity is left with a column depends on the
    header: `check_header` says.)"""
    by_name = fields_by_name(fields)
    return [
        FieldProblem(
            f"mapping.{column}",
            f"'{field}' is no field of the profile (its fields: {_fields_named(fields)})",
        )
        for column, field in mapping.items()
        if field is not None and field_named(by_name, field) is None
    ]


def check_header(
    header: Sequence[str],
    fields: Sequence[FieldSpec],
    *,
    mapping: ColumnMapping | None = None,
    ignore: Collection[str] = (),
) -> HeaderCheck:
    """Each column of `header`: one named in `ignore` is skipped, one in `mapping` fills the
    field named there (or is skipped, mapped to None), any other fills the field written
    identically, else the only field equal to it once case and accents are set aside.
    Problems: unknown or unnamed columns, two columns for one field, a mapping to no field or
    of a column not in the header, and a missing identity column."""
    mapping = dict(mapping or {})
    ignored = {name.strip() for name in ignore}
    by_name = fields_by_name(fields)
    exact = {spec.name: spec for spec in fields}
    loose: dict[str, list[FieldSpec]] = {}
    for field in fields:
        loose.setdefault(_loose(field.name), []).append(field)
    problems: list[FieldProblem] = []
    columns: list[ColumnMatch] = []
    filled_by: dict[str, str] = {}  # field key -> the column filling it
    for number, raw in enumerate(header, start=1):
        column = raw.strip()
        spec: FieldSpec | None = None
        match = Match.UNKNOWN
        if not column:
            match = Match.UNNAMED
            problems.append(FieldProblem(f"column {number}", "has no name in the header"))
        elif column in ignored or (column in mapping and mapping[column] is None):
            match = Match.SKIPPED
        elif (target := mapping.get(column)) is not None:
            spec, match = field_named(by_name, target), Match.MAPPED
            if spec is None:
                match = Match.UNKNOWN
                problems.append(
                    FieldProblem(column, f"is mapped to '{target}', no field of the profile")
                )
        elif column in exact:
            spec, match = exact[column], Match.EXACT
        elif len(candidates := loose.get(_loose(column), [])) == 1:
            spec, match = candidates[0], Match.LOOSE
        else:
            problems.append(
                FieldProblem(
                    column, f"matches no field of the profile (its fields: {_fields_named(fields)})"
                )
            )
        if spec is not None and spec.key in filled_by:
            match = Match.DUPLICATE
            problems.append(
                FieldProblem(
                    column, f"fills '{spec.name}', as column '{filled_by[spec.key]}' already does"
                )
            )
        elif spec is not None:
            filled_by[spec.key] = column
        columns.append(ColumnMatch(column, match, spec))
    named = {c.name for c in columns}
    problems += [
        FieldProblem(column, "is mapped but is not in the header")
        for column in mapping
        if column not in named
    ]
    identity = next(spec for spec in fields if spec.identity)
    if identity.key not in filled_by:
        problems.append(
            FieldProblem(
                identity.name, "the column identifying contacts is missing from the header"
            )
        )
    return HeaderCheck(tuple(columns), tuple(problems), identity)


def plan_columns(
    header: Sequence[str],
    fields: Sequence[FieldSpec],
    *,
    mapping: ColumnMapping | None = None,
    ignore: Collection[str] = (),
) -> ColumnPlan:
    """The plan for `header` (see `check_header`); HeaderRefused names every problem."""
    return check_header(header, fields, mapping=mapping, ignore=ignore).plan()
