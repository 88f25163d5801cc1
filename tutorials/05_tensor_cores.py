# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 5. What a Tensor Core really does
#
# *Goal:* follow one dot product through a GPU's matrix unit: exact products, alignment to the largest
# exponent, truncation. See a sum that shrinks when a term grows, and why fp8 GEMMs need "promotion".
#
# *Time:* about 15 minutes
#
# Every number here is computed as you run it, and every claim is checked by an `assert`. The last section
# runs on a CUDA GPU when there is one, and skips itself otherwise.

# %%
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import fpsim
import fpsim.plots
import fpsim.torch

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Not quite "fp16 multiply, fp32 accumulate"
#
# The usual summary of a Tensor Core is "multiply in fp16, accumulate in fp32". Measurements (Fasi et al.
# 2021 and later papers) show something different. Inside one matrix-multiply-accumulate instruction the
# unit takes a **group** of products plus the running sum c, and:
#
# 1. forms every product **exactly**;
# 2. **aligns** all of them to the largest exponent E among them;
# 3. **truncates** each to a multiple of 2^(E − f), where f is a fixed number of fraction bits;
# 4. adds the truncated terms exactly, and rounds the result once, toward zero, to fp32.
#
# The next group starts from that result. fpsim keeps each GPU's numbers in `fpsim.MATRIX_UNITS`:

# %%
for name in ("v100_fp16", "a100_fp16", "h100_fp16", "h100_fp8_e4m3", "b200_fp16"):
    unit = fpsim.MATRIX_UNITS[name]
    print(f"{name:15} inputs {unit.inputs[0]:9} {unit.group:3} products per group, f = {unit.fraction_bits} bits")

assert fpsim.MATRIX_UNITS["h100_fp16"].group == 16
assert fpsim.MATRIX_UNITS["h100_fp16"].fraction_bits == 25
assert fpsim.MATRIX_UNITS["h100_fp8_e4m3"].fraction_bits == 13

# %% [markdown]
# ## Step 1: products are exact
#
# An fp16 number has an 11-bit significand, so the product of two has at most 22 significant bits. fp32
# holds 24, so no product is rounded. Check on random fp16 pairs, against exact fractions:

# %%
rng = np.random.default_rng(0)
a16 = fpsim.round(rng.normal(size=10_000) * 2.0 ** rng.integers(-8, 8, 10_000), "fp16")
b16 = fpsim.round(rng.normal(size=10_000) * 2.0 ** rng.integers(-8, 8, 10_000), "fp16")
products, flags = fpsim.mul(a16, b16, "fp32", flags=True)
print(flags)
assert flags.inexact == 0
assert all(Fraction(p) == Fraction(x) * Fraction(y) for p, x, y in zip(products[:500], a16[:500], b16[:500]))

# %% [markdown]
# ## Steps 2–4: alignment and truncation, term by term
#
# `fpsim.explain_dot(a, b, unit)` shows one small dot product inside the unit: each exact product, its
# exponent, what is kept after alignment to E, and what truncation throws away. Sixteen terms fill one H100
# group. Watch the small products lose their low bits to the large one.

# %%
a = fpsim.round(np.array([300.0, 1.0, -2.5, 0.1, 3e-3, 1e-3, 7.0, -0.3] * 2), "fp16")
b = fpsim.round(np.array([1.5, 0.1, 0.7, 0.33, 0.2, 1.1, -0.01, 2.0] * 2), "fp16")
print(fpsim.explain_dot(a, b, "h100_fp16"))
exact_sum = sum(Fraction(x) * Fraction(y) for x, y in zip(a, b))
on_unit = fpsim.dot(a, b, model="h100_fp16")
assert max(abs(a * b)) == 450.0
assert math.frexp(max(abs(a * b)))[1] - 1 == 8  # its exponent E = 8: 450 = 1.76 · 2^8
assert on_unit != fpsim.round(float(exact_sum), "fp32")  # not the exact sum rounded once ...
assert on_unit < exact_sum  # ... but below it: the products that lost bits were positive, cut toward zero

# %% [markdown]
# The largest product, 300 · 1.5 = 450, has exponent 8 (450 = 1.76 · 2^8), so everything is cut to a
# multiple of 2^(8 − 25) = 2^-17 ≈ 7.6e-6 (the "truncated" column). The result is not the exact sum rounded
# once: it is below it, since the products that lost bits were positive and cuts go toward zero.
#
# That rule is short enough to write ourselves. Here it is in exact fractions, independent of fpsim, and
# checked against `fpsim.dot(..., model="h100_fp16")` on 200 random dot products with a wide spread of
# exponents.


