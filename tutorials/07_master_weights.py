# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 7. Master weights
# *Goal:* see weight updates vanish when the weights live in fp16, count how many, and watch an fp32 master
# copy of the weights (and of the optimizer's state) bring them back.
#
# *Time:* about 10 minutes
#
# You need tutorial 3 (ulp, rounding to nearest) and tutorial 6 (loss scaling).

# %%
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import fpsim
from fpsim import plots, train

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
FP16 = fpsim.FP16

# %% [markdown]
# ## One weight, one update
# An optimizer step is `w = w - lr * g`. Take w = 1 and an update of 1e-4, and do the subtraction in fp16.

# %%
print(fpsim.sub(1.0, 1e-4, "fp16"), fpsim.sub(1.0, 1e-4, "fp32"))
assert fpsim.sub(1.0, 1e-4, "fp16") == 1.0  # the update is lost
assert fpsim.sub(1.0, 1e-4, "fp32") < 1.0  # fp32 keeps it

# %% [markdown]
# Why: next to 1, fp16 values are 2^-10 ≈ 0.00098 apart upward and 2^-11 apart downward (1 is the start of
# a binade). Rounding to nearest sends anything closer than half a gap back to w itself. 1e-4 is far below
# half of 2^-11.
#
# The mixed precision paper puts it as a ratio: an update is lost when the weight is 2048 = 2^11 times larger.
# Check the exact edge above w = 1: an update of exactly half the gap (2^-11) is a tie and goes to the even
# neighbour, 1 itself; one fp16 step more (2^-11 + 2^-21) and it is kept.

# %%
gap_up = fpsim.next_up(1.0, "fp16") - 1.0
print(f"gap above 1: {gap_up} = 2^{np.log2(gap_up):.0f}")
assert gap_up == 2.0**-10 == FP16.eps
assert 1.0 - fpsim.next_down(1.0, "fp16") == 2.0**-11  # half as far below 1
assert fpsim.add(1.0, gap_up / 2, "fp16") == 1.0  # a tie: 1.0 is even, so it wins
assert fpsim.add(1.0, gap_up / 2 * (1 + 2.0**-10), "fp16") == 1.0 + gap_up
for w in (2.0**-6, 1.0, 2.0**9):  # the ratio holds at every power of two: w / 2048 is a tie, lost
    assert fpsim.add(w, w / 2048, "fp16") == w
    assert fpsim.add(w, fpsim.next_up(w / 2048, "fp16"), "fp16") > w

# %% [markdown]
# ## The same small update, a thousand times
# One lost update is harmless. The trouble is that the *same* update is lost at every step. Apply -1e-4 a
# thousand times: to fp16 weights, and to an fp32 master copy that is rounded to fp16 only when the model
# needs it for compute.

# %%
update = -1e-4
w16 = 1.0  # the weight stored in fp16
master = 1.0  # the weight stored in fp32
for _ in range(1000):
    w16 = fpsim.add(w16, update, "fp16")
    master = fpsim.add(master, update, "fp32")
compute_copy = fpsim.round(master, "fp16")
print(f"fp16 weight {w16}, fp32 master {master:.7f}, its fp16 compute copy {compute_copy}")
assert w16 == 1.0  # a thousand steps and it never moved
assert abs(master - 0.9) < 1000 * 2.0**-24  # each fp32 addition errs by at most half an ulp (2^-24 below 1)
assert compute_copy == fpsim.round(0.9, "fp16")  # the model computes with the right weight
assert FP16.eps / fpsim.FP32.eps == 2**13  # fp32's gaps are 2^13 times smaller

# %% [markdown]
# The fp32 master copy has ulps 2^13 times smaller than fp16 (23 fraction bits instead of 10), so it keeps
# updates down to about w · 2^-24. The model still computes in fp16: the master copy is rounded each step.
#
# ## Counting lost updates
# Now a whole layer: 100 000 weights drawn from N(0, 1), gradients from N(0, 1), learning rate 1e-3.
# Count the updates that leave the stored weight unchanged, with the weight in fp16 and in fp32.
#
# The updates are fp16 numbers, so both formats hold them exactly. Predict the count independently from the
# gaps: an update u is lost when |u| is below half the gap between w and its neighbour *in the direction of u*
# (`next_up` or `next_down`), or exactly half of it when w is even (its last bit is 0: a tie goes to w).

