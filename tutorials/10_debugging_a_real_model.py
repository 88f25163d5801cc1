# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 10. Debugging a real model
# *Goal:* find which tensors of a torch model overflow or underflow in each format, check the finding by
# hand, pick a loss scale from it, and locate the layer that breaks a model.
#
# *Time:* about 12 minutes
#
# You need tutorials 6 (loss scaling) and 9 (bf16, fp8). The tool is `fpsim.torch.audit`: it runs one training
# step of your model in fp32, records every parameter, activation and gradient, and rounds each one to each
# format with fpsim's codec, counting what happens.

# %%
import copy
import os
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import fpsim
import fpsim.torch
from fpsim.torch import models

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
console = Console(width=120)  # rich renders the audit's tables

# %% [markdown]
# ## A real model and one audit
# fpsim bundles three small torch models with a batch of data: `digits-mlp`, `digits-cnn` and
# `tiny-transformer`. Take the ConvNet and audit one training step in fp16, bf16 and fp8 e4m3.

# %%
for name, description in models.MODELS.items():
    print(f"{name}: {description}")
example = models.load("digits-cnn")
formats = ("fp16", "bf16", "fp8_e4m3")
result = fpsim.torch.audit(example.model, example.batch, example.loss_fn, formats=formats, target=example.target)
console.print(result.table(rows=5))

# %% [markdown]
# Each format gets its five worst tensors. `act` is a layer's output, `act-grad` the gradient flowing back
# into it, `grad` a parameter's gradient. Read it as a doctor would:
#
# - **fp16**: nothing overflows, but the small activation gradients near the input (`relu1`, `conv1`) are
#   partly subnormal, with bits lost.
# - **bf16**: no overflow, no flush; only a relative rounding error of up to 2^-8 everywhere (tutorial 9).
# - **fp8 e4m3**: the activation gradients are wiped out: they sit far below e4m3's smallest subnormal 2^-9.
#
# Each of those readings, as a check on the audit's records:

# %%
by_name = {(t.kind, t.name): t.formats for t in result.tensors}
assert not any(t.formats["fp16"].overflow for t in result.tensors)
assert by_name["activation gradient", "relu1"]["fp16"].percent("subnormal") > 10
assert not any(t.formats["bf16"].overflow or t.formats["bf16"].flushed for t in result.tensors)
assert max(t.formats["bf16"].error_max for t in result.tensors if t.formats["bf16"].error_max) <= 2.0**-8
assert by_name["activation gradient", "relu1"]["fp8_e4m3"].percent("flushed") > 90

# %% [markdown]
# ## Check one finding by hand
# Never trust a tool blindly. Recount without the codec, from the format's thresholds alone, on gradients you
# collect yourself. For a format with smallest subnormal s, smallest normal n, largest value M and gap G
# below M, round to nearest even sends a nonzero |g| to
#
# - zero when |g| ≤ s/2 (exactly s/2 is a tie between 0 and s; 0 is the even one);
# - a subnormal when s/2 < |g| < n − s/2 (from n − s/2 up it rounds to n, again the even neighbour);
# - overflow when |g| > M + G/2, or exactly M + G/2 when M's significand is odd (IEEE formats; e4m3's is even,
#   so its tie stays at M).
#
# Run the same step on a copy of the model, with hooks that keep every parameter gradient and the gradient of
# every layer's output (what the audit calls `grad` and `act-grad`).

# %%
model = copy.deepcopy(example.model)
collected = {}  # (kind, name) -> gradient


def keep_output_gradient(name):
    def hook(module, args, output):
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda g: collected.setdefault(("activation gradient", name), g.detach().clone()))

    return hook


handles = [m.register_forward_hook(keep_output_gradient(n)) for n, m in model.named_modules() if n]
example.loss_fn(model(example.batch), example.target).backward()
for handle in handles:
    handle.remove()
collected.update({("gradient", name): p.grad for name, p in model.named_parameters()})


