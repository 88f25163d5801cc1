"""Regenerate the README's figures: `python -m fpsim.plots.gallery [FOLDER]` (default docs/gallery).

Invariant: every image comes from the public plotting API and seeded training runs, so reruns redraw the same
pictures; each is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpsim._files import atomic_write, check_output_path
from fpsim.plots import (
    accumulation_error,
    bit_layout,
    block_diagram,
    block_error,
    dot_error_curves,
    gradient_histogram,
    number_line,
    precision_diagram,
    range_diagram,
    rounding_error,
    training_figure,
)
from fpsim.plots.accumulation import KS
from fpsim.plots.blocks import hidden_gradient, hidden_source, outlier_example
from fpsim.train import run, scenario

DPI = 90  # keeps every PNG well under 200 KB


def scenario_runs(name: str, steps: int = 150) -> list:
    return [run(scenario(name, policy=p, steps=steps)) for p in ("fp32", "fp16", "amp")]


def figures() -> dict:
    """File name → Figure, for every figure in the gallery."""
    runs = scenario_runs("underflow")
    return {
        "range.png": range_diagram()[0],
        "precision.png": precision_diagram()[0],
        "numberline_e4m3.png": number_line("fp8_e4m3")[0],
        "bits_0.1_fp16.png": bit_layout(0.1, "fp16")[0],
        "rounding_fp16.png": rounding_error("fp16")[0],
        "histogram.png": gradient_histogram(runs[0], "fp16", scale=2.0**16)[0],
        "training_underflow.png": training_figure(runs)[0],
        "training_overflow.png": training_figure(scenario_runs("overflow", steps=100))[0],
        "tensorcore.png": accumulation_error(KS, dot_error_curves(KS))[0],
        "blocks_mxfp4.png": block_diagram(outlier_example(), "mxfp4")[0],
        "blocks_error.png": block_error(hidden_gradient("underflow"), source=hidden_source("underflow"))[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpsim.plots.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="docs/gallery", help="where to write (default: docs/gallery)")
    folder = Path(parser.parse_args(argv).folder)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = figures()
    for name in drawn:
        check_output_path(folder / name, suffixes=(".png",), argument="FOLDER")
    for name, figure in drawn.items():
        atomic_write(folder / name, lambda f, fig=figure: fig.savefig(f, format="png", dpi=DPI), binary=True,
                     argument="FOLDER")  # fmt: skip
        print(f"wrote {folder / name} ({(folder / name).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