# %%
rng = np.random.default_rng(0)
w = fpsim.round(rng.normal(size=100_000), "fp16")
u = fpsim.round(-1e-3 * rng.normal(size=w.size), "fp16")
w, u = w[(w != 0) & (u != 0)], u[(w != 0) & (u != 0)]  # drop the rare zero weight or update

lost = {}
for fmt in ("fp16", "fp32"):
    stored = fpsim.round(w, fmt)
    new = fpsim.add(stored, u, fmt)
    lost[fmt] = int(np.count_nonzero(new == stored))
    neighbour = np.where(u > 0, fpsim.next_up(stored, fmt), fpsim.next_down(stored, fmt))
    half_gap = np.abs(neighbour - stored) / 2
    even = fpsim.encode(stored, fmt) % 2 == 0
    predicted = int(np.count_nonzero((np.abs(u) < half_gap) | ((np.abs(u) == half_gap) & even)))
    print(f"{fmt}: {lost[fmt]} of {w.size} updates lost ({100 * lost[fmt] / w.size:.2f}%), predicted {predicted}")
    assert lost[fmt] == predicted  # the gaps explain every lost update
assert lost["fp16"] > 0.15 * w.size
assert lost["fp32"] < 0.001 * w.size

# %% [markdown]
# About a fifth of the updates vanish in fp16, fewer than one in a thousand in fp32. Which ones? Those
# whose weight is large compared with the update. Draw the share lost against log2(|w| / |u|):
# in fp16 it climbs from 0 to 1 around 2^11 = 2048, the paper's ratio; in fp32 around 2^24.

# %%
ratio = np.log2(np.abs(w) / np.abs(u))
edges = np.arange(-4, 31)
fig = Figure(figsize=(8, 3.5))
ax = fig.subplots()
for fmt, color in (("fp16", "#D55E00"), ("fp32", "#0072B2")):
    stored = fpsim.round(w, fmt)
    was_lost = fpsim.add(stored, u, fmt) == stored
    counts, _ = np.histogram(ratio, edges)
    lost_counts, _ = np.histogram(ratio[was_lost], edges)
    share = np.divide(lost_counts, counts, out=np.full(counts.shape, np.nan), where=counts > 0)
    ax.step(edges[:-1], share, where="post", color=color, label=f"{fmt} weights")
ax.axvline(11, color="#D55E00", linestyle=":", label="$2^{11}$ = 2048 (fp16: 11 significant bits)")
ax.set_xlabel(r"$\log_2(|w| / |u|)$: how many times larger the weight is than its update")
ax.set_ylabel("share of updates lost")
ax.set_title("Updates below half an ulp of their weight are lost", loc="left")
ax.legend(loc="center right", fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "07_lost_share.png", dpi=80)
fig

# %%
lost16 = fpsim.add(w, u, "fp16") == w
assert not lost16[ratio < 10].any()  # weight < 2^10 times the update: always kept in fp16
assert lost16[ratio > 12].all()  # weight > 2^12 times the update: always lost in fp16
lost32 = fpsim.add(fpsim.round(w, "fp32"), u, "fp32") == w
assert not lost32[ratio < 23].any()  # fp32 keeps every update up to 2^23 times smaller than its weight

# %% [markdown]
# ## In training
# fpsim's *lost-updates* scenario trains the digits MLP with large initial weights and a small learning rate,
# so many updates sit near that edge. Compare `fp16` (weights, optimizer state and everything else in fp16)
# with `amp` (fp16 compute, fp32 master weights and state). Each run records the share of updates lost at every
# step. Each of the two runs (300 steps) takes a second or two.

# %%
fp16_run = train.run(train.scenario("lost-updates", policy="fp16"))
amp_run = train.run(train.scenario("lost-updates", policy="amp"))
for run in (fp16_run, amp_run):
    s = run.summary()
    print(f"{s['policy']:5} lost updates {s['lost updates %']:5.1f}%  final loss {s['final loss']:.3f}  "
          f"test accuracy {s['test accuracy']:.3f}")  # fmt: skip
