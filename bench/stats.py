"""The arithmetic of the report: percentiles, rates and ratios (pure, unit-tested)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in [0, 1]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return float(ordered[min(rank, len(ordered)) - 1])


def summary(latencies_s: Sequence[float], elapsed_s: float, errors: int = 0) -> dict[str, Any]:
    """Requests/s and latency percentiles (milliseconds) of one load run."""
    count = len(latencies_s)
    return {
        "requests": count,
        "errors": errors,
        "elapsed_s": round(elapsed_s, 3),
        "rps": round(count / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "p50_ms": round(percentile(latencies_s, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies_s, 0.99) * 1000, 3),
        "max_ms": round(max(latencies_s, default=0.0) * 1000, 3),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator` to 3 places, or None when the denominator is 0."""
    return round(numerator / denominator, 3) if denominator else None


def compare(veriflow: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """veriflow / baseline for throughput and latency (throughput: higher is better for veriflow)."""
    return {
        "rps": ratio(veriflow["rps"], baseline["rps"]),
        "p50": ratio(veriflow["p50_ms"], baseline["p50_ms"]),
        "p99": ratio(veriflow["p99_ms"], baseline["p99_ms"]),
    }


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)
