"""Run every benchmark on this machine and write ``benchmarks/results.json``.

    uv run python -m benchmarks.run [--quick] [--only NAME ...]

Each benchmark module has ``run(quick) -> dict`` that measures PubWatch and its baseline in
the same run (the machines are noisy, so figures are ratios against that baseline), and
``table_rows(figures)`` for the summary table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.plots import draw

BENCHMARKS = {
    "ingest": "benchmarks.ingest_cycle",
    "events_api": "benchmarks.events_api",
    "web_pages": "benchmarks.web_pages",
    "fanout_email": "benchmarks.fanout_email",
    "fanout_sms": "benchmarks.fanout_sms",
    "digest_run": "benchmarks.digest_run",
}
RESULTS_FILE = Path(__file__).resolve().parent / "results.json"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def print_table(results: dict[str, Any]) -> None:
    """One line per figure, from each benchmark module's ``table_rows``."""
    for name, figures in results["benchmarks"].items():
        if "error" in figures:
            print(f"{name:<13} FAILED: {figures['error']}")
            continue
        for row in importlib.import_module(BENCHMARKS[name]).table_rows(figures):
            print(f"{row[0]:<13} {row[1]:<30} {row[2]:<46} {row[3]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under 2 minutes)")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "benchmarks": {},
    }
    failed = False
    for name in names:
        module_name = BENCHMARKS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            print(f"{name}: skipped ({module_name} is not there)", file=sys.stderr)
            continue
        print(f"==> {name}", flush=True)
        started = time.monotonic()
        try:
            figures = module.run(args.quick)
        except Exception as exc:
            failed = True
            figures = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
        figures["elapsed_s"] = round(time.monotonic() - started, 1)
        results["benchmarks"][name] = figures
    # JSON keys are strings; round-trip so the plots read what the file holds.
    results = json.loads(json.dumps(results, default=str))
    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {RESULTS_FILE}")
    for path in draw(results):
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