def count_by_thresholds(values: np.ndarray, fmt: str) -> tuple[int, int, int, int]:
    """(total, flushed, subnormal, overflow) of values rounded to nearest even in fmt, from thresholds alone."""
    f = fpsim.get_format(fmt)
    s, n, top = f.smallest_subnormal, f.smallest_normal, f.max
    gap = 2.0 ** (np.floor(np.log2(top)) - f.nmant)  # G, the spacing just below M
    odd_max = (top / gap) % 2 == 1  # M's integer significand: 2047 for fp16 (odd), 14 for e4m3 (even)
    m = np.abs(values.astype(np.float64))  # every threshold and comparison below is exact in float64
    overflow = (m > top + gap / 2) | ((m == top + gap / 2) & odd_max)
    return (values.size, int(np.sum((m > 0) & (m <= s / 2))), int(np.sum((m > s / 2) & (m < n - s / 2))),
            int(np.sum(overflow)))  # fmt: skip


audited = {(t.kind, t.name): t for t in result.tensors if t.kind in ("gradient", "activation gradient")}
assert set(audited) == set(collected)  # the audit saw the same gradient tensors as our hooks
for key, grad in collected.items():
    for fmt in formats:
        c = audited[key].formats[fmt]
        assert (c.total, c.flushed, c.subnormal, c.overflow) == count_by_thresholds(grad.numpy(), fmt)
print("audit and threshold count agree on", len(collected), "gradient tensors ×", len(formats), "formats")

# %% [markdown]
# ## Choose a loss scale
# For each format the audit proposes the largest power of two S that keeps the largest gradient element below
# max / 2 (a headroom of 2 for the next steps, which may be larger), and counts the gradient elements that S
# rescues from flushing to zero. Derive S yourself from the gradients you collected, then apply it.

# %%
for fmt, scale in result.loss_scales.items():
    print(f"{fmt:9} largest gradient {scale.largest:.3g}  recommended 2^{np.log2(scale.recommended):.0f}  "
          f"flushed {scale.flushed_unscaled} → {scale.flushed_scaled}")  # fmt: skip

largest = max(g.abs().max().item() for g in collected.values())
largest_parameter_gradient = max(g.abs().max().item() for (kind, _), g in collected.items() if kind == "gradient")
print(f"largest gradient we collected: {largest:.4g} (parameter gradients alone: {largest_parameter_gradient:.4g})")
for fmt in ("fp16", "fp8_e4m3"):
    fmt_max = fpsim.get_format(fmt).max
    k = 0  # the largest k with 2^k · largest ≤ max / 2: powers of two scale exactly, so each test is exact
    while 2.0 ** (k + 1) * largest <= fmt_max / 2:
        k += 1
    while 2.0**k * largest > fmt_max / 2:
        k -= 1
    S = 2.0**k
    assert result.loss_scales[fmt].recommended == S  # the audit's S is ours
    before = [count_by_thresholds(g.numpy(), fmt) for g in collected.values()]
    after = [count_by_thresholds(g.numpy().astype(np.float64) * S, fmt) for g in collected.values()]
    flushed_before, flushed_after = sum(c[1] for c in before), sum(c[1] for c in after)
    print(f"{fmt}: S = 2^{k}; gradient elements flushed {flushed_before} unscaled, {flushed_after} times S")
    assert sum(c[3] for c in after) == 0  # S fits: nothing overflows
    assert (flushed_before, flushed_after) == (result.loss_scales[fmt].flushed_unscaled,
                                               result.loss_scales[fmt].flushed_scaled)  # fmt: skip
assert flushed_after < flushed_before / 10  # in e4m3, the scale rescues most of them

# %% [markdown]
# The figure: the gradients against each format's bands, as computed and times the recommended scale, for the
# formats where something flushes.

# %%
fig, _ = result.figure()
fig.savefig(OUT / "10_audit_gradients.png", dpi=70)
fig

