# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 9. Beyond FP16
# *Goal:* weigh bf16's range against fp16's precision, see what TF32 does to an fp32 matmul, and make fp8
# work with per-tensor scaling, including delayed scaling from an amax history; then fake-quantize a torch
# model to fp8.
#
# *Time:* about 15 minutes
#
# You need tutorials 2, 3 and 6 (range, precision, loss scaling).

# %%
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import fpsim
import fpsim.torch
from fpsim import plots, train

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)

# %% [markdown]
# ## BF16: fp32's range, fewer bits
# bf16 is the top half of an fp32: the same 8 exponent bits, but only 7 stored mantissa bits. fp16 spends
# its 16 bits the other way: 5 exponent bits, 10 mantissa bits.

# %%
for name in ("fp32", "fp16", "bf16"):
    f = fpsim.get_format(name)
    eps = f"2^{np.log2(f.eps):.0f}"
    print(f"{name}: e{f.nexp}m{f.nmant}, max {f.max:.4g}, smallest normal {f.smallest_normal:.3g}, eps {eps}")
BF16, FP16, FP32 = fpsim.BF16, fpsim.FP16, fpsim.FP32
assert BF16.emin == FP32.emin  # the same smallest normal, 2^-126
assert BF16.max > 1e38 > FP16.max  # the same order of magnitude of largest value
assert BF16.eps == 8 * FP16.eps  # 3 fewer mantissa bits: gaps 8 times wider
for value in (1.5, -3.25, 2.0**-100):  # a bf16 number's code is the top 16 bits of its fp32 code
    assert fpsim.encode(value, "bf16") == fpsim.encode(value, "fp32") >> 16

fig, _ = plots.range_diagram(["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2"])
fig.savefig(OUT / "09_range.png", dpi=80)
fig

# %% [markdown]
# What that costs: rounding to nearest errs by at most half a gap, a relative error of u = 2^-p
# (p = 11 for fp16, 8 for bf16). Measure the worst case on a million random values.

# %%
x = rng.uniform(1, 2, 1_000_000) * 2.0 ** rng.integers(-10, 10, 1_000_000)  # inside both formats' normal range
for name, p in (("fp16", 11), ("bf16", 8)):
    worst = np.max(np.abs(fpsim.round(x, name) - x) / x)
    print(f"{name}: worst relative error {worst:.3g}, bound 2^-{p} = {2.0**-p:.3g}")
    assert 0.99 * 2.0**-p < worst <= 2.0**-p  # the bound is reached and never passed

# %% [markdown]
# What it buys: gradients 2^16 times smaller than usual (tutorial 6) are all normal numbers in bf16, so bf16
# needs no loss scaling. The price is precision: 1 + 2^-8 is already 1 in bf16.

# %%
gradients = np.array(train.run(train.scenario("underflow", policy="fp32", steps=5)).gradient_sample)
for name in ("fp16", "bf16"):
    bands = plots.gradient_bands(gradients, name)
    print(f"{name}: flushed {100 * bands['flush']:.1f}%, subnormal {100 * bands['subnormal']:.1f}%")
assert plots.gradient_bands(gradients, "fp16")["flush"] > 0.5
assert plots.gradient_bands(gradients, "bf16")["flush"] == plots.gradient_bands(gradients, "bf16")["subnormal"] == 0
assert fpsim.add(1.0, 2.0**-8, "bf16") == 1.0  # a tie, to the even neighbour 1
assert fpsim.add(1.0, 2.0**-8, "fp16") == 1.0 + 2.0**-8

# %% [markdown]
# ## TF32: an fp32 matmul with 10-bit inputs
# On NVIDIA GPUs since Ampere, an fp32 matmul may run on Tensor Cores in TF32: each input keeps only 10
# mantissa bits (fp16's precision, fp32's range), products are summed in fp32. The result is an fp32 tensor,
# so nothing in your code says it happened. *How* the 13 low bits go differs by chip. The A100 truncates
# them (toward zero): fpsim's matrix-unit model `a100_tf32`. fpsim's accumulation model `tf32` rounds them to
# nearest instead, as the Hopper model `h100_tf32` does. Compare both with a true fp32 matmul, all against the
# exact float64 product.

