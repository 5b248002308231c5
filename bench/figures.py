"""Figures the benches print: percentiles of latencies."""

from __future__ import annotations

import statistics


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def p50_p99(latencies_ms: list[float]) -> str:
    p50, p99 = statistics.median(latencies_ms), percentile(latencies_ms, 0.99)
    return f"p50 {p50:9.2f} ms   p99 {p99:9.2f} ms"
