"""What the benchmark scripts share: statistics, number format, the machine description, the
"busy machine" note and markdown tables. The scripts are run as files (``python
benchmarks/X.py``), so each puts this folder on ``sys.path`` and imports ``_harness``."""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

GIB = 1024**3

__all__ = ["GIB", "BenchError", "busy_note", "fmt", "host_info", "log", "markdown_table",
           "median", "percentile"]


class BenchError(RuntimeError):
    """A failure the script reports in one line (no traceback)."""


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(statistics.median(vals)) if vals else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``nan`` for no values."""
    if not values:
        return float("nan")
    vals = sorted(values)
    pos = (len(vals) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def host_info() -> dict[str, Any]:
    """The machine a benchmark ran on."""
    import psutil

    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "python": platform.python_version(),
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }


def busy_note(machine: dict[str, Any]) -> str | None:
    """A warning when the machine was busy when the run started (load above half its cores)."""
    load, cores = machine.get("loadavg_1m_start", 0), machine.get("usable_cores") or 1
    if load > 0.5 * cores:
        return (f"the machine was busy before the run (load {load} on {cores} cores): "
                "figures are noisy")
    return None


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]],
                   align: Sequence[str] | None = None) -> str:
    """A markdown table; ``align`` per column: ``l`` (default for the first) or ``r``."""
    align = align or ["l", *["r"] * (len(head) - 1)]
    sep = "|" + "".join("---|" if a == "l" else "---:|" for a in align)
    lines = ["| " + " | ".join(head) + " |", sep]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
