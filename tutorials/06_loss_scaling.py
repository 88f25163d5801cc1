# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 6. Loss scaling
# *Goal:* see why fp16 gradients vanish, how multiplying the loss by a scale saves them, and how a dynamic
# scaler (torch's GradScaler) picks that scale by itself, step by step.
#
# *Time:* about 12 minutes
#
# You need tutorial 2 (range, subnormals, flush to zero). Every number below is computed as you run it, and
# every claim is checked by an `assert`.

# %%
import os
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import fpsim
from fpsim import plots, train
from fpsim.scaling import DynamicLossScaler

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
FP16 = fpsim.FP16

# %% [markdown]
# ## Gradients are tiny
# Train the digits MLP for 20 steps in plain fp32, in the *underflow* scenario: its loss is 2^16 times
# smaller than usual, so its gradients are too. This is what happens in real models whose gradients live far
# below 1. The run keeps a sample of the last step's gradients.

# %%
fp32_run = train.run(train.scenario("underflow", policy="fp32", steps=20))
g = np.array(fp32_run.gradient_sample)
nonzero = np.abs(g[g != 0])
print(f"{g.size} gradients, largest |g| = {nonzero.max():.3g}, smallest nonzero |g| = {nonzero.min():.3g}")
print(f"fp16: smallest normal {FP16.smallest_normal:.3g}, smallest subnormal {FP16.smallest_subnormal:.3g}")

# %% [markdown]
# Every gradient is below fp16's smallest normal number, 2^-14. Round them to fp16 and count what happens.
# The codec counts IEEE exceptions for us (`flags=True`). Independently: a value becomes zero when it is at
# most half of the smallest subnormal, 2^-25 (a tie goes to the even neighbour, zero).

# %%
rounded, flags = fpsim.round(g, "fp16", flags=True)
print(flags)
flushed = flags.flushed_to_zero / g.size
assert nonzero.max() < FP16.smallest_normal  # not one gradient is a normal fp16 number
assert flags.flushed_to_zero == np.count_nonzero((g != 0) & (np.abs(g) <= 2.0**-25))  # the threshold, by hand
assert flags.flushed_to_zero == np.count_nonzero((rounded == 0) & (g != 0))
assert flushed > 0.5
print(f"{100 * flushed:.1f}% of the gradients become exactly zero in fp16")

# %% [markdown]
# More than half of the gradients are simply gone, and every nonzero one that is left is subnormal, with only
# a few bits of precision. The mixed precision paper measured the same effect in its SSD model (31% of the
# gradients became zero in fp16).
#
# ## Scaling the loss
# The chain rule is linear: multiply the loss by S and every gradient is multiplied by S. Choose S as the
# largest power of two that keeps the largest gradient *of this sample* below fp16's max (65504). A power of
# two changes only the exponent, so dividing by S afterwards, in fp32 as GradScaler does, is exact.

# %%
amax = np.abs(g).max()
S = 2.0 ** np.floor(np.log2(FP16.max / amax))
scaled_bands = plots.gradient_bands(g * S, "fp16")
bands = plots.gradient_bands(g, "fp16")
print(f"S = 2^{np.log2(S):.0f}")
print("before:", {k: round(v, 4) for k, v in bands.items()})
print("after: ", {k: round(v, 4) for k, v in scaled_bands.items()})
assert amax * S <= FP16.max < 2 * amax * S  # the largest power of two that fits this sample
assert bands["flush"] == flushed  # the plot's bands agree with the codec's flags
assert bands["normal"] == 0  # unscaled, not one gradient was a normal fp16 number
assert scaled_bands["flush"] == scaled_bands["subnormal"] == scaled_bands["overflow"] == 0
scaled16 = fpsim.round(g * S, "fp16")
unscaled32 = scaled16.astype(np.float32) / np.float32(S)  # the unscaling, one fp32 division per value
assert all(Fraction(float(u)) == Fraction(v) / Fraction(S) for u, v in zip(unscaled32, scaled16))  # exact

