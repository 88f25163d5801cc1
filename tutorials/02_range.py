# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 2. Range
#
# *Goal:* know exactly where fp16's numbers end at both sides (65504, 6.1e-5, 5.96e-8), and what overflow,
# underflow, subnormals and flush-to-zero do to a value that falls outside.
#
# *Time:* about 12 minutes
#
# Every number here is computed as you run it, and every claim is checked by an `assert`.

# %%
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

import fpsim
import fpsim.plots

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
fp16 = fpsim.FP16

# %% [markdown]
# ## The whole range in one picture
#
# Each bar is one format on a log2 axis: the subnormals, the normal numbers, and overflow past the largest
# value (`fpsim plot range -o range.png` draws the same from a terminal). A *binade* is the stretch between two
# powers of two, [2^k, 2^(k+1)). fp16 spans 40 binades; fp32 and bf16 over 250, because they have 8 exponent
# bits instead of 5.

# %%
fig_formats = ["fp32", "fp16", "bf16", "fp8_e4m3"]
fig, ax = fpsim.plots.range_diagram(fig_formats)
fig.savefig(OUT / "02_range.png", dpi=100)
binades = {f: np.log2(fpsim.get_format(f).max) - np.log2(fpsim.get_format(f).smallest_subnormal) for f in fig_formats}
print("binades from the smallest subnormal to max:", {f: float(round(b, 1)) for f, b in binades.items()})
assert round(binades["fp16"]) == 16 + 24 == 40
assert min(binades["fp32"], binades["bf16"]) > 250
fig

# %% [markdown]
# ## The top: 65504
#
# The largest fp16 number has the largest ordinary exponent field, 11110₂ = 30 (all ones, 31, is kept for
# infinity and NaN), and a mantissa of all ones. So it is (1 + 1023/1024) · 2^(30 − 15) = (2 − 2^-10) · 2^15.

# %%
largest = int(fpsim.encode(fp16.max, "fp16"))
print(f"fp16.max = {fp16.max:g}, code {largest:#06x} = {largest:016b}")
print("fields:", tuple(int(f) for f in fpsim.fields(largest, "fp16")))

assert fp16.max == (2 - 2**-10) * 2**15 == 65504
assert tuple(int(f) for f in fpsim.fields(largest, "fp16")) == (0, 30, 2**10 - 1)
assert fp16.max == float(np.finfo(np.float16).max)  # numpy agrees

# %% [markdown]
# Many tables say 65535. That is the largest *16-bit unsigned integer*, not the largest fp16. fp16 cannot even
# store 65535: its neighbours up there are 32 apart, and 65535 is past the rounding threshold, so it becomes inf.
#
# Where is that threshold? Halfway between 65504 and the next step, 65536, which does not exist. A value at
# 65520 or above rounds to "65536", which is overflow. (In a terminal: `fpsim round 65519.99 65520 --format fp16`.)

# %%
values, flags = fpsim.round([65504, 65519.99, 65520, 65535], "fp16", flags=True)
for x, v in zip([65504, 65519.99, 65520, 65535], values):
    print(f"{x:>9} -> {v}")
print(flags)

spacing_at_top = fp16.max - fpsim.next_down(fp16.max, "fp16")
assert spacing_at_top == 2 ** (15 - 10) == 32
assert list(values) == [65504, 65504, np.inf, np.inf]
assert flags.overflow == 2
# The threshold 65520 is exactly half a spacing above the max.
assert fp16.max + spacing_at_top / 2 == 65520

# %% [markdown]
# fp8 e4m3 has no infinity at all. What an overflow becomes is then a choice: NaN (ml_dtypes' behaviour,
# fpsim's default) or the largest value, 448 (torch 2.13's cast to float8_e4m3fn; torch 2.11 and older give
# NaN). fpsim lets you pick with `overflow=`.

# %%
print("500 in e4m3:", fpsim.round(500, "e4m3"), "or, saturating,", fpsim.round(500, "e4m3", overflow="saturate"))
assert fpsim.FP8_E4M3.max == (2 - 2 * 2**-3) * 2**8 == 448  # the top mantissa code 111 is NaN, so 110 is the max
assert np.isnan(fpsim.round(500, "e4m3"))
assert fpsim.round(500, "e4m3", overflow="saturate") == 448

