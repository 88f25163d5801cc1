"""Wall-clock timing shared by the CPU benchmarks: the best of several runs after one warm-up run."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(run: Callable[[], object], repeat: int) -> float:
    """The shortest of `repeat` timed calls of `run`, after one untimed call that warms caches, lookup tables
    and lazy imports."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)
