"""An import's counts, folded exactly from contact-svc's per-row outcomes. Pure: no I/O.

Rows go to contact-svc numbered per partition (0, 1, 2, ...) by the order they appear in the
file, so a row sent twice carries the same number. Outcomes come back in that order per
partition, possibly repeated after a redelivery; an import keeps, per partition, the highest
number counted (the watermark) and counts only what lies beyond it (ADR 10)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from contacts_shared.commands import RowOutcome


@dataclass
class Progress:
    """What an import has done so far: rows sent per partition (known once sending ends),
    the watermark per partition, and the outcome counts up to the watermarks."""

    sent: dict[int, int] = field(default_factory=dict)  # partition -> rows sent to it
    counted: dict[int, int] = field(default_factory=dict)  # partition -> rows counted
    outcomes: Counter[str] = field(default_factory=Counter)

    def fold(self, partition: int, rows: Iterable[tuple[int, int, RowOutcome]]) -> bool:
        """Count the rows beyond the partition's watermark, in order; False if all were
        copies. A row past a gap is counted too (rows are never skipped on the way here, so a
        gap would mean a lost result, and counting on is better than waiting forever)."""
        watermark = self.counted.get(partition, 0)
        moved = False
        for sequence, _line, outcome in rows:
            if sequence < watermark:
                continue  # a copy of a row counted already
            self.outcomes[outcome.value] += 1
            watermark, moved = sequence + 1, True
        self.counted[partition] = watermark
        return moved

    @property
    def rows_counted(self) -> int:
        return sum(self.counted.values())

    def all_counted(self) -> bool:
        """Every row sent has its outcome (once sending has ended and said how many)."""
        return all(self.counted.get(p, 0) >= n for p, n in self.sent.items())
