"""Which profile field each column of an import fills, decided from the header before any row
is read. The seed product asks headers to be written exactly as the profile's field names; we
also match a header differing only in case or accents (and say so), follow an explicit mapping
of columns to fields, and skip columns the user chose to ignore. Everything wrong is named at
once. Pure: no I/O."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from contacts_shared.schema import FieldSpec
from contacts_shared.values import FieldProblem, ValuesInvalid, name_key


class HeaderRefused(ValuesInvalid):
    """The header cannot be matched to the profile's fields; each problem names its column."""


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


def _loose(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name_key(name.strip()))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def plan_columns(
    header: Sequence[str],
    fields: Sequence[FieldSpec],
    *,
    mapping: Mapping[str, str] | None = None,
    ignore: Collection[str] = (),
) -> ColumnPlan:
    """The plan for `header`: a column named in `ignore` is skipped, one in `mapping` fills the
    field named there, any other fills the field written identically, else the only field
    equal to it once case and accents are set aside. Refused: unknown or unnamed columns,
    two columns for one field, a mapping to no field, and a missing identity column."""
    mapping = dict(mapping or {})
    ignored = {name.strip() for name in ignore}
    exact = {spec.name: spec for spec in fields}
    loose: dict[str, list[FieldSpec]] = {}
    for field in fields:
        loose.setdefault(_loose(field.name), []).append(field)
    problems: list[FieldProblem] = []
    planned: list[FieldSpec | None] = []
    loose_matches: list[tuple[str, str]] = []
    filled_by: dict[str, str] = {}  # field key -> the column filling it
    for number, raw in enumerate(header, start=1):
        column = raw.strip()
        spec: FieldSpec | None = None
        if not column:
            problems.append(FieldProblem(f"column {number}", "has no name in the header"))
        elif column in ignored:
            pass
        elif column in mapping:
            spec = exact.get(mapping[column]) or next(
                (s for s in fields if name_key(s.name) == name_key(mapping[column])), None
            )
            if spec is None:
                problems.append(
                    FieldProblem(
                        column, f"is mapped to '{mapping[column]}', no field of the profile"
                    )
                )
        elif column in exact:
            spec = exact[column]
        elif len(candidates := loose.get(_loose(column), [])) == 1:
            spec = candidates[0]
            loose_matches.append((column, spec.name))
        else:
            names = ", ".join(f"'{s.name}'" for s in fields)
            problems.append(
                FieldProblem(column, f"matches no field of the profile (its fields: {names})")
            )
        if spec is not None and spec.key in filled_by:
            problems.append(
                FieldProblem(
                    column, f"fills '{spec.name}', as column '{filled_by[spec.key]}' already does"
                )
            )
            spec = None
        if spec is not None:
            filled_by[spec.key] = column
        planned.append(spec)
    for column in mapping:
        if column not in {c.strip() for c in header}:
            problems.append(FieldProblem(column, "is mapped but is not in the header"))
    identity = next(spec for spec in fields if spec.identity)
    if identity.key not in filled_by:
        problems.append(
            FieldProblem(
                identity.name, "the column identifying contacts is missing from the header"
            )
        )
    if problems:
        raise HeaderRefused(problems)
    identity_column = next(i for i, s in enumerate(planned) if s is not None and s.identity)
    return ColumnPlan(tuple(planned), identity_column, tuple(loose_matches))