# %%
a, b = rng.normal(size=(64, 256)), rng.normal(size=(256, 64))
exact = a @ b
models = ("fp32", "tf32", "a100_tf32")
errors = {m: np.median(np.abs(fpsim.matmul(a, b, model=m) - exact) / np.abs(exact)) for m in models}
print("median relative error:", {m: f"{e:.2g}" for m, e in errors.items()})
assert fpsim.TF32.nmant == FP16.nmant  # fp16's precision
assert fpsim.TF32.emin == FP32.emin  # fp32's range
assert 500 * errors["fp32"] < errors["tf32"] < 2.0**-10  # about a thousand times fp32's; within tf32's eps
assert errors["a100_tf32"] > 2 * errors["tf32"]  # truncation errs up to a whole ulp, always toward zero
# The two input treatments, by hand on one value: 1 + 2^-11 + 2^-12 lies above the midpoint of 1 and 1 + 2^-10.
value = 1 + 2.0**-11 + 2.0**-12
assert fpsim.round(value, "tf32") == 1 + 2.0**-10  # rounded to nearest: up
assert fpsim.round(value, "tf32", rounding="toward_zero") == 1.0  # truncated: down

# %% [markdown]
# In torch the switch is `torch.backends.cuda.matmul.allow_tf32` (off by default since torch 1.12, for
# matmuls) or `torch.set_float32_matmul_precision("high")`. On a GPU, measure it:

# %%
if torch.cuda.is_available():
    ta, tb = (torch.tensor(m, dtype=torch.float32, device="cuda") for m in (a, b))
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        measured = {}
        for allowed in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = allowed
            product = (ta @ tb).double().cpu().numpy()
            measured[allowed] = np.median(np.abs(product - exact) / np.abs(exact))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    print(f"GPU median relative error: TF32 off {measured[False]:.2g}, on {measured[True]:.2g}")
    assert measured[False] < errors["tf32"] / 10  # fp32: far below tf32's error
    assert measured[True] < 1.5 * errors["a100_tf32"]  # allowed or not, no worse than truncated tf32 inputs
    took_effect = measured[True] > 10 * measured[False]
    print("TF32 took effect" if took_effect else "cuBLAS kept fp32 here (no TF32 kernel for this GPU or shape)")
else:
    print("No CUDA here: TF32 exists only on NVIDIA GPUs (Ampere and later); the model above is what it does.")

# %% [markdown]
# ## FP8: two formats, and a scale for every tensor
# fp8 comes in two flavours. e4m3 has more precision and little range (max 448); e5m2 has more range and
# less precision. The usual recipe: e4m3 for weights and activations, e5m2 for gradients.

# %%
E4M3, E5M2 = fpsim.FP8_E4M3, fpsim.FP8_E5M2
for f in (E4M3, E5M2):
    binades = np.log2(f.max / f.smallest_subnormal)
    print(f"{f.name}: max {f.max:g}, smallest subnormal 2^{np.log2(f.smallest_subnormal):.0f}, "
          f"eps 2^{np.log2(f.eps):.0f}, {binades:.1f} binades")  # fmt: skip
assert (E4M3.max, E5M2.max) == (448, 57344)
assert E4M3.eps == E5M2.eps / 2

# %% [markdown]
# With only 18 binades, e4m3 cannot hold a tensor "as is" unless its values happen to sit between 2^-9 and 448.
# *Per-tensor scaling* multiplies the tensor by a power of two S chosen from its largest magnitude (amax), so
# that amax lands just under the format's max; after the fp8 matmul, the result is divided by S again. See it
# on an activation tensor with heavy tails, whose amax (printed below) is far above 448. Out-of-range values
# saturate to 448 here, as torch 2.13's e4m3fn cast does (torch 2.11 and older give NaN instead):

# %%
activations = rng.standard_t(3, 100_000) * 150  # heavy tails, as real activations have
amax = np.abs(activations).max()


def fp8_cast(values: np.ndarray, fmt, scale: float = 1.0):
    """Round values * scale to fmt (saturating, as torch 2.13 does), scale back; and the rounding's IEEE flags."""
    rounded, flags = fpsim.round(values * scale, fmt, overflow="saturate", flags=True)
    return rounded / scale, flags


S = 2.0 ** np.floor(np.log2(E4M3.max / amax))
print(f"amax {amax:.0f}: S = 2^{np.log2(S):.0f}")
for label, scale in (("unscaled", 1.0), (f"S = 2^{np.log2(S):.0f}", S)):
    back, flags = fp8_cast(activations, "e4m3", scale)
    relative = np.abs(back - activations) / np.abs(activations)
    print(f"{label:9}: saturated {flags.overflow:5}, flushed {flags.flushed_to_zero:3}, "
          f"median relative error {np.median(relative):.3g}")  # fmt: skip
    assert flags.overflow == (0 if scale == S else np.count_nonzero(np.abs(activations) > 464))  # past 448's tie
