# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 1. The bits of a float
#
# *Goal:* read the sign, exponent and mantissa of an fp32 and an fp16 number, and see exactly what 0.1 becomes.
#
# *Time:* about 10 minutes
#
# Every number in this tutorial is computed as you run it, and every claim is checked by an `assert`.
# If an assert ever fails, the text is wrong, not you.

# %%
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np

import fpsim
import fpsim.plots

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Three fields
#
# A binary float stores three things:
#
# - a **sign** bit s (0 for +, 1 for −),
# - an **exponent** field E, an unsigned integer with a *bias* subtracted,
# - a **mantissa** field M, the bits after the binary point of a significand 1.M.
#
# For a normal number the value is (−1)^s · 2^(E − bias) · (1 + M / 2^m), where m is the number of mantissa
# bits. fp16 has 1 + 5 + 10 bits and bias 15; fp32 has 1 + 8 + 23 bits and bias 127.
#
# Here is 1.0 in fp16. `encode` gives the 16-bit code, `fields` splits it.

# %%
fp16, fp32 = fpsim.FP16, fpsim.FP32
print("fp16:", fp16.nexp, "exponent bits,", fp16.nmant, "mantissa bits, bias", fp16.bias)
print("fp32:", fp32.nexp, "exponent bits,", fp32.nmant, "mantissa bits, bias", fp32.bias)

code = int(fpsim.encode(1.0, "fp16"))
sign, exponent, mantissa = (int(f) for f in fpsim.fields(code, "fp16"))
print(f"1.0 in fp16: code {code:#06x} = {code:016b}")
print("sign", sign, "| exponent field", exponent, "| mantissa field", mantissa)

assert (fp16.nexp, fp16.nmant, fp16.bias) == (5, 10, 15)
assert (fp32.nexp, fp32.nmant, fp32.bias) == (8, 23, 127)
# 1.0 = +2^0 · 1.0: sign 0, exponent field 0 + bias, mantissa 0.
assert (sign, exponent, mantissa) == (0, fp16.bias, 0)
assert code == (fp16.bias << fp16.nmant)

# %% [markdown]
# The same formula decodes *every* normal fp16 code. Let us write it ourselves in exact fractions and
# check it against fpsim and against numpy's own float16, for all normal codes at once.


# %%
def value_of(sign: int, exponent: int, mantissa: int, nmant: int = 10, bias: int = 15) -> Fraction:
    """The value of a normal number from its three fields, exactly."""
    return (-1) ** sign * Fraction(2) ** (exponent - bias) * (1 + Fraction(mantissa, 2**nmant))


codes = np.arange(2**16, dtype=np.uint16)
signs, exponents, mantissas = fpsim.fields(codes, "fp16")  # fields also takes whole arrays
normal = (exponents > 0) & (exponents < 2**fp16.nexp - 1)  # neither all zeros nor all ones
ours = [value_of(int(s), int(e), int(m)) for s, e, m in zip(signs[normal], exponents[normal], mantissas[normal])]
theirs = fpsim.decode(codes[normal], "fp16")
assert all(Fraction(t) == o for t, o in zip(theirs, ours))
assert np.array_equal(theirs, codes[normal].view(np.float16).astype(np.float64))
print(f"All {normal.sum()} normal fp16 codes: our formula, fpsim.decode and numpy's float16 agree exactly")

# %% [markdown]
# Codes whose exponent field is all zeros or all ones are not normal numbers: zeros, subnormals,
# infinities and NaN. Tutorial 2 is about them.

# %% [markdown]
# ## 0.1 is not 0.1
#
# 0.1 = 1.6 · 2^-4. The significand 1.6 is 1.1001100110011…₂ in binary: the pattern 0011 repeats forever.
# A format keeps only m bits of it, so it must round.
#
# `fpsim.explain` shows everything at once. Passing the *string* "0.1" means fpsim reads the decimal exactly,
# not through Python's float64.

# %%
explanation = fpsim.explain("0.1", ["fp32", "fp16"])
print(explanation)