# %%
def exponent_of(x: Fraction, emin: int) -> int:
    """floor(log2|x|), exactly, but never below the format's emin (where its subnormals sit)."""
    x = abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()  # floor(log2 x) or one more
    if Fraction(2) ** e > x:
        e -= 1
    return max(e, emin)


def truncate(x: Fraction, quantum: Fraction) -> Fraction:
    """x cut toward zero to a multiple of quantum."""
    return math.trunc(x / quantum) * quantum


def unit_dot_by_hand(a: np.ndarray, b: np.ndarray, group: int = 16, f: int = 25) -> float:
    c = Fraction(0)
    for start in range(0, len(a), group):
        # Each product's exponent is the sum of its factors' exponents (its significand lies in [1, 4)).
        terms = [
            (Fraction(x) * Fraction(y), exponent_of(Fraction(x), -14) + exponent_of(Fraction(y), -14))
            for x, y in zip(a[start : start + group], b[start : start + group])
            if x != 0 and y != 0
        ]
        if c != 0:
            terms.append((c, exponent_of(c, -126)))
        if not terms:
            continue
        e_max = max(e for _, e in terms)
        total = sum(truncate(v, Fraction(2) ** (e_max - f)) for v, _ in terms)
        # One rounding toward zero to fp32: keep 24 significant bits.
        c = truncate(total, Fraction(2) ** (exponent_of(total, -126) - 23)) if total != 0 else Fraction(0)
    return float(c)


for trial in range(200):
    k = int(rng.integers(1, 65))
    x = fpsim.round(rng.normal(size=k) * 2.0 ** rng.integers(-12, 12, k), "fp16")
    y = fpsim.round(rng.normal(size=k) * 2.0 ** rng.integers(-12, 12, k), "fp16")
    assert fpsim.dot(x, y, model="h100_fp16") == unit_dot_by_hand(x, y), trial
print("fpsim.dot(model='h100_fp16') = the rule written by hand, on 200 random dot products")

# %% [markdown]
# (Assert checkpoints like this one pin fpsim to the published rule; fpsim's own tests check every preset
# against an exact reference, and the README lists where the models were checked against real chips.)

# %% [markdown]
# ## A sum that shrinks when a term grows
#
# Take 32 terms, two H100 groups. Group 1 is 1·1 plus one tiny negative product, −2^-24. Group 2 is sixteen
# products of 2^-26. The running sum after group 1 is 1 − 2^-24, just below 1, so its exponent is −1 and
# group 2 is aligned to 2^(−1 − 25) = 2^-26: all sixteen survive.
#
# Now *raise* the negative term to 0. The running sum is exactly 1, exponent 0, and group 2 is cut to
# multiples of 2^-25: all sixteen products vanish. A larger term, a smaller sum.

# %%
a = np.zeros(32)
b = np.zeros(32)
a[0], b[0] = 1.0, 1.0
a[1], b[1] = -(2.0**-12), 2.0**-12  # the product -2^-24
a[16:], b[16:] = 2.0**-13, 2.0**-13  # sixteen products 2^-26
a_larger = a.copy()
a_larger[1] = 0.0  # the product -2^-24 becomes 0: every term is now >= before

with_negative = fpsim.dot(a, b, model="h100_fp16")
with_zero = fpsim.dot(a_larger, b, model="h100_fp16")
print(f"terms as above:        {float(with_negative)!r}")
print(f"one term made larger:  {float(with_zero)!r}")
text = fpsim.explain_dot(a, b, "h100_fp16")
print("\n".join(line for line in text.splitlines() if " none " not in line), "\n(zero products hidden)")

assert np.all(a_larger * b >= a * b)
assert with_zero < with_negative  # not monotonic
assert with_negative == 1 + 2**-23  # 1 - 2^-24 + 16·2^-26 = 1 + 3·2^-24, cut toward zero to fp32
assert with_zero == 1.0
assert with_negative == unit_dot_by_hand(a, b)
assert with_zero == unit_dot_by_hand(a_larger, b)

# %% [markdown]
# The truncation error is tiny here (an fp32 ulp). It matters because it always points the same way (toward
# zero), and because it depends on the order and grouping of terms, which is why the same matmul on two GPUs
# can differ in the last bits.

