"""Regenerate the README's figures: `python -m fpsim.plots.gallery [FOLDER]` (default docs/gallery).

Invariant: every image comes from the public plotting API and a seeded training run, so reruns redraw
the same pictures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fpsim.plots import (
    bit_layout,
    gradient_histogram,
    number_line,
    precision_diagram,
    range_diagram,
    rounding_error,
    training_figure,
)
from fpsim.train import run, scenario

DPI = 90  # keeps every PNG well under 200 KB


def scenario_runs(name: str, steps: int = 150) -> list:
    return [run(scenario(name, policy=p, steps=steps)) for p in ("fp32", "fp16", "amp")]


def figures() -> dict:
    """File name → Figure, for every figure in the gallery."""
    runs = scenario_runs("underflow")
    fp32 = runs[0]
    return {
        "range.png": range_diagram()[0],
        "precision.png": precision_diagram()[0],
        "numberline_e4m3.png": number_line("fp8_e4m3")[0],
        "bits_0.1_fp16.png": bit_layout(0.1, "fp16")[0],
        "rounding_fp16.png": rounding_error("fp16")[0],
        "histogram.png": gradient_histogram(fp32.gradient_sample, "fp16", scale=2.0**16)[0],
        "training_underflow.png": training_figure(runs)[0],
        "training_overflow.png": training_figure(scenario_runs("overflow", steps=100))[0],
    }


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv if argv is not None else sys.argv[1:])[0] if (argv or sys.argv[1:]) else "docs/gallery")
    folder.mkdir(parents=True, exist_ok=True)
    for name, figure in figures().items():
        figure.savefig(folder / name, dpi=DPI)
        print(f"wrote {folder / name} ({(folder / name).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