# %% [markdown]
# ## The bottom: two different limits
#
# The smallest **normal** fp16 number has exponent field 1: 2^(1 − 15) = 2^-14 ≈ 6.1e-5.
#
# Below it, exponent field 0 means **subnormal**: the hidden leading bit becomes 0 and the exponent stays at
# −14, so the value is 2^-14 · (0 + M/1024). The smallest of them is 2^-14 · 2^-10 = 2^-24 ≈ 5.96e-8.

# %%
print(f"smallest normal:    {fp16.smallest_normal:.4g} = 2^{int(np.log2(fp16.smallest_normal))}")
print(f"smallest subnormal: {fp16.smallest_subnormal:.4g} = 2^{int(np.log2(fp16.smallest_subnormal))}")

assert fp16.smallest_normal == 2.0 ** (1 - fp16.bias) == fpsim.decode(0x0400, "fp16")
assert fp16.smallest_subnormal == 2.0 ** (1 - fp16.bias - fp16.nmant) == fpsim.decode(0x0001, "fp16")
assert f"{fp16.smallest_normal:.2g}" == "6.1e-05"
assert f"{fp16.smallest_subnormal:.3g}" == "5.96e-08"
assert fpsim.classify(fp16.smallest_subnormal, "fp16") == "subnormal"
assert fpsim.classify(fp16.smallest_normal, "fp16") == "normal"

# %% [markdown]
# So which is "the smallest fp16 number"? Tables disagree because both are true of something. 5.96e-8 is the
# smallest *positive* value, but it is subnormal: it has exactly **one** significant bit. Subnormals trade
# precision for range. Every subnormal has the same spacing, 2^-24, so the smaller the value, the fewer
# significant bits it keeps. Watch the relative error of rounding a value a little above each power of two:

# %%
print(f"{'x':>12} {'class':>10} {'rounded':>12} {'relative error':>15}")
for k in (10, 14, 17, 20, 23):
    x = 1.3 * 2.0**-k
    stored = fpsim.round(x, "fp16")
    print(f"{x:12.4g} {fpsim.classify(x, 'fp16'):>10} {stored:12.4g} {(stored - x) / x:15.2%}")

# Normal numbers: relative error at most half of 2^-10. Subnormals: up to half of 2^-24 / x.
for k in (10, 14):
    x = 1.3 * 2.0**-k
    assert abs(fpsim.round(x, "fp16") - x) / x <= 2**-11
x = 1.3 * 2.0**-23  # three spacings of 2^-24 hold it: 2.6 of them, rounded to 3
assert fpsim.round(x, "fp16") == 3 * 2**-24
assert abs(fpsim.round(x, "fp16") - x) / x > 0.15

# %% [markdown]
# ## Underflow: where values vanish
#
# Anything below half the smallest subnormal, 2^-25, rounds to zero. Exactly 2^-25 is a tie between 0 and
# 2^-24, and ties go to the even code, 0. Anything a hair above rounds up to 2^-24.

# %%
tie = 2.0**-25
print("2^-25 ->", fpsim.round(tie, "fp16"), "| just above ->", fpsim.round(tie * (1 + 2**-30), "fp16"))
assert fpsim.round(tie, "fp16") == 0
assert fpsim.round(tie * (1 + 2**-30), "fp16") == 2**-24
assert fpsim.round(tie * (1 - 2**-30), "fp16") == 0

# %% [markdown]
# This matters for training. Gradients are often around 1e-6, well below fp16's smallest normal.
# `flags=True` counts what the rounding did (the IEEE exceptions):

# %%
gradients = np.random.default_rng(0).normal(0, 1e-6, 100_000)
stored, flags = fpsim.round(gradients, "fp16", flags=True)
print(flags)
print(f"{flags.fraction('flushed_to_zero'):.2%} of the gradients became zero")

# Check the counts independently: numpy's own float16 cast, and the 2^-25 threshold.
assert flags.flushed_to_zero == np.sum(gradients.astype(np.float16) == 0) == np.sum(np.abs(gradients) <= 2**-25)
assert flags.subnormal == np.sum((np.abs(stored) < fp16.smallest_normal) & (stored != 0))
assert flags.subnormal > 0.9 * len(gradients)  # nearly all of them live in the subnormal range

