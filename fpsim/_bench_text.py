"""What the bench report (fpsim.torch.bench) and its figure (fpsim.plots.bench) share without importing torch: the
schema name, the units of times and sizes, and the two tests of whether the timings can be trusted.

Invariant: one rule calls a timing unreliable everywhere: its median over its fastest repeat exceeds SPREAD_LIMIT.
"""

from __future__ import annotations

from collections.abc import Mapping

SCHEMA = "fpsim.bench/2"
SPREAD_LIMIT = 1.5  # median / fastest: above it, load on the machine moved the repeats, and ratios mean little


def milliseconds(seconds: float) -> str:
    """Seconds as milliseconds, four significant digits."""
    return f"{seconds * 1e3:.4g}"


def mebibytes(count: int) -> str:
    """Bytes as MiB, four significant digits."""
    return f"{count / 2**20:.4g}"


def spread(fastest: float, median: float) -> float:
    """How far the typical repeat lies above the fastest: median / fastest (1 on an idle machine)."""
    return median / fastest


def unreliable(fastest: float, median: float) -> str | None:
    """Why a timing cannot carry a verdict, or None when its repeats agree (spread up to SPREAD_LIMIT)."""
    ratio = spread(fastest, median)
    if ratio <= SPREAD_LIMIT:
        return None
    return f"unreliable: timings spread {ratio:.1f}× (median over fastest) — rerun on an idle machine"


def busy(environment: Mapping) -> str | None:
    """'the machine was busy (load L on N CPUs)' when the load average before the run exceeded the CPU count."""
    load, cpus = environment.get("load_average"), environment.get("cpus")
    if load is None or cpus is None or load <= cpus:
        return None
    return f"the machine was busy (load {load:g} on {cpus} CPUs)"
