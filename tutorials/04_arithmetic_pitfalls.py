# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 4. Arithmetic pitfalls
#
# *Goal:* see why 1 + 0.0001 = 1 in fp16, why long sums stall (swamping), how subtraction exposes earlier
# rounding errors (cancellation), and what fixes sums: fp32 accumulation, Kahan and pairwise summation.
#
# *Time:* about 12 minutes
#
# Every number here is computed as you run it, and every claim is checked by an `assert`.

# %%
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import fpsim

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
fp16 = fpsim.FP16

# %% [markdown]
# ## 1 + 0.0001 = 1
#
# `fpsim.add(a, b, fmt)` adds exactly and rounds once, as IEEE hardware does. `fpsim.calc` does the same for a
# whole expression and shows each rounding. (In a terminal: `fpsim calc "1 + 0.0001" --format fp16`.)

# %%
print(fpsim.calc("1 + 0.0001", "fp16"))
assert fpsim.add(1, 1e-4, "fp16") == 1.0
assert fpsim.add(1, 1e-4, "fp32") > 1.0  # fp32 keeps it

# %% [markdown]
# Why? Near 1, fp16's neighbours are 2^-10 ≈ 0.00098 apart. 1 + 0.0001 is much nearer to 1 than to 1 + 2^-10,
# so it rounds back to 1. Anything up to half an ulp, 2^-11, is lost (exactly 2^-11 is a tie, and ties go to
# the even value, 1).

# %%
half_ulp = fp16.ulp(1.0) / 2
print("half an ulp of 1:", half_ulp)
assert half_ulp == 2**-11
assert fpsim.add(1, half_ulp, "fp16") == 1.0  # the tie goes to even
assert fpsim.add(1, fpsim.next_up(half_ulp, "fp16"), "fp16") == 1 + 2**-10  # a hair more is kept

# %% [markdown]
# The same holds for every value: adding something below half its ulp changes nothing. In training this is a
# *lost update* (tutorial 7). An `fpsim.array` rounds every result, so it shows it as plain numpy code would:

# %%
weights = fpsim.array([1.0, 100.0, 1000.0], "fp16")
update = 1e-2
print(weights + update)
assert (weights + update)[0] != 1.0  # 0.01 is more than half an ulp of 1 ...
assert list((weights + update)[1:]) == [100.0, 1000.0]  # ... but less than half an ulp of 100 (2^-4)

# %% [markdown]
# ## Swamping: long sums stall
#
# Add 0.0001 a hundred thousand times. The exact sum of these fp16 terms is about 10. In fp16, one addition
# after another, it stops at 0.25.

# %%
n = 100_000
x = np.full(n, 1e-4)
term = fpsim.round(1e-4, "fp16")
exact = n * Fraction(term)  # the exact sum of the fp16 terms
sequential = fpsim.sum(x, "fp16")
print(f"exact sum: {float(exact):.6f}   fp16, one by one: {sequential}")
assert sequential == 0.25

# %% [markdown]
# At 0.25 the ulp is 2^-12 ≈ 0.000244, so half an ulp (0.000122) is more than the term: each new term is lost.
# Just below 0.25 the ulp is 2^-13, and the term (0.82 of an ulp) rounds *up* to a whole ulp, so the sum even
# runs ahead of the truth until it hits 0.25. The big partial sum *swamps* the small terms.

# %%
assert fp16.ulp(0.25) / 2 > term  # at 0.25: lost
assert fp16.ulp(0.2) / 2 < term < fp16.ulp(0.2)  # below 0.25: rounded up to one whole ulp
assert fpsim.add(0.25, term, "fp16") == 0.25

# %% [markdown]
# ## Four ways to sum
#
# `fpsim.sum` takes an accumulation model:
#
# - `accumulate="fp32"`: fp16 terms, fp32 partial sums (what Tensor Cores and torch's CPU kernels do);
# - `order="kahan"`: all in fp16, but a second variable carries each addition's rounding error into the next;
# - `order="pairwise"`: add neighbours in pairs, then pairs of pairs, a balanced tree.
#
# Let us follow each sum as the terms come in, at 25 checkpoints.