assert amax * S <= E4M3.max < 2 * amax * S
assert amax > E4M3.max  # a tensor too large for e4m3 ...
assert S < 1  # ... so the scale shrinks it

# %% [markdown]
# Unscaled, every value past 464 (the midpoint between 448 and the next step, 480, which e4m3 spends on NaN)
# is clipped to 448. Scaled, nothing saturates. Note that S here is *smaller* than 1: scaling is not only
# for small numbers.
#
# fpsim's `fp8` policy trains the digits MLP this way: e4m3 forward, e5m2 gradients, a power-of-two scale per
# tensor, fp32 master weights. Why e5m2 for gradients? Gradients spread over many binades. Make a copy of the
# policy with e4m3 gradients and count, over 60 training steps, the share of gradients flushed to zero.

# %%
fp8 = fpsim.policies.get_policy("fp8")
e4m3_grads = replace(fp8, name="fp8-e4m3-grads", grads="fp8_e4m3")
fp8_run = train.run(train.scenario("baseline", policy=fp8, steps=60))
e4m3_run = train.run(train.scenario("baseline", policy=e4m3_grads, steps=60))
fp32_run = train.run(train.scenario("baseline", policy="fp32", steps=60))
for run in (fp8_run, e4m3_run, fp32_run):
    s = run.summary()
    print(f"{s['policy']:15} flushed {s['flushed %']:.4f}%  test accuracy {s['test accuracy']:.3f}")
assert e4m3_run.summary()["flushed %"] > 100 * fp8_run.summary()["flushed %"]
assert abs(fp8_run.final_accuracy - fp32_run.final_accuracy) < 0.02  # fp8 with e5m2 gradients keeps up with fp32

# %% [markdown]
# ## Delayed scaling: the scale from an amax history
# Finding amax costs a pass over the tensor *before* casting it. Transformer Engine avoids that pass: it
# casts with a scale computed from the amaxes of the *previous* steps (the largest over a history window),
# and records this step's amax for later. It also keeps a *margin*: the scale is 2^margin times smaller
# than the history asks for, as headroom for growth. Simulate 50 steps of one tensor whose amax drifts up by
# 3% a step, with a sudden 8× spike at step 30:

# %%
steps = 50
growth = 1.03 ** np.arange(steps)
growth[29] *= 8  # step 30: a spike
tensors = [rng.normal(size=4096) * 30 * g for g in growth]


def delayed_scaling(history_length: int = 16, margin: int = 0) -> tuple[list[int], list[float]]:
    """Per step: how many values saturated in e4m3, and the largest magnitude the scale could hold."""
    history: list[float] = []
    saturated, limits = [], []
    for t in tensors:
        amax_now = np.abs(t).max()
        amax_known = max(history[-history_length:]) if history else amax_now  # step 1 measures its own amax
        scale = 2.0 ** (np.floor(np.log2(E4M3.max / amax_known)) - margin)
        saturated.append(fp8_cast(t, E4M3, scale)[1].overflow)
        limits.append(E4M3.max / scale)
        history.append(amax_now)  # recorded after the cast: used from the next step on
    return saturated, limits


def current_scaling() -> list[int]:
    """Per step: values saturated when the scale comes from this tensor's own amax (an extra pass)."""
    return [fp8_cast(t, E4M3, 2.0 ** np.floor(np.log2(E4M3.max / np.abs(t).max())))[1].overflow for t in tensors]


no_margin, _ = delayed_scaling(margin=0)
with_margin, limits = delayed_scaling(margin=1)
for name, counts in (
    ("current", current_scaling()),
    ("delayed, margin 0", no_margin),
    ("delayed, margin 1", with_margin),
):
    print(f"{name:17}: saturated at steps {[i + 1 for i, n in enumerate(counts) if n]}, {sum(counts)} values")
assert sum(current_scaling()) == 0  # its own amax: never saturates
assert no_margin[29] > 0  # the spike: the history had not seen it
assert any(n for i, n in enumerate(no_margin) if i != 29)  # without a margin, the drift alone saturates a step
assert [i + 1 for i, n in enumerate(with_margin) if n] == [30]  # with headroom, only the spike saturates
assert limits[30] == limits[45] > limits[46]  # the spike rules steps 31 to 46, then leaves the 16-step history

# %% [markdown]
# Without a margin, the power-of-two scale can leave almost no headroom (the history's amax just under a
# power of two), and the slow drift alone saturates some steps. One binade of margin absorbs the drift; only
# the spike gets through. Draw each step's amax against the largest value the delayed scale (margin 1) holds.
# After the spike, the history keeps the scale small for 16 steps (31 to 46), so those tensors use fewer of
# e4m3's bits.