# %% [markdown]
# The mixed precision paper's figure: log2|g| against fp16's bands, as computed and times the scale.
# The whole histogram slides right by log2(S) binades, out of the flush and subnormal bands.

# %%
fig, _ = plots.gradient_histogram(g, "fp16", scale=S)
fig.savefig(OUT / "06_gradient_histogram.png", dpi=80)
fig

# %% [markdown]
# ## Static scaling: one fixed S
# A *static* scaler uses one S for the whole run. Train 40 steps with fp16 everywhere: without a scale, with
# S = 2^24, and with S = 2^40 (far too large). When a gradient overflows to inf, the step is *skipped*: the
# weights are not touched.

# %%
steps = 40
runs = {
    "fp16, no scaling": train.run(train.scenario("underflow", policy="fp16", steps=steps)),
    "fp16, S = 2^24": train.run(train.scenario("underflow", policy="fp16-static", loss_scale=2.0**24, steps=steps)),
    "fp16, S = 2^40": train.run(train.scenario("underflow", policy="fp16-static", loss_scale=2.0**40, steps=steps)),
}
for name, run in runs.items():
    s = run.summary()
    print(f"{name:18} final loss {s['final loss']:.4f}  flushed {s['flushed %']:6.2f}%  skipped {s['skipped steps']}")

none, good, huge = (run.summary() for run in runs.values())
assert none["flushed %"] > 20  # a fifth or more of the gradients flushed, on average
assert good["flushed %"] < 0.01  # the scale rescues them
assert good["final loss"] < none["final loss"]
assert huge["skipped steps"] == steps  # every step overflows: the model never learns

# %% [markdown]
# Is the S = S computed above the largest scale that works? Try it, and the power of two below it.

# %%
k_s = int(np.log2(S))
edge = {k: train.run(train.scenario("underflow", policy="fp16-static", loss_scale=2.0**k, steps=steps))
        for k in (k_s - 1, k_s)}  # fmt: skip
for k, run in edge.items():
    print(f"S = 2^{k}: skipped {run.summary()['skipped steps']} of {steps} steps")
assert edge[k_s].summary()["skipped steps"] == steps  # S fails at every step ...
assert edge[k_s - 1].summary()["skipped steps"] == 0  # ... S / 2 never skips

# %% [markdown]
# S fails at every step. Two suspects. The sample keeps only every k-th gradient, so it can miss the largest
# one. And the sample comes from the *last* step of a run that learned, while a static S must fit *every*
# step. `train.last_gradients` returns every gradient tensor of a run's last step, whole: compare.

# %%
largest_at = {}
for n_steps in (1, 20):  # the untrained model's first step, and the step the sample came from
    whole = train.last_gradients(train.scenario("underflow", policy="fp32", steps=n_steps))
    largest_at[n_steps] = max(np.abs(t).max() for t in whole)
    print(f"step {n_steps:2}: largest |g| {largest_at[n_steps]:.4g} over {sum(t.size for t in whole)} gradients")
print(f"the sample's largest: {amax:.4g}")
assert amax <= largest_at[20]  # a sample never holds more than the whole ...
assert amax * S <= FP16.max  # ... but here it found a value that sets the same S
assert largest_at[20] * S <= FP16.max  # S fits the last step, whole
overflow_threshold = FP16.max + FP16.ulp(FP16.max) / 2  # 65520: from here on fp16 rounds to inf
assert largest_at[1] * S >= overflow_threshold  # but the first step's largest gradient overflows at S ...
assert largest_at[1] * S / 2 <= FP16.max  # ... and fits at S / 2

