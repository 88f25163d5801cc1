# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 3. Precision and rounding
#
# *Goal:* measure the gap between neighbours (ulp and eps), see which real numbers round to which value in each
# rounding mode, and meet two subtle effects: double rounding and stochastic rounding.
#
# *Time:* about 15 minutes
#
# Every number here is computed as you run it, and every claim is checked by an `assert`.

# %%
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import fpsim
import fpsim.plots

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
fp16 = fpsim.FP16

# %% [markdown]
# ## ulp and eps
#
# The **ulp** of x ("unit in the last place") is the gap between x's neighbours in the format. It is the value
# of the last mantissa bit, so it doubles with every binade: in fp16 it is 2^(e − 10) for x in [2^e, 2^(e+1)).
#
# **eps** is the ulp of 1: the gap between 1 and the next number up. For fp16, 2^-10 ≈ 0.001.

# %%
xs = [1.0, 1.5, 3.0, 1000.0, 0.1]
ulps = fp16.ulp(xs)
for x, u in zip(xs, ulps):
    print(f"ulp({x:g}) = {u:g} = 2^{int(np.log2(u))}")
print("eps =", fp16.eps)

for x, u in zip(xs, ulps):
    exponent = int(np.floor(np.log2(x)))
    assert u == 2.0 ** (exponent - fp16.nmant)  # the formula
    assert u == fpsim.next_up(x, "fp16") - fpsim.round(x, "fp16")  # the gap to the next value up
assert fp16.eps == fpsim.next_up(1.0, "fp16") - 1 == 2**-10

# %% [markdown]
# So the *absolute* gap grows with x, while the *relative* gap stays between 2^-11 and 2^-10 in every binade.
# Rounding to nearest is off by at most half an ulp, so its relative error is at most u = eps / 2 = 2^-11,
# the **unit roundoff**. Let us check on a hundred thousand random numbers across fp16's normal range.

# %%
rng = np.random.default_rng(0)
x = 2.0 ** rng.uniform(-14, 15, 100_000)  # log-uniform between the smallest normal and 2^15
relative_error = np.abs(fpsim.round(x, "fp16") - x) / x
print(f"largest relative error: {relative_error.max():.6g}  (u = 2^-11 = {2**-11:.6g})")
assert relative_error.max() <= 2**-11
assert relative_error.max() > 0.99 * 2**-11  # and it gets close: the bound is tight

# %% [markdown]
# "fp16 has about 3 decimal digits" is this same fact: 11 significant bits are 11 · log10(2) = 3.31 digits.

# %%
print(fp16.precision, "significant bits =", round(fp16.decimal_digits, 2), "decimal digits")
assert fp16.precision == fp16.nmant + 1 == 11
assert abs(fp16.decimal_digits - 11 * np.log10(2)) < 1e-12

# %% [markdown]
# ## Rounding bins
#
# Rounding maps a whole interval of real numbers onto one stored value: its **bin**. With round-to-nearest
# each bin reaches halfway to the two neighbours. At the exact midpoint, a **tie**, IEEE's default goes to the
# neighbour whose last bit is 0 ("ties to even"). So some bins include both ends and some neither.
#
# fp4 (e2m1) has only 8 non-negative values, so we can see every bin. We find each bin's ends from the
# midpoints and ask fpsim which side each tie goes to.

# %%
values = fpsim.decode(np.arange(8, dtype=np.uint8), "fp4_e2m1")  # codes 0..7: the non-negative values
midpoints = (values[:-1] + values[1:]) / 2
tie_goes_to = fpsim.round(midpoints, "fp4_e2m1")
print("values:   ", values)
print("midpoints:", midpoints)
print("ties go to", tie_goes_to)

codes = fpsim.encode(tie_goes_to, "fp4_e2m1")
assert np.all(codes % 2 == 0)  # every tie went to the value whose code ends in 0: ties to even
# Just inside a midpoint, values round to the nearer side.
assert np.array_equal(fpsim.round(midpoints * (1 - 1e-9), "fp4_e2m1"), values[:-1])
assert np.array_equal(fpsim.round(midpoints * (1 + 1e-9), "fp4_e2m1"), values[1:])

# %%
fig = Figure(figsize=(9, 2.2), layout="constrained")
ax = fig.add_subplot()
colours = ["#0072B2", "#E69F00"]
for i, v in enumerate(values):
    low = midpoints[i - 1] if i > 0 else 0.0
    high = midpoints[i] if i < len(midpoints) else v + (v - midpoints[-1])
    ax.plot([low, high], [0, 0], lw=10, color=colours[i % 2], solid_capstyle="butt")
    ax.plot([v], [0], "k|", ms=24, mew=2)
    ax.annotate(f"{v:g}", (v, 0), xytext=(0, 16), textcoords="offset points", ha="center")
for m, goes in zip(midpoints, tie_goes_to):
    ax.annotate("◀" if goes < m else "▶", (m, 0), xytext=(0, -18), textcoords="offset points", ha="center")
