"""IEEE 754 exception counts for array roundings, per call and accumulated over a `with track_flags()` block.

Invariant: each count is a number of elements, so counts from separate calls add up exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields

FLAG_DESCRIPTIONS = {
    "total": "elements rounded",
    "inexact": "the stored value differs from the input",
    "overflow": "the input lay beyond the format's finite range",
    "underflow": "the result is tiny (below the smallest normal, detected after rounding) and inexact",
    "flushed_to_zero": "a nonzero input became ±0 (a subset of underflow)",
    "subnormal": "the result is a nonzero subnormal",
    "nan": "the result is NaN",
    "invalid": "an operation had no defined result (0/0, inf - inf, 0·inf, sqrt of a negative): NaN",
    "divide_by_zero": "a finite nonzero number was divided by zero: ±inf",
}


@dataclass
class Flags:
    """How many elements raised each IEEE exception. Add two with `+`; `str()` summarises."""

    total: int = 0
    inexact: int = 0
    overflow: int = 0
    underflow: int = 0
    flushed_to_zero: int = 0
    subnormal: int = 0
    nan: int = 0
    invalid: int = 0
    divide_by_zero: int = 0

    def __iadd__(self, other: Flags) -> Flags:
        for name, count in asdict(other).items():
            setattr(self, name, getattr(self, name) + count)
        return self

    def __add__(self, other: Flags) -> Flags:
        total = Flags(**asdict(self))
        total += other
        return total

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def fraction(self, name: str) -> float:
        """The share of elements that raised flag `name` (0.0 when nothing was rounded)."""
        if name not in FLAG_DESCRIPTIONS:
            raise ValueError(f"name must be one of {', '.join(FLAG_DESCRIPTIONS)}; got {name!r}")
        return getattr(self, name) / self.total if self.total else 0.0

    def __str__(self) -> str:
        counts = [f"{getattr(self, f.name)} {f.name}" for f in fields(self)[1:] if getattr(self, f.name)]
        return f"{self.total} rounded: " + (", ".join(counts) if counts else "all exact")


_ACTIVE: ContextVar[tuple[Flags, ...]] = ContextVar("fpsim_flag_trackers", default=())


@contextmanager
def track_flags() -> Iterator[Flags]:
    """Accumulate the flags of every rounding inside the block; nested blocks all see inner roundings."""
    tracker = Flags()
    token = _ACTIVE.set((*_ACTIVE.get(), tracker))
    try:
        yield tracker
    finally:
        _ACTIVE.reset(token)


@contextmanager
def suspended() -> Iterator[None]:
    """Roundings inside do not count: for helpers such as next_up or explain that round to answer a query."""
    token = _ACTIVE.set(())
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def tracking() -> bool:
    """Whether some `track_flags` block is open, so that roundings must count their flags."""
    return bool(_ACTIVE.get())


def report(flags: Flags) -> None:
    """Add one call's flags to every open `track_flags` block."""
    for tracker in _ACTIVE.get():
        tracker += flags