# %%
methods = {
    "fp16, one by one": {},
    "fp16 terms, fp32 partial sums": {"accumulate": "fp32"},
    "fp16, Kahan": {"order": "kahan"},
    "fp16, pairwise": {"order": "pairwise"},
}
checkpoints = np.linspace(n // 25, n, 25, dtype=int)
running = {name: [fpsim.sum(x[:k], "fp16", **options) for k in checkpoints] for name, options in methods.items()}
final = {name: sums[-1] for name, sums in running.items()}
for name, value in final.items():
    print(f"{name:30} {value:10.6f}   error {float(Fraction(value) - exact):+.2e}")

# %%
fig = Figure(figsize=(11, 4), layout="constrained")
ax_sum, ax_error = fig.subplots(1, 2)
truth = [k * Fraction(term) for k in checkpoints]
ax_sum.plot(checkpoints, [float(t) for t in truth], color="black", lw=6, alpha=0.25, label="exact")
styles = [("o-", "#D55E00"), ("s--", "#0072B2"), ("^:", "#009E73"), ("x-.", "#CC79A7")]
for (name, sums), (style, colour) in zip(running.items(), styles):
    ax_sum.plot(checkpoints, sums, style, color=colour, label=name, ms=4)
    errors = [float(Fraction(s) - t) for s, t in zip(sums, truth)]
    ax_error.plot(checkpoints, errors, style, color=colour, label=name, ms=4)
ax_sum.set(xlabel="terms added", ylabel="sum", title=f"Summing {n:,} × 0.0001 in fp16")
ax_sum.legend()
ax_error.set_yscale("symlog", linthresh=1e-3)
ax_error.axhline(0, color="grey", lw=0.5)
ax_error.set(xlabel="terms added", ylabel="sum − exact (symmetric log scale)", title="The error of each method")
fig.savefig(OUT / "04_swamping.png", dpi=100)
fig

# %% [markdown]
# Kahan and pairwise summation, *entirely in fp16*, end on the best fp16 answer: the exact sum rounded once.
# Along the way they are not always that good. The best any fp16 number can do is half an ulp; pairwise stays
# within about 0.6 ulp, while Kahan, whose compensation is itself an fp16 number, drifts up to about 1.5 ulps
# away in the middle of the run before its correction catches up. Count it at the 25 checkpoints:
#
# fp32 partial sums drift instead. Each fp32 addition rounds by at most half an fp32 ulp (2^-20 / 2 near 10),
# and because every term is the same, those errors lean the same way and add up over 100,000 additions.
# The drift stays far inside that worst case, and far below the one-by-one fp16 sum's error.

# %%
ulps = {  # |sum − exact| in ulps of the exact value, exactly
    name: [abs(Fraction(s) - t) / Fraction(fp16.ulp(float(t))) for s, t in zip(running[name], truth)]
    for name in ("fp16, Kahan", "fp16, pairwise")
}
for name, errors in ulps.items():
    beyond = sum(e > Fraction(1, 2) for e in errors)  # more than half an ulp: not the nearest fp16 number
    print(f"{name:15} largest error {float(max(errors)):.2f} ulp; over half an ulp at {beyond} of 25 checkpoints")
assert 1 < max(ulps["fp16, Kahan"]) < Fraction(3, 2)  # Kahan in fp16 is at times more than a whole ulp off ...
assert Fraction(1, 2) < max(ulps["fp16, pairwise"]) < Fraction(3, 5)
best_fp16 = fpsim.round(float(exact), "fp16")  # exact is 10.0016..., which float64 holds to 1e-15
assert final["fp16, Kahan"] == final["fp16, pairwise"] == best_fp16  # ... but both end on the best answer
fp32_error = abs(Fraction(final["fp16 terms, fp32 partial sums"]) - exact)
assert fpsim.FP32.ulp(10.0) == 2**-20
assert fp32_error <= n * Fraction(fpsim.FP32.ulp(10.0)) / 2  # n roundings, each at most half an ulp
assert fp32_error < 0.01
assert abs(final["fp16, one by one"] - float(exact)) > 9

# %% [markdown]
# Why pairwise works: each term passes through only log2(n) ≈ 17 additions, and the numbers added together
# stay of similar size, so no small term meets a huge partial sum. Sequential summation's error can grow like
# n · u; pairwise like log2(n) · u.

# %% [markdown]
# ## Cancellation
#
# Subtracting two nearby numbers is *exact* in floating point (Sterbenz's lemma: if y/2 ≤ x ≤ 2y, x − y is
# representable). But the result keeps only the difference of what was stored, errors included. The rounding
# error that was tiny relative to x becomes large relative to x − y.

# %%
a = fpsim.round(1.001, "fp16")  # 1.001 is stored with a small relative error
difference, flags = fpsim.sub(a, 1.0, "fp16", flags=True)
true_difference = Fraction(1001, 1000) - 1
relative_in = abs(Fraction(a) - Fraction(1001, 1000)) / Fraction(1001, 1000)
relative_out = abs(Fraction(difference) - true_difference) / true_difference
print(f"1.001 stored as {a}: relative error {float(relative_in):.2e}")
print(f"minus 1: {difference} (true 0.001): relative error {float(relative_out):.2e}")
print("flags of the subtraction:", flags)
print(f"amplification: {float(relative_out / relative_in):g}")

assert flags.inexact == 0  # the subtraction itself made no error ...
# ... yet its relative error is the input's times |x| / |x − y| = 1.001 / 0.001 = 1001,
assert relative_out / relative_in == Fraction(1001)
assert relative_out > 40 * 2**-11  # far beyond fp16's unit roundoff

# %% [markdown]
# The cure is algebra, not more bits at the end: compute the small difference before it is rounded away.
# For example, (x + y)(x − y) instead of x² − y² (or, in softmax, subtracting the maximum first).

# %%
x, y = 200.5, 199.5  # both exact in fp16
assert fpsim.round(x, "fp16") == x
assert fpsim.round(y, "fp16") == y
naive = fpsim.sub(fpsim.mul(x, x, "fp16"), fpsim.mul(y, y, "fp16"), "fp16")
factored = fpsim.mul(fpsim.add(x, y, "fp16"), fpsim.sub(x, y, "fp16"), "fp16")
exact = Fraction(x) ** 2 - Fraction(y) ** 2
print(f"x² − y² = {naive}   (x + y)(x − y) = {factored}   exact {exact}")
print("x² and y² in fp16:", fpsim.mul(x, x, "fp16"), fpsim.mul(y, y, "fp16"), "(the ulp there is 32)")
assert factored == exact == 400
assert naive == 384  # each square lost up to 16 to rounding; the subtraction exposed it

# %% [markdown]
# ## Try it
#
# **Try it.** What is the smallest bf16 number x with 1 + x ≠ 1 in bf16? Check with `fpsim.add` (which rounds
# its operands to the format first, as a cast would).
#
# **Try it.** Sum ten thousand 0.01s in fp16, one by one. Predict where it stalls from the ulps, then check.
# Does `accumulate="fp32"` fix it?

# %%
# Solution: bf16 has 7 mantissa bits, so ulp(1) = 2^-7 and the tie is at 2^-8, which rounds to even (1).
# The next bf16 number above 2^-8 is 2^-8 + 2^-15 (ulp(2^-8) = 2^-15), and that one is kept.
x = fpsim.next_up(2**-8, "bf16")
print("1 + 2^-8 ->", fpsim.add(1, 2**-8, "bf16"), "| 1 + next_up(2^-8) ->", fpsim.add(1, x, "bf16"))
assert x == 2**-8 + 2**-15
assert fpsim.add(1, 2**-8, "bf16") == 1.0
assert fpsim.add(1, x, "bf16") == 1 + 2**-7

# %%
# Solution: the sum stalls once half its ulp exceeds fp16(0.01): ulp 2^-5 = 0.031 from 32 on. Below 32 the
# ulp is 2^-6 = 0.0156, and 0.01 rounds up to one whole ulp, so the sum climbs to exactly 32 and stays.
terms = np.full(10_000, 0.01)
stalled = fpsim.sum(terms, "fp16")
print("fp16:", stalled, "| fp32 partial sums:", fpsim.sum(terms, "fp16", accumulate="fp32"))
assert fp16.ulp(32.0) / 2 > fpsim.round(0.01, "fp16") > fp16.ulp(31.0) / 2
assert stalled == 32.0
assert abs(fpsim.sum(terms, "fp16", accumulate="fp32") - 10_000 * fpsim.round(0.01, "fp16")) < 0.01

# %% [markdown]
# ## Recap
#
# - x + y = x whenever y is below half an ulp of x: 1 + 0.0001 = 1 in fp16.
# - Long sequential sums stall once the partial sum's half ulp passes the terms (swamping): 100,000 × 0.0001
#   gives 0.25.
# - fp32 partial sums, Kahan's compensation and pairwise trees all fix it; Kahan and pairwise even in fp16.
# - Subtracting close numbers is exact but exposes their earlier rounding errors (cancellation); rearrange
#   the formula instead.
#
# Next: tutorial 5, what a Tensor Core does inside one matrix multiply.