# %% [markdown]
# The sample was not the problem: gradients shrink as the model learns, and the untrained model's first step
# has the largest ones. Overflowing there, S skips step 1, the weights never change, and every later step
# overflows the same way. The largest static scale for this run is S / 2, set by step 1; 2^24 is ten binades
# below it. That margin costs nothing here (2^24 already leaves fewer than 0.01% of the gradients flushed)
# and absorbs gradients up to 2^10 times larger than any seen: "about right" means inside the window, with
# room on the overflow side.
#
# A static scale works only if you pick it well, and the right value changes during training as gradients
# shrink or grow. So in practice the scale is chosen by a small state machine.
#
# ## The dynamic scaler, step by step
# torch's `GradScaler` keeps a scale (default 2^16) and a counter of clean steps:
#
# - a step with an inf or NaN gradient is skipped, the scale is halved (`backoff_factor`), the counter reset;
# - after `growth_interval` clean steps in a row (default 2000), the scale doubles (`growth_factor`).
#
# `fpsim.scaling.DynamicLossScaler` is that state machine. Feed it a pattern of overflows with
# `growth_interval=3`, next to torch's own GradScaler fed the same pattern through a real parameter.

# %%
pattern = [False, True, True, False, False, False, False, False, True, False, False, False]

ours = DynamicLossScaler(init_scale=2.0**16, growth_interval=3)
weight = torch.nn.Parameter(torch.zeros(2))
optimizer = torch.optim.SGD([weight], lr=0.1)
theirs = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)

print("step  overflow  fpsim scale  counter  torch scale")
for step, overflow in enumerate(pattern, start=1):
    optimizer.zero_grad()
    loss = (weight * (np.inf if overflow else 1.0)).sum()  # an inf gradient on the overflow steps
    theirs.scale(loss).backward()
    before = weight.detach().clone()
    theirs.step(optimizer)  # unscales, checks for inf/NaN, and skips the step if it finds one
    theirs.update()
    ours.update(found_inf=overflow)
    print(f"{step:4}  {overflow!s:8}  {ours.scale:11g}  {ours.growth_tracker:7}  {theirs.get_scale():11g}")
    assert ours.scale == theirs.get_scale()
    assert torch.equal(weight.detach(), before) == overflow  # skipped steps leave the weight as it was

# %% [markdown]
# Read the table: two overflows halve the scale twice (65536 → 16384); three clean steps double it; the
# overflow at step 9 halves it again. fpsim's scaler and torch's agree at every step.
#
# Now the real thing: the *overflow* scenario makes gradients 2^20 times larger than usual, so the default
# scale 2^16 is far too big. `amp` (fp32 master weights, fp16 compute, dynamic scaling) backs off by itself.

# %%
dynamic = train.run(train.scenario("overflow", policy="amp", steps=60))
first_clean = dynamic.skipped.index(False)
print(f"skipped the first {first_clean} steps; scale then {dynamic.scale[first_clean]:g}")
assert all(dynamic.skipped[:first_clean])
assert not any(dynamic.skipped[first_clean:])
assert dynamic.scale[first_clean] == 2.0**16 / 2**first_clean  # one halving per skipped step
assert np.isfinite(dynamic.loss[-1])

# %% [markdown]
# ## Why a scaler that grows after every clean step oscillates
# A common hand-written scaler doubles the scale after *every* clean step (`growth_interval=1`).
# Say gradients need a scale of at most S* to stay finite. Once the scaler reaches S*, the next clean step
# doubles it to 2·S*, which overflows and is skipped; it halves back to S*, doubles again... Half of all steps
# are thrown away.
#
# Check the arithmetic on a toy: gradients with a fixed largest value, so S* is known. With growth interval
# N, each cycle is N clean steps and one overflow, so a fraction 1/(N+1) of steps is skipped.


# %%
def skipped_fraction(growth_interval: int, steps: int = 1200) -> float:
    """Skipped share of the last `steps` steps, for gradients whose largest value is fixed."""
    scaler = DynamicLossScaler(init_scale=2.0**16, growth_interval=growth_interval)
    largest_gradient = 3e-3  # so S* = 2^24: 3e-3 * 2^24 ≈ 50332 fits, 3e-3 * 2^25 overflows
    skipped = []
    for _ in range(100 + steps):  # 100 warm-up steps to reach S*
        overflow = not np.isfinite(fpsim.round(largest_gradient * scaler.scale, "fp16"))
        scaler.update(found_inf=overflow)
        skipped.append(overflow)
    return float(np.mean(skipped[100:]))