assert fp16_run.summary()["lost updates %"] > 50
assert amp_run.summary()["lost updates %"] < 5
assert amp_run.final_accuracy > fp16_run.final_accuracy + 0.03

# %%
fig = Figure(figsize=(11, 3.5))
left, right = fig.subplots(1, 2)
plots.loss_curves([fp16_run, amp_run], ax=left)
for run, color in ((fp16_run, "#D55E00"), (amp_run, "#009E73")):
    right.plot(100 * np.array(run.lost_updates), color=color, label=run.policy["name"])
right.set_xlabel("step")
right.set_ylabel("updates lost (%)")
right.set_title("Share of weight updates lost per step", loc="left")
right.legend()
fig.tight_layout()
fig.savefig(OUT / "07_training.png", dpi=80)
fig

# %% [markdown]
# With fp16 weights most updates are lost at every step and the model learns less. With the fp32 master copy
# only a few percent are: momentum tails that have decayed below even fp32's half ulp.
#
# The same from the command line (it prints the table of both runs):
#
# ```bash
# fpsim train --policy fp16,amp --scenario lost-updates
# ```
#
# ## The optimizer's state needs fp32 too
# Momentum SGD keeps a buffer `v = momentum * v + g`. In the *overflow* scenario, gradients are huge.
# `fp16-dynamic` has loss scaling, but its weights and its momentum buffer are fp16: once the scaler has backed
# off, the unscaled gradients overflow the fp16 buffer and turn the weights into NaN. `amp` keeps both in fp32.

# %%
fp16_dynamic = train.run(train.scenario("overflow", policy="fp16-dynamic", steps=40))
amp_overflow = train.run(train.scenario("overflow", policy="amp", steps=40))
first_nan = next(i for i, loss in enumerate(fp16_dynamic.loss, start=1) if not np.isfinite(loss))
print(f"fp16-dynamic: loss NaN from step {first_nan}; amp: final loss {amp_overflow.loss[-1]:.3f}")
assert not np.isfinite(fp16_dynamic.loss[-1])
assert np.isfinite(amp_overflow.loss).all()

# %% [markdown]
# **Try it.** Find the smallest fp16 weight w for which `w + 1e-3`, computed in fp16, gives back w.
# (Hint: all 31744 non-negative finite fp16 values are `fpsim.decode(np.arange(0x7C00), "fp16")`.)
# Predict the answer from the gaps first.
#
# **Try it.** Some recipes keep master weights in bf16 to save memory. Count the lost updates of the
# 100 000-weight layer above with bf16 storage.

# %%
# Solution: fp16 gaps are 2^-9 ≈ 0.00195 in [2, 4) and 2^-8 in [4, 8). Half a gap exceeds 1e-3 first at 4.
values = fpsim.decode(np.arange(0x7C00), "fp16")
unchanged = fpsim.add(values, 1e-3, "fp16") == values
smallest = values[unchanged][0]
print("smallest weight that swallows +1e-3:", smallest)
assert smallest == 4.0
assert unchanged[values >= 4].all()  # from there on, every larger weight swallows it too

# %%
# Solution: bf16 has 8 significant bits, 3 fewer than fp16: its gaps are 8 times larger.
stored = fpsim.round(w, "bf16")
lost_bf16 = int(np.count_nonzero(fpsim.add(stored, u, "bf16") == stored))
print(f"bf16: {lost_bf16} of {w.size} updates lost ({100 * lost_bf16 / w.size:.1f}%)")
assert lost_bf16 > lost["fp16"]  # worse than fp16: bf16 is no place for master weights

# %% [markdown]
# ## Recap
# - An update smaller than half the gap to the weight's neighbour is rounded away: in fp16, when the weight is
#   about 2^11 = 2048 times larger than the update.
# - The same update is lost at every step, so the weight never moves.
# - An fp32 master copy keeps updates down to about 2^-24 of the weight; the model computes with an fp16 copy.
# - The optimizer's state (momentum, Adam's moments) needs fp32 as well.
# - Here: about a fifth of N(0,1) updates at lr 1e-3 lost in fp16, well under 0.1% in fp32, and every count
#   matched the prediction from the gaps.
#
# Next: tutorial 8, the whole recipe in real torch.
