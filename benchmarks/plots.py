"""Plots from ``benchmarks/results.json``: deliveries per second and the worker's peak memory
against subscriber count, for email and SMS, PubWatch beside its plain-loop baseline.

    uv run python -m benchmarks.plots        (benchmarks.run calls it after a run)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no screen here
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "results.json"
RATE_PLOT = HERE / "fanout_rate.png"
MEMORY_PLOT = HERE / "fanout_memory.png"


def _series(sizes: dict[str, Any]) -> tuple[list[int], list[float], list[float], list[float]]:
    counts = sorted(int(n) for n in sizes)
    notify = [sizes[str(n)]["notify"]["deliveries_per_s"] for n in counts]
    plain = [sizes[str(n)]["plain_loop"]["deliveries_per_s"] for n in counts]
    memory = [sizes[str(n)]["notify"].get("worker_peak_rss_mb", float("nan")) for n in counts]
    return counts, notify, plain, memory


def fanout_sizes(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Channel → {subscriber count → figures}, for the fan-out benchmarks present."""
    benchmarks = results.get("benchmarks", {})
    found = {}
    if "sizes" in benchmarks.get("fanout_email", {}):
        found["email"] = benchmarks["fanout_email"]["sizes"]
    if "unlimited" in benchmarks.get("fanout_sms", {}):
        found["sms"] = benchmarks["fanout_sms"]["unlimited"]
    return found


def draw(results: dict[str, Any]) -> list[Path]:
    channels = fanout_sizes(results)
    if not channels:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    for channel, sizes in channels.items():
        counts, notify, plain, _ = _series(sizes)
        ax.plot(counts, notify, marker="o", label=f"PubWatch {channel}")
        ax.plot(counts, plain, marker="x", linestyle="--", label=f"plain loop {channel}")
        prebuilt = [sizes[str(n)].get("prebuilt_loop", {}).get("deliveries_per_s") for n in counts]
        if all(rate is not None for rate in prebuilt):
            label = f"prebuilt-bytes loop {channel}"
            ax.plot(counts, prebuilt, marker="+", linestyle=":", label=label)
    ax.set(xscale="log", xlabel="subscribers", ylabel="deliveries per second")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Fan-out rate ({results.get('mode', '?')} run, {results.get('date', '')})")
    ax.legend(loc="center right", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(RATE_PLOT, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for channel, sizes in channels.items():
        counts, _, _, memory = _series(sizes)
        ax.plot(counts, memory, marker="o", label=f"notify worker, {channel}")
    ax.set(xscale="log", xlabel="subscribers", ylabel="peak RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Notify worker peak memory")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(MEMORY_PLOT, dpi=110)
    plt.close(fig)
    return [RATE_PLOT, MEMORY_PLOT]


def main() -> int:
    if not RESULTS_FILE.exists():
        print(f"{RESULTS_FILE} not found: run `uv run python -m benchmarks.run` first")
        return 1
    for path in draw(json.loads(RESULTS_FILE.read_text())):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