# %% [markdown]
# ## Flush to zero
#
# Some hardware and some compiler settings skip subnormals: any result that would be subnormal becomes 0.
# fpsim models that with `subnormals=False`. Then fp16's real bottom is 6.1e-5, and the same gradients
# all vanish.

# %%
fp16_ftz = fpsim.Format("fp16_ftz", 5, 10, subnormals=False)
stored_ftz, flags_ftz = fpsim.round(gradients, fp16_ftz, flags=True)
print(flags_ftz)
assert np.abs(gradients).max() < fp16.smallest_normal / 2  # every gradient is in fp16's subnormal range ...
assert flags_ftz.flushed_to_zero == len(gradients)  # ... so flush-to-zero loses every one of them
assert np.all(stored_ftz == 0)

# %% [markdown]
# With subnormals, almost all of these gradients stay alive (with few bits); with flush-to-zero, none do. Loss scaling
# (tutorial 6) moves gradients up into the normal range so that neither happens.

# %% [markdown]
# ## Try it
#
# **Try it.** Derive fp8 e5m2's largest value and its smallest subnormal from its layout (5 exponent bits,
# 2 mantissa bits, bias 15, IEEE-style inf and NaN), then check against `fpsim.FP8_E5M2`.
#
# **Try it.** bf16 has the same 8 exponent bits as fp32. What are its smallest normal and smallest subnormal?
#
# **Try it.** Multiply the gradients above by 1024 before rounding to fp16. How many become zero now?

# %%
# Solution: like fp16, the top exponent field (31) is for inf/NaN, so the max uses field 30 and mantissa 11.
e5m2 = fpsim.FP8_E5M2
print("e5m2 max", e5m2.max, "| smallest subnormal", e5m2.smallest_subnormal)
assert e5m2.max == (2 - 2**-2) * 2 ** (30 - 15) == 57344
assert e5m2.smallest_subnormal == 2.0 ** (1 - 15 - 2)

# %%
# Solution: 8 exponent bits, bias 127, so the smallest normal is fp32's, 2^-126; but only 7 mantissa bits,
# so the smallest subnormal is 2^-126 · 2^-7 = 2^-133 (fp32's is 2^-149).
print("bf16:", fpsim.BF16.smallest_normal, fpsim.BF16.smallest_subnormal)
assert Fraction(fpsim.BF16.smallest_normal) == Fraction(1, 2**126) == Fraction(fpsim.FP32.smallest_normal)
assert Fraction(fpsim.BF16.smallest_subnormal) == Fraction(1, 2**133)

# %%
# Solution: scaling by 2^10 is exact and moves every value up ten binades. A value stays flushed only if it
# was below 2^-25 / 2^10 = 2^-35 ≈ 2.9e-11 to begin with; a normal distribution with σ = 1e-6 has very few.
scaled, flags_scaled = fpsim.round(gradients * 1024, "fp16", flags=True)
still_tiny = gradients[(gradients != 0) & (np.abs(gradients) <= 2.0**-35)]
print(flags_scaled)
print(f"{flags.flushed_to_zero} flushed before, {flags_scaled.flushed_to_zero} after: {still_tiny}")
assert flags_scaled.flushed_to_zero == still_tiny.size == 1  # one gradient, 2.2e-11, is still lost
assert flags_scaled.flushed_to_zero < flags.flushed_to_zero / 100

# %% [markdown]
# ## Recap
#
# - fp16's largest value is (2 − 2^-10) · 2^15 = 65504. Values from 65520 up overflow to inf. 65535 is not an
#   fp16 number at all.
# - The smallest normal is 2^-14 ≈ 6.1e-5. Below it, subnormals reach down to 2^-24 ≈ 5.96e-8, losing one
#   significant bit per binade.
# - Values at or below 2^-25 round to zero: that is underflow, and `flags=True` counts it.
# - Flush-to-zero hardware drops the subnormals: then everything below 6.1e-5 is zero.
# - Formats without infinity (e4m3) must choose what overflow means: NaN or saturation.
#
# Next: tutorial 3, what happens *between* two neighbours.