# %% [markdown]
# Let us check the fp32 column by hand. The exponent is −4, so the 23 mantissa bits hold 0.6 · 2^23 =
# 5033164.8, which rounds to the integer 5033165. The stored value is then exactly (2^23 + 5033165) / 2^27.

# %%
e32 = fpsim.explain("0.1", "fp32")
mantissa_by_hand = round(Fraction(6, 10) * 2**23)  # 5033164.8 rounds to 5033165
stored_by_hand = (2**23 + mantissa_by_hand) * Fraction(1, 2**27)
stored = fpsim.round(0.1, "fp32")

print("mantissa field by hand:", mantissa_by_hand, "| fpsim:", int(fpsim.fields(e32.code, "fp32")[2]))
print("stored value, exactly: ", Decimal(stored))
print("error:                 ", float(stored_by_hand - Fraction(1, 10)))

assert e32.exponent == -4
assert int(fpsim.fields(e32.code, "fp32")[2]) == mantissa_by_hand
assert Fraction(stored) == stored_by_hand
assert str(Decimal(stored)) == e32.exact_value == "0.100000001490116119384765625"
assert stored_by_hand > Fraction(1, 10)  # fp32's 0.1 is a little *more* than 0.1
assert float(np.float32(0.1)) == stored  # numpy's float32 agrees

# %% [markdown]
# `Decimal(x)` of a float prints its exact binary value in decimal. Every binary fraction has a finite
# decimal expansion, so nothing is cut off: 0.100000001490116119384765625 *is* the number fp32 stores.

# %% [markdown]
# ## The neighbours
#
# 0.1 falls between two fp32 values. `next_down` and `next_up` step one code down and up.
# Rounding to nearest picks the closer one.

# %%
below = fpsim.next_down(stored, "fp32")
above = stored
tenth = Fraction(1, 10)
print("below:", Decimal(below), " distance", float(tenth - Fraction(below)))
print("above:", Decimal(above), " distance", float(Fraction(above) - tenth))
print("gap between them (one ulp):", Fraction(above) - Fraction(below))

assert Fraction(below) < tenth < Fraction(above)
assert Fraction(above) - tenth < tenth - Fraction(below)  # the one above is nearer: that is why we got it
# One ulp at exponent -4 with 23 mantissa bits is 2^(-4-23).
assert Fraction(above) - Fraction(below) == Fraction(1, 2**27) == Fraction(e32.ulp)

# %% [markdown]
# fp16 keeps only 10 mantissa bits, so its steps are 2^13 times wider and its 0.1 is further off.
# This time the nearer neighbour is the one *below*.

# %%
stored16 = fpsim.round(0.1, "fp16")
print("fp16's 0.1:", Decimal(stored16), "error", float(Fraction(stored16) - tenth))
assert Fraction(stored16) < tenth
assert Fraction(fpsim.next_up(stored16, "fp16")) - Fraction(stored16) == Fraction(1, 2**14)
assert abs(Fraction(stored16) - tenth) > abs(Fraction(stored) - tenth) * 2**12

# %% [markdown]
# ## The picture
#
# `fpsim.plots.bit_layout` draws the boxes: sign, exponent and mantissa, numbered from the top bit.

# %%
fig, ax = fpsim.plots.bit_layout(0.1, ["fp32", "fp16"])
fig.savefig(OUT / "01_bits_of_0.1.png", dpi=100)
fig

# %% [markdown]
# ## Toggling one bit
#
# What happens if one bit of fp16's 0.1 flips? Bit 0 is the last mantissa bit, bits 10–14 are the exponent,
# bit 15 is the sign. (This is what float.exposed lets you click.)

# %%
code16 = int(fpsim.encode(0.1, "fp16"))
for bit in (0, 9, 10, 11, 14, 15):
    flipped = code16 ^ (1 << bit)
    print(f"flip bit {bit:2}: {flipped:016b} -> {fpsim.decode(flipped, 'fp16')}")

# %% [markdown]
# Read the pattern:
#
# - the last mantissa bit moves the value by one ulp, to a neighbour;
# - the top mantissa bit (9) is worth half the width of the binade [2^-4, 2^-3), so it moves the value by 2^-5;
# - an exponent bit multiplies or divides by a power of two: bit 10 by 2, bit 14 by 2^16;
# - the sign bit negates.


