"""`fpsim demo`: the product's story in one command. The bits of 0.1; fp16 gradients underflowing and loss
scaling rescuing them; an overflowing scale backing off; each experiment in the simulator and in torch.

Invariant: the report folder is checked before any work, and every number in the report is measured in this run.
"""

from __future__ import annotations

import os
from pathlib import Path

import fpsim
from fpsim import compare as comparisons
from fpsim._terminal import console as make_console
from fpsim.explanation import explain
from fpsim.report import Report

UNDERFLOW_POLICIES = ("fp32", "fp16", "amp")
OVERFLOW_POLICIES = ("fp16", "amp")
STEPS = 150  # enough for both lessons (underflow's accuracy gap, overflow's ~18 skipped steps) in ~1 min on 2 cores
STORY = {
    "underflow": (
        "Gradients 2^16 times smaller than usual. In plain fp16 many of them fall below 2^-24 and "
        "become zero, and the model learns less. amp multiplies the loss by 2^24 before the backward pass "
        "(loss scaling), so the same gradients stay representable, then divides in fp32: it matches fp32."
    ),
    "overflow": (
        "Gradients 2^20 times larger than usual. Plain fp16 overflows to inf and the loss turns NaN for good. "
        "amp's dynamic loss scale starts at 2^16, skips each step whose gradients overflow and halves the "
        "scale, until the gradients fit; then training goes on."
    ),
}


def demo(out: str | os.PathLike = "fpsim-demo", *, device: str = "auto", steps: int = STEPS,
         file=None) -> Path:  # fmt: skip
    """Run the demo, print it, and write `out`/report.md with its figures; return the report's path."""
    from fpsim.torch import training  # checked first: the demo needs torch

    device = str(training.resolve_device(device))
    scenarios = (("underflow", UNDERFLOW_POLICIES), ("overflow", OVERFLOW_POLICIES))
    report = Report(out, "fpsim demo: mixed precision, simulated and on real hardware", argument="--out",
                    figures=[scenario for scenario, _ in scenarios])  # fmt: skip
    say = make_console(file)
    _bits(report, say)
    for number, (scenario, policies) in enumerate(scenarios, start=2):
        _scenario(report, say, number, scenario, policies, device, steps)
    path = report.write()
    say.print(f"\n[bold]Report:[/bold] {path} (figures beside it)")
    return path


def _bits(report: Report, say) -> None:
    heading = "1. The bits of 0.1 in fp32, fp16 and bf16"
    formats = ("fp32", "fp16", "bf16")
    errors = ", ".join(f"{name} by {abs(float(fpsim.round(0.1, name)) - 0.1):.2g}" for name in formats)
    text = ("0.1 has no finite binary expansion, so every format stores a neighbour of it. The fewer mantissa "
            f"bits, the farther the neighbour: {errors}.")  # fmt: skip
    explanation = explain(0.1, list(formats))
    say.rule(heading)
    say.print(text)
    say.print(explanation)
    report.section(heading, text)
    report.text(f"```text\n{explanation}\n```")


def _scenario(report: Report, say, number: int, scenario: str, policies, device: str, steps: int | None) -> None:
    heading = f"{number}. The {scenario} scenario: simulator and torch ({device}) side by side"
    say.rule(heading)
    say.print(STORY[scenario])
    comparison = comparisons.compare(scenario, policies, device=device, steps=steps, quiet=False)
    report.section(heading, STORY[scenario])
    comparison.show(say, report)
    report.data[scenario] = comparison.to_dict()
    from fpsim import plots  # matplotlib loads only when a figure is drawn

    figure = plots.simulator_vs_hardware(comparison.simulator, comparison.torch)[0]
    report.figure(scenario, figure, f"The {scenario} scenario, one row per policy: fpsim's simulator (wide blue) "
                  f"and torch on {device} (black dashed, on top)")  # fmt: skip