# %% [markdown]
# ## fp8: a 13-bit accumulator and the promotion fix
#
# Hopper's fp8 unit keeps only f = 13 fraction bits, and its result keeps 13 too. In a long dot product the
# running sum becomes large, every new group is aligned to it, and each truncation throws away up to 2^-13 of
# it. DeepSeek-V3 reported errors of about 2% at K = 4096, and a fix: every 128 terms, hand the partial sum to
# ordinary fp32 adds on the CUDA cores ("promotion") and restart the unit from zero. `promote_every=128`
# models it. Our data is all positive, so the running sum only grows and the error is larger still.

# %%
k = 4096
x = fpsim.round(rng.uniform(0.5, 2.0, (1, k)), "fp8_e4m3")
y = fpsim.round(rng.uniform(0.5, 2.0, (k, 1)), "fp8_e4m3")
exact = math.fsum((x[0] * y[:, 0]).tolist())  # e4m3 products and their sums are exact in float64 here
errors = {}
for promote in (None, 128):
    result = fpsim.matmul(x, y, model="h100_fp8_e4m3", promote_every=promote)[0, 0]
    errors[promote] = abs(result - exact) / exact
    print(f"promote_every={promote}: {result:.4f} (exact {exact:.4f}), relative error {errors[promote]:.2e}")

assert errors[None] > 0.01  # percent-level, as DeepSeek measured
assert errors[128] < errors[None] / 10

# %% [markdown]
# `fpsim.plots.dot_error_curves` repeats this for many K and units, and `accumulation_error` draws it. Note that
# even the fp16 units end above plain fp32 sums on the CUDA cores: on positive data every truncation cuts the
# same way, while round-to-nearest errors partly cancel.

# %%
ks = (16, 64, 256, 1024, 4096)
curves = fpsim.plots.dot_error_curves(ks=ks, rows=32)
fig, ax = fpsim.plots.accumulation_error(ks, curves)
fig.savefig(OUT / "05_dot_error_against_k.png", dpi=100)
for name, curve in curves.items():
    print(f"{name:45} error at K={ks[-1]}: {curve[-1]:.2e}")
fp8_plain = curves["h100_fp8_e4m3: 32 products, 13 bits"]
fp8_promoted = curves["h100_fp8_e4m3, promote_every=128"]
assert fp8_plain[-1] > 10 * fp8_promoted[-1]
assert fp8_plain[-1] > fp8_plain[0]  # the error grows with K
fp16_unit, fp32_sequential = (
    curves["h100_fp16 = b200_fp16: 16 products, 25 bits"],
    curves["fp32 sequential (CUDA cores)"],
)
assert fp16_unit[-1] > fp32_sequential[-1]  # truncation is biased: worse than rounding to nearest in fp32
fig

# %% [markdown]
# ## The same models on torch tensors
#
# `fpsim.torch.matmul` runs these models with torch operations, on any device, bit for bit as `fpsim.matmul`:

# %%
ta = torch.from_numpy(fpsim.round(rng.normal(size=(8, 512)), "fp8_e4m3"))
tb = torch.from_numpy(fpsim.round(rng.normal(size=(512, 4)), "fp8_e4m3"))
on_torch = fpsim.torch.matmul(ta, tb, model="h100_fp8_e4m3", promote_every=128)
on_numpy = fpsim.matmul(ta.numpy(), tb.numpy(), model="h100_fp8_e4m3", promote_every=128)
assert np.array_equal(on_torch.numpy(), on_numpy)
print("fpsim.torch.matmul == fpsim.matmul, bit for bit:", on_torch.shape)

# %% [markdown]
# ## On a real GPU
#
# With CUDA, we compare the GPU's own fp16 matmul (fp32 output where torch offers it) with the model of its
# generation, and with the textbook model (exact products, fp32 sums one by one), on inputs built to expose
# alignment: exponents spread over 20 binades and cancelling signs. cuBLAS may otherwise split K and add
# partial sums in fp16, so we switch that off first.

# %%
PRESET_BY_CAPABILITY = {(7, 0): "v100_fp16", (8, 0): "a100_fp16", (9, 0): "h100_fp16", (10, 0): "b200_fp16"}

