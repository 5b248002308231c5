"""Process-wide settings of a service's Python runtime."""

from __future__ import annotations

import gc

# Young objects collected once this many have been allocated (CPython's default: 700). A batch
# of records keeps tens of thousands of objects alive while it is handled, and every young
# collection walks them again: at the default, collection took a tenth of contact-svc's CPU
# under webhook load (perf), at 50,000 a few percent.
YOUNG_GENERATION_THRESHOLD = 50_000


def settle_heap() -> None:
    """Once a service has started: what it holds by then (modules, models, clients) lives as
    long as the process, so the collector stops walking it (`gc.freeze`), and it collects the
    young generation less often. Reference cycles are still collected, later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