# %% [markdown]
# ## Find the layer that breaks
# Now break the model on purpose, the way a bad initialisation or an unnormalised input does: multiply the
# first convolution's weights by 10^5. Which tensors overflow fp16 now, and does bf16 survive?

# %%
broken = models.load("digits-cnn")
with torch.no_grad():
    broken.model.conv1.weight *= 1e5
broken_result = fpsim.torch.audit(broken.model, broken.batch, broken.loss_fn, formats=("fp16", "bf16"),
                                  target=broken.target)  # fmt: skip
overflowing = [t for t in broken_result.tensors if t.formats["fp16"].overflow]
for t in overflowing:
    overflow = t.formats["fp16"].percent("overflow")
    print(f"{t.kind:9} {t.name:14} max |x| {t.nonzero_max:.3g}  fp16 overflow {overflow:.1f}%")
first = overflowing[0]  # execution order: the first tensor fp16 cannot hold

# %% [markdown]
# The first tensor that fp16 cannot hold is the one to fix; everything after it inherits the problem. Check
# the diagnosis independently: the first convolution's output, computed in fp32, exceeds 65504.

# %%
with torch.no_grad():
    conv1_out = broken.model.conv1(broken.batch)
print(f"first overflow: {first.kind} {first.name}; conv1's output reaches {conv1_out.abs().max().item():.3g}")
assert broken.model.conv1.weight.abs().max().item() < fpsim.FP16.max  # the weights themselves still fit
assert conv1_out.abs().max().item() > fpsim.FP16.max  # their output does not
assert (first.kind, first.name) == ("activation", "conv1")
assert not any(t.formats["bf16"].overflow for t in broken_result.tensors)  # bf16's range holds it all
assert broken_result.first_nonfinite is None  # in fp32 nothing is inf or NaN yet: only the narrow format breaks

# %% [markdown]
# So the fixes are: bring conv1's weights (or the input) back to a sane scale, or train this layer in bf16.
# The same audit runs from the command line, with JSON and the figure as files:
#
# ```bash
# fpsim audit --model digits-cnn -f fp16,bf16,fp8_e4m3 --rows 5 --json audit.json --plot audit.png
# ```
#
# **Try it.** Audit `digits-mlp` in fp16 only. Which parameter gradient flushes most? Look at where that
# parameter sits in the model (`print(models.load("digits-mlp").model)`) and explain why its flushed
# gradients do no harm.

# %%
# Solution: the first Linear's bias. A BatchNorm follows that Linear and subtracts the batch mean, so any
# constant added before it (the bias) cancels: its gradient is zero up to rounding, about 1e-8 here.
mlp = models.load("digits-mlp")
mlp_result = fpsim.torch.audit(mlp.model, mlp.batch, mlp.loss_fn, formats=("fp16",), target=mlp.target)
worst = max((t for t in mlp_result.tensors if t.kind == "gradient"), key=lambda t: t.formats["fp16"].flushed)
print(f"{worst.name}: {worst.formats['fp16'].percent('flushed'):.0f}% flushed, largest |g| {worst.nonzero_max:.2g}")
print(mlp.model)
assert worst.name == "linears.0.bias"
assert worst.nonzero_max < 1e-6  # tiny compared with the other gradients (about 0.1)

# %% [markdown]
# ## Recap
# - `fpsim.torch.audit(model, batch, loss_fn, formats=..., target=...)` runs one fp32 step and tells, per
#   tensor and format, what overflows, turns subnormal or flushes to zero; `table()` ranks the worst.
# - Its counts match a recount from each format's thresholds alone, on gradients collected with our own hooks;
#   its loss scale matches one derived from those gradients.
# - `loss_scales[fmt].recommended` is the largest power of two that keeps the largest gradient under max / 2.
# - To debug a broken model, read the tensors in execution order: the first one a format cannot hold is the
#   layer to fix (here, conv1 with its weights × 10^5); bf16's range absorbed it where fp16 overflowed.
#
# That is the last tutorial. `fpsim tutorial` lists all ten.
