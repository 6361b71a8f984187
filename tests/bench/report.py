"""Benchmark report writer: one JSON file per benchmark in ``bench-results/``.

Format: ``{"name": ..., "metrics": {"<metric>": {"value": x, "unit": "ms",
"target": y, "better": "lower"}}, "notes": {...}}``.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(
    os.environ.get("BENCH_RESULTS_DIR", Path(__file__).resolve().parents[2] / "bench-results")
)


def metric(
    value: float, unit: str, better: str = "lower", target: float | None = None
) -> dict[str, Any]:
    m: dict[str, Any] = {"value": round(value, 6), "unit": unit, "better": better}
    if target is not None:
        m["target"] = target
    return m


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(
    name: str, metrics: dict[str, dict[str, Any]], notes: dict[str, Any] | None = None
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    body: dict[str, Any] = {"name": name, "metrics": metrics}
    if notes:
        body["notes"] = notes
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(
        f"\n[bench] {name}: "
        + ", ".join(f"{k}={v['value']}{v['unit']}" for k, v in metrics.items())
    )
    return path
