"""Shared output for benchmarks: percentiles, a JSON file, a Markdown summary and a small SVG plot.

The plot is hand-written SVG so benchmarks need nothing beyond the project's own dependencies."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with 20 samples p99 is the largest, which is what a p99 target must survive."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def svg_cdf(series: dict[str, list[float]], xlabel: str, width: int = 640, height: int = 320) -> str:
    """Empirical CDFs on a log-free linear axis; one line per series."""
    pad_l, pad_b, pad_t, pad_r = 60, 45, 20, 40
    xmax = max((max(v) for v in series.values() if v), default=1.0) * 1.05 or 1.0
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(v: float) -> float:
        return pad_l + plot_w * v / xmax

    def y(p: float) -> float:
        return pad_t + plot_h * (1 - p)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
        f'<line x1="{pad_l}" y1="{y(0)}" x2="{pad_l + plot_w}" y2="{y(0)}" stroke="black"/>',
        f'<line x1="{pad_l}" y1="{y(0)}" x2="{pad_l}" y2="{y(1)}" stroke="black"/>',
    ]
    for i in range(6):
        value = xmax * i / 5
        parts.append(f'<text x="{x(value):.1f}" y="{y(0) + 16}" text-anchor="middle">{value:.3g}</text>')
        parts.append(f'<text x="{pad_l - 6}" y="{y(i / 5) + 4:.1f}" text-anchor="end">{i * 20}%</text>')
    parts.append(f'<text x="{pad_l + plot_w / 2}" y="{height - 8}" text-anchor="middle">{xlabel}</text>')
    for index, (name, values) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        ordered = sorted(values)
        points = " ".join(f"{x(v):.1f},{y((k + 1) / len(ordered)):.1f}" for k, v in enumerate(ordered))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<text x="{pad_l + plot_w - 8}" y="{y(0) - 10 - 16 * index}" text-anchor="end" '
            f'fill="{color}">{name}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def write(name: str, data: dict[str, Any], markdown: str, svg: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        **data,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    if svg:
        (RESULTS / f"{name}.svg").write_text(svg)
        markdown += f"\n![{name}]({name}.svg)\n"
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
    return RESULTS / f"{name}.md"