# %%
def flip(bit: int) -> float:
    return fpsim.decode(code16 ^ (1 << bit), "fp16")


assert flip(0) == fpsim.next_up(stored16, "fp16")  # the last bit of 0x2e66 is 0, so flipping it adds one ulp
assert flip(9) == stored16 - 2**-5  # bit 9 was 1
assert flip(10) == stored16 / 2  # exponent field 01011 -> 01010
assert flip(11) == stored16 / 4  # 01011 -> 01001
assert flip(14) == stored16 * 2**16  # 01011 -> 11011: 11 + 16 = 27
assert flip(15) == -stored16

# %% [markdown]
# ## The command line
#
# The same explanation is one command away in a terminal: `fpsim explain 0.1 --format fp32,fp16`.
# Here we run it (through this Python, so it works wherever fpsim is installed).

# %%
result = subprocess.run(
    [sys.executable, "-m", "fpsim", "explain", "0.1", "--format", "fp16"],
    capture_output=True,
    text=True,
    check=True,
)
print(result.stdout)
assert f"{code16:#06x}" in result.stdout  # the same code as fpsim.encode gave

# %% [markdown]
# ## Try it
#
# **Try it.** Work out the fp16 bits of −2.5 by hand (sign, exponent field, mantissa field), then check
# with `fpsim.encode` and `fpsim.fields`.
#
# **Try it.** How many fp16 values lie in [1, 2)? And in [1024, 2048)? What is the gap between
# neighbours in each? Predict, then count with `fpsim.next_up`.
#
# **Try it.** Does 0.1 + 0.2 equal 0.3 in fp16? Use `fpsim.add` and `fpsim.round`.

# %%
# Solution: -2.5 = -1.25 · 2^1, so sign 1, exponent field 1 + 15 = 16, mantissa 0.25 · 2^10 = 256.
code = int(fpsim.encode(-2.5, "fp16"))
print(f"-2.5 in fp16: {code:#06x}", tuple(int(f) for f in fpsim.fields(code, "fp16")))
assert tuple(int(f) for f in fpsim.fields(code, "fp16")) == (1, 16, 256)
assert code == (1 << 15) | (16 << 10) | 256

# %%
# Solution: one binade holds 2^10 values (every mantissa field), whatever its exponent; only the gap changes.
for low in (1.0, 1024.0):
    count, x = 0, low
    while x < 2 * low:
        count, x = count + 1, fpsim.next_up(x, "fp16")
    print(f"[{low:g}, {2 * low:g}): {count} values, gap {fpsim.next_up(low, 'fp16') - low}")
    assert count == 2**10
    assert fpsim.next_up(low, "fp16") - low == low * 2**-10

# %%
# Solution: no. Each of 0.1, 0.2 and 0.3 is rounded, and so is the sum.
total = fpsim.add(fpsim.round(0.1, "fp16"), fpsim.round(0.2, "fp16"), "fp16")
print("0.1 + 0.2 in fp16:", Decimal(total), "| 0.3 in fp16:", Decimal(fpsim.round(0.3, "fp16")))
assert total != fpsim.round(0.3, "fp16")
assert fpsim.next_up(total, "fp16") == fpsim.round(0.3, "fp16")  # one ulp apart

# %% [markdown]
# ## Recap
#
# - A float is a sign, a biased exponent and a mantissa: (−1)^s · 2^(E − bias) · 1.M.
# - fp32 has 8 exponent and 23 mantissa bits; fp16 has 5 and 10.
# - 0.1 has no finite binary expansion. fp32 stores 0.100000001490116119384765625, the nearer of its two
#   neighbours; fp16 stores 0.0999755859375.
# - One ulp is the gap between neighbours; it is 2^-27 around 0.1 in fp32 and 2^-14 in fp16.
# - Flipping a mantissa bit nudges the value; flipping an exponent bit scales it by a power of two.
#
# Next: tutorial 2, what happens at the ends of the range.