ax.annotate("larger values → 6", (values[-1] + 1, 0), xytext=(4, 0), textcoords="offset points", va="center")
ax.set(
    yticks=[],
    ylim=(-0.6, 0.6),
    xlim=(-0.2, 8.2),
    xlabel="x (▶/◀ under a midpoint: the side its tie rounds to, the even code)",
)
ax.set_title("fp4 e2m1, round to nearest even: each coloured bin rounds to the value marked in it")
ax.spines[["left", "top", "right"]].set_visible(False)
fig.savefig(OUT / "03_rounding_bins_fp4.png", dpi=100)
fig

# %% [markdown]
# Bins grow with the value, like the ulp: the bin of 4 reaches from 3.5 to 5. The bin of 6 has no upper end:
# fp4 has no infinity, so every larger value saturates to 6, its largest value.

# %%
assert fpsim.round([3.5, 5.0, 5.01, 1e6], "fp4_e2m1").tolist() == [4, 4, 6, 6]

# %% [markdown]
# ## Ties to even in fp16
#
# Between 1 and 1 + 2^-10 the midpoint is 1 + 2^-11. It rounds *down* to 1 (mantissa ...0). The next
# midpoint, 1 + 3·2^-11, rounds *up* to 1 + 2^-9 (mantissa ...10). Alternating the direction keeps ties from
# drifting one way. `nearest_away` (ties away from zero, as taught at school) always goes up.

# %%
ties = [1 + 2**-11, 1 + 3 * 2**-11]
print("nearest_even:", fpsim.round(ties, "fp16"), "| nearest_away:", fpsim.round(ties, "fp16", "nearest_away"))
assert list(fpsim.round(ties, "fp16")) == [1.0, 1 + 2**-9]
assert list(fpsim.round(ties, "fp16", "nearest_away")) == [1 + 2**-10, 1 + 2**-9]
assert list(fpsim.round(ties, "fp16")) == list(np.array(ties).astype(np.float16))  # numpy rounds ties to even too

# %% [markdown]
# ## The directed modes
#
# IEEE 754 has three more modes: `toward_zero` (truncation), `up` (toward +inf) and `down` (toward −inf).
# They always pick one of the two neighbours, whatever the distance.

# %%
modes = ["nearest_even", "nearest_away", "toward_zero", "up", "down"]
for x in (0.1, -0.1):
    print(f"{x:>5}: " + "  ".join(f"{m} {fpsim.round(x, 'fp16', m):.8f}" for m in modes))

for x in (0.1, -0.1):
    up, down, zero = (fpsim.round(x, "fp16", m) for m in ("up", "down", "toward_zero"))
    assert Fraction(down) < Fraction(x) < Fraction(up)  # 0.1 is inexact, so it sits strictly between
    assert up - down == fp16.ulp(x)  # on neighbours
    assert zero == (down if x > 0 else up)  # truncation moves toward zero

# %% [markdown]
# `fpsim.plots.rounding_error` draws round(x) − x, in ulps, for a stretch of x: nearest stays within half an
# ulp, directed modes within one ulp on one side, and stochastic rounding scatters (next section). From a
# terminal: `fpsim plot rounding --formats fp16 -o rounding.png`.

# %%
fig, ax = fpsim.plots.rounding_error("fp16", modes=("nearest_even", "toward_zero", "up", "stochastic"))
fig.savefig(OUT / "03_rounding_error_fp16.png", dpi=100)
fig

# %% [markdown]
# ## Double rounding
#
# Rounding twice is not the same as rounding once. Take x = 1 + 2^-11 + 2^-40, a hair above the fp16
# midpoint 1 + 2^-11, so it should round *up* to 1 + 2^-10. But convert it to fp32 first: fp32 drops the
# 2^-40 and lands exactly *on* the midpoint; then the tie goes to even, down to 1.

# %%
x = 1 + 2**-11 + 2**-40
once = fpsim.round(x, "fp16")
via_fp32 = fpsim.round(fpsim.round(x, "fp32"), "fp16")
print("once:", once, "| through fp32:", via_fp32)
assert once == 1 + 2**-10
assert fpsim.round(x, "fp32") == 1 + 2**-11  # the first rounding lands on the midpoint
assert via_fp32 == 1.0
# numpy shows the same thing: its float64 -> float16 cast is direct and correct.
assert np.float16(x) == once
assert np.float16(np.float32(x)) == via_fp32

# %% [markdown]
# This is not a curiosity. ml_dtypes and torch convert float64 to bf16 and fp8 *through* fp32, so they double
# round (1 + 2^-8 + 2^-30 becomes 1.0 in bf16 there; correctly rounded it is 1.0078125). fpsim rounds once.

# %%
x = 1 + 2**-8 + 2**-30
print("bf16 once:", fpsim.round(x, "bf16"), "| through fp32:", fpsim.round(fpsim.round(x, "fp32"), "bf16"))
assert fpsim.round(x, "bf16") == 1.0078125 == 1 + 2**-7
assert fpsim.round(fpsim.round(x, "fp32"), "bf16") == 1.0

# %% [markdown]
# How often does it happen? Only when the first rounding lands exactly on a midpoint of the second format.