# %%
fig = Figure(figsize=(8, 3.5))
ax = fig.subplots()
step_numbers = np.arange(1, steps + 1)
ax.plot(step_numbers, [np.abs(t).max() for t in tensors], "o-", color="#0072B2", markersize=3, label="amax this step")
ax.step(step_numbers, limits, where="mid", color="#D55E00", label="largest value the delayed scale holds (margin 1)")
ax.plot([30], [np.abs(tensors[29]).max()], "x", color="black", markersize=10, label="saturated: amax above the limit")
ax.set_yscale("log", base=2)
ax.set_xlabel("step")
ax.set_ylabel("magnitude (log2 axis)")
ax.set_title("Delayed scaling into e4m3, amax history of 16 steps", loc="left")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
fig.savefig(OUT / "09_delayed_scaling.png", dpi=80)
fig

# %% [markdown]
# ## A fake-quantized torch model
# To try fp8 on your own torch model without fp8 hardware, *fake-quantize* it: every Linear layer's weight
# and input are rounded to e4m3 in the forward pass (bit-exactly, with fpsim's codec), and the gradient passes
# straight through. Train a small MLP on the digits both ways.

# %%
digits = fpsim.data.digits(seed=0)
x_train, y_train = torch.tensor(digits.x_train, dtype=torch.float32), torch.tensor(digits.y_train)
x_test, y_test = torch.tensor(digits.x_test, dtype=torch.float32), torch.tensor(digits.y_test)


def mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def fit(model: torch.nn.Module, steps: int = 80) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        start = 64 * step % (len(x_train) - 64)
        loss = torch.nn.functional.cross_entropy(model(x_train[start : start + 64]), y_train[start : start + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


plain = mlp()
quantized = fpsim.torch.fake_quantize(mlp(), weight="e4m3", input="e4m3")
print(quantized)
accuracy = {"fp32": fit(plain), "e4m3 weights and inputs": fit(quantized)}
print({k: round(v, 3) for k, v in accuracy.items()})

first = quantized[0]
weight = first.weight  # what the layer computes with: the e4m3 rounding of its fp32 weight
stored = first.parametrizations.weight.original  # the fp32 master weight the optimizer updates
assert torch.equal(weight, fpsim.torch.round(stored, "e4m3"))  # bit-exact e4m3 values
assert not torch.equal(weight, stored)
assert accuracy["e4m3 weights and inputs"] > accuracy["fp32"] - 0.05

# %% [markdown]
# The quantized model trains nearly as well: its fp32 master weights (`parametrizations.weight.original`)
# collect every update, as in tutorial 7, and only the forward pass sees e4m3.
#
# **Try it.** Gradients of one layer have amax 3e-4. What power-of-two scale puts them into e5m2, and what
# would the same rule give for e4m3?
#
# **Try it.** Call `delayed_scaling(history_length=1, margin=1)`. Which steps saturate now, and how long does
# the scale stay small after the spike?

# %%
# Solution: the largest power of two S with 3e-4 * S <= max.
for f in (E5M2, E4M3):
    s = 2.0 ** np.floor(np.log2(f.max / 3e-4))
    print(f"{f.name}: S = 2^{np.log2(s):.0f}")
    assert 3e-4 * s <= f.max < 2 * 3e-4 * s

# %%
# Solution: with one step of history, the spike still saturates (nobody saw it coming), but the scale
# recovers at the next step instead of sixteen steps later.
short, short_limits = delayed_scaling(history_length=1, margin=1)
print("steps that saturate with a history of 1:", [i + 1 for i, n in enumerate(short) if n])
assert short[29] > 0
assert short_limits[31] < limits[31]  # two steps after the spike, the short history has forgotten it

# %% [markdown]
# ## Recap
# - bf16 keeps fp32's range (no loss scaling needed) and pays with 8 times wider gaps: worst relative error
#   2^-8 against fp16's 2^-11.
# - TF32 silently cuts fp32 matmul inputs to 10 mantissa bits (the A100 truncates, the `tf32` model rounds):
#   about a thousand times the error of fp32, and more when truncated.
# - fp8 needs a scale per tensor: e4m3 (max 448, 18 binades) for weights and activations, e5m2 (57344,
#   32 binades) for gradients.
# - Delayed scaling uses the amax history of earlier steps: cheap, but a sudden spike saturates.
# - `fpsim.torch.fake_quantize` rounds a torch model's weights and inputs bit-exactly and lets gradients
#   through, so you can test fp8 on any machine.
#
# Next: tutorial 10, debugging a real model.