if torch.cuda.is_available():
    capability = torch.cuda.get_device_capability()
    preset = PRESET_BY_CAPABILITY.get(capability)
    print(torch.cuda.get_device_name(), "capability", capability, "model", preset)
    if preset is None:
        print("No matrix-unit preset for this GPU: nothing to compare.")
    else:
        flag = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        try:
            gen = torch.Generator("cuda").manual_seed(0)
            shape_a, shape_b = (256, 1024), (1024, 256)
            spread_a = 2.0 ** torch.randint(-10, 10, shape_a, device="cuda", generator=gen)
            spread_b = 2.0 ** torch.randint(-10, 10, shape_b, device="cuda", generator=gen)
            ga = torch.randn(shape_a, device="cuda", generator=gen) * spread_a
            gb = torch.randn(shape_b, device="cuda", generator=gen) * spread_b
            ga, gb = ga.half(), gb.half()
            try:  # an fp32 output shows the unit's truncation; torch >= 2.11 offers it on CUDA
                chip, out = torch.mm(ga, gb, out_dtype=torch.float32), "fp32"
            except (TypeError, RuntimeError):  # older torch: the fp16 output, rounded once from fp32
                chip, out = (ga @ gb).float(), "fp16"
            model = fpsim.torch.matmul(ga.float(), gb.float(), model=preset, out=out)
            textbook = fpsim.torch.matmul(ga.float(), gb.float(), model="fp16_fp32acc", out=out)
            same_model = (chip == model).float().mean().item()
            same_textbook = (chip == textbook).float().mean().item()
            print(f"{out} outputs identical to the {preset} model: {same_model:.2%}")
            print(f"{out} outputs identical to exact products + fp32 sequential sums: {same_textbook:.2%}")
            if capability == (9, 0) and preset == "h100_fp16":  # verified on an H200: 100% (README)
                assert same_model == 1.0
            else:  # not verified on this generation: cuBLAS may pick kernels that group differently
                print("(not asserted: the model was checked bit for bit only on a Hopper GPU, capability 9.0)")
        finally:
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = flag
else:
    print("No CUDA here: the comparison with a real GPU is skipped. The models above ran on the CPU.")

# %% [markdown]
# ## Try it
#
# **Try it.** Build a hypothetical H100 with two more fraction bits,
# `fpsim.MatrixUnit("h100_fp16_f27", inputs=("fp16",), group=16, fraction_bits=27)`, and pass it as `model=`
# to the non-monotonic example. Is the sum still smaller when the term grows? Why?
#
# **Try it.** Redo the K = 4096 fp8 dot product with `promote_every` = 32, 512 and 1024. How does the error
# change with the promotion interval?

# %%
# Solution: with f = 27, group 2 is cut to multiples of 2^(0 - 27) even when the running sum is 1, so the
# sixteen 2^-26 products survive in both cases, and the larger term now gives the larger sum.
wider = fpsim.MatrixUnit("h100_fp16_f27", inputs=("fp16",), group=16, fraction_bits=27)
print(fpsim.dot(a, b, model=wider), fpsim.dot(a_larger, b, model=wider))
assert fpsim.dot(a_larger, b, model=wider) > fpsim.dot(a, b, model=wider)
assert fpsim.dot(a, b, model=wider) == unit_dot_by_hand(a, b, f=27)
assert fpsim.dot(a_larger, b, model=wider) == unit_dot_by_hand(a_larger, b, f=27)

# %%
# Solution: the longer the unit runs before promotion, the larger its running sum, the more truncation.
# With promote_every=32, each run is a single group of 32 products, which fits exactly in 13 bits here.
for promote in (32, 512, 1024):
    result = fpsim.matmul(x, y, model="h100_fp8_e4m3", promote_every=promote)[0, 0]
    errors[promote] = abs(result - exact) / exact
for promote in (32, 128, 512, 1024, None):
    print(f"promote_every={promote}: relative error {errors[promote]:.2e}")
assert errors[32] == 0  # nothing cut: each group of 32 products, and the fp32 sums of the groups, were exact
assert errors[32] <= errors[128] <= errors[512] <= errors[1024] <= errors[None]

# %% [markdown]
# ## Recap
#
# - A matrix unit forms products exactly, aligns a group of them (and the running sum) to the largest
#   exponent, truncates each to f fraction bits, adds exactly, and rounds toward zero.
# - So a matmul result depends on grouping and order, and the sum is not monotonic: a larger term can give a
#   smaller result.
# - fp8 units keep only 13 bits: on long dot products the error reaches percent level. Promotion every 128
#   terms to fp32 fixes most of it.
# - `fpsim.matmul(..., model=...)`, `fpsim.dot`, `fpsim.explain_dot` and `fpsim.torch.matmul` run these models;
#   `fpsim.MATRIX_UNITS` lists the presets with their sources.
#
# Next: tutorial 6, loss scaling.