# %%
x = rng.uniform(1, 2, 1_000_000)
once = fpsim.round(x, "fp16")
twice = fpsim.round(fpsim.round(x, "fp32"), "fp16")
wrong = once != twice
print(f"{wrong.sum()} of {len(x):,} values round differently through fp32")

# Each one has an fp32 value exactly on an fp16 midpoint: an odd multiple of 2^-11 in [1, 2).
on_midpoint = (np.float32(x[wrong]).astype(np.float64) * 2**11) % 2 == 1
assert wrong.sum() > 0
assert on_midpoint.all()
assert np.all(np.abs(once[wrong] - twice[wrong]) == 2**-10)  # off by exactly one ulp

# %% [markdown]
# ## Stochastic rounding
#
# Stochastic rounding picks the upper neighbour with probability equal to the distance from the lower one, in
# ulps. For fp16's 0.1: below is 0.0999755859375, and 0.1 is 0.4 of an ulp above it, so it rounds up 40% of
# the time. On average, the result is exactly x: stochastic rounding is **unbiased**.

# %%
x = 0.1  # the float64 nearest 0.1; we take its exact value as the target
below, ulp = fpsim.round(x, "fp16", "down"), fp16.ulp(x)
p_up = (Fraction(x) - Fraction(below)) / Fraction(ulp)
print(f"P(round up) = {float(p_up):.6f}")
assert abs(p_up - Fraction(4, 10)) < 1e-9  # 0.4, up to float64's own error in storing 0.1

n = 200_000
draws = fpsim.round(np.full(n, x), "fp16", "stochastic", rng=np.random.default_rng(2026))
print("distinct results:", np.unique(draws), f"| share up: {np.mean(draws > below):.4f}")
print(f"mean of {n:,} draws: {draws.mean():.10f}   x: {x}   nearest_even: {fpsim.round(x, 'fp16')}")

assert set(np.unique(draws)) == {below, below + ulp}  # always a neighbour
# Each draw is below + ulp·B with B ~ Bernoulli(p), so the mean of n draws has standard deviation
# ulp·sqrt(p(1 − p)/n). A seeded generator makes this reproducible; five standard deviations make it robust.
sd = ulp * np.sqrt(float(p_up * (1 - p_up)) / n)
assert abs(draws.mean() - x) < 5 * sd
# Round-to-nearest is biased: its error is 0.4 ulp every time, hundreds of standard deviations.
assert abs(fpsim.round(x, "fp16") - x) > 100 * sd

# %% [markdown]
# ## Try it
#
# **Try it.** What are eps and the unit roundoff of bf16? Roughly how many decimal digits does it keep?
#
# **Try it.** Add 1e-4 to 1.0 a thousand times in fp16, once with `nearest_even` and once with `stochastic`
# (use `fpsim.add(w, 1e-4, "fp16", "stochastic", rng=gen)` on an array of 200 independent copies of 1.0).
# Where does each end, and why?

# %%
# Solution: bf16 has p = 8 significant bits: eps = 2^-7, u = 2^-8, about 8 · log10(2) = 2.4 digits.
bf16 = fpsim.BF16
print("bf16 eps", bf16.eps, "| digits", round(bf16.decimal_digits, 2))
assert bf16.eps == 2**-7 == fpsim.next_up(1.0, "bf16") - 1
assert 2.4 < bf16.decimal_digits < 2.5

# %%
# Solution: 1e-4 is below half an ulp of 1 (2^-11 ≈ 4.9e-4), so nearest_even drops every addition.
# Stochastic rounding keeps each one on average: the expected sum is 1 + 1000 · fp16(1e-4).
gen = np.random.default_rng(7)
increment = fpsim.round(1e-4, "fp16")  # the operand is cast to fp16 first
nearest, stochastic = 1.0, np.ones(200)
for _ in range(1000):
    nearest = fpsim.add(nearest, increment, "fp16")
    stochastic = fpsim.add(stochastic, increment, "fp16", "stochastic", rng=gen)
expected = 1 + 1000 * increment
print(f"nearest_even: {nearest}   stochastic, mean of 200: {stochastic.mean():.5f}   expected: {expected:.5f}")
assert nearest == 1.0
# Each step adds an independent error of variance at most ulp²/4 (ulp = 2^-10 in [1, 2)), so one run's
# standard deviation is at most 2^-10·sqrt(1000)/2, and the mean of 200 runs' is sqrt(200) times smaller.
sd = 2**-10 * np.sqrt(1000) / 2 / np.sqrt(200)
assert abs(stochastic.mean() - expected) < 5 * sd

# %% [markdown]
# ## Recap
#
# - ulp(x) is the gap between neighbours at x; it doubles every binade. eps = ulp(1) = 2^-10 in fp16.
# - Round-to-nearest is off by at most half an ulp: a relative error of at most u = 2^-11 in fp16.
# - Each stored value owns a bin of reals; ties go to the even code, so half the bins include their ends.
# - Directed modes (toward zero, up, down) always choose one side.
# - Rounding twice (float64 → fp32 → fp16) can differ from rounding once, by one ulp, at midpoints.
# - Stochastic rounding is unbiased: on average it returns x, which lets many tiny updates add up.
#
# Next: tutorial 4, what rounding does to whole calculations.