for n in (1, 2, 5, 2000):
    print(f"growth_interval {n:4}: {100 * skipped_fraction(n):.2f}% of steps skipped")
for n in (1, 2, 5):
    assert abs(skipped_fraction(n) - 1 / (n + 1)) < 0.002

# %% [markdown]
# On the real model, fpsim ships this broken rule as `scaler="naive"`. Make a copy of the `amp` policy that
# uses it (a policy is a frozen dataclass, so `replace` gives a new one with its own name), train the
# overflow scenario with both, and draw the two scale trajectories.

# %%
amp_naive = replace(fpsim.policies.get_policy("amp"), name="amp-naive", scaler="naive")
naive = train.run(train.scenario("overflow", policy=amp_naive, steps=60))
late = slice(30, 60)  # after both have backed off
print(f"last 30 steps skipped: naive {sum(naive.skipped[late])}, dynamic {sum(dynamic.skipped[late])}")
assert sum(naive.skipped[late]) >= 10
assert sum(dynamic.skipped[late]) == 0
assert naive.loss[-1] > dynamic.loss[-1]  # half the steps lost: it learns less
naive_values = sorted(set(naive.scale[late]))
print("naive scales in the last 30 steps:", naive_values, "| dynamic:", sorted(set(dynamic.scale[late])))
assert len(naive_values) >= 3
assert len(set(dynamic.scale[late])) == 1

fig, ax = plots.scale_trajectory([dynamic, naive])
ax.set_xlabel("training step")
fig.savefig(OUT / "06_scale_trajectory.png", dpi=80)
fig

# %% [markdown]
# The naive scale saw-tooths up and down by factors of two, over the handful of values printed above (the
# level drifts as the gradients change), and loses a third or more of the steps; torch's scale settles on
# one value and every late step counts. That is why `growth_interval` is 2000, not 1.
#
# The same experiment from the command line:
#
# ```bash
# fpsim train --policy amp --scenario overflow --scaler naive --steps 60
# ```

# %% [markdown]
# **Try it.** Gradients with largest value 3e-3 need S ≤ S* = 2^24. What skipped share does
# `growth_interval=9` give? Predict it first, then compute it with `skipped_fraction`.
#
# **Try it.** Take the fp32 gradients `g` from the start. Which power-of-two scales leave *no* gradient
# flushed to zero in fp16 and none overflowing? Find the smallest and the largest.

# %%
# Solution: one overflow per 9 clean steps, so 1/10 of the steps.
share = skipped_fraction(9)
print(f"growth_interval 9: {100 * share:.2f}% skipped")
assert abs(share - 1 / 10) < 0.002

# %%
# Solution: try every power of two and keep those with neither flushes nor overflows.
safe = []
for k in range(0, 60):
    b = plots.gradient_bands(g * 2.0**k, "fp16")
    if b["flush"] == 0 and b["overflow"] == 0:
        safe.append(k)
print(f"safe scales: 2^{safe[0]} to 2^{safe[-1]}")
assert safe == list(range(safe[0], safe[-1] + 1))  # one unbroken window
assert 2.0 ** safe[-1] == S  # the largest is the S chosen above: safe for this sample, not for step 1
assert nonzero.min() * 2.0 ** safe[0] > 2.0**-25 >= nonzero.min() * 2.0 ** (safe[0] - 1)

# %% [markdown]
# ## Recap
# - Small gradients fall below fp16's subnormals and become zero: here more than half of them.
# - Multiplying the loss by S shifts every gradient up by log2(S) binades; a power of two unscales exactly.
# - A static S must be chosen by hand; too large and every step overflows and is skipped.
# - The dynamic scaler halves on overflow and doubles after `growth_interval` clean steps, exactly as torch's
#   GradScaler does (checked step by step above).
# - Growing after every clean step wastes about half the steps: the skipped share is 1/(N+1).
#
# Next: tutorial 7, master weights.
