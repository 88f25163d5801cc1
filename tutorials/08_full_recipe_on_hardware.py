# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 8. The full recipe on real hardware
# *Goal:* write torch's mixed precision training loop yourself (autocast, GradScaler, clipping after
# unscaling, NaN/inf monitoring), check it against fpsim's simulator, and measure what it buys on this machine.
#
# *Time:* about 15 minutes
#
# You need tutorials 6 (loss scaling) and 7 (master weights). Everything runs on CUDA when torch sees a GPU,
# else on the CPU.

# %%
import os
from pathlib import Path

import torch
from rich.console import Console
from torch.nn import functional

import fpsim
from fpsim import compare, plots, train

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
device = "cuda" if torch.cuda.is_available() else "cpu"
print(f"torch {torch.__version__} on {device}")

# %% [markdown]
# ## The recipe
# Four pieces, in this order at every step:
#
# 1. `torch.autocast(device, dtype=torch.float16)`: matmuls run in fp16, the weights stay fp32 (the master
#    copy of tutorial 7). Which other ops run in fp32 depends on the device's list: on CUDA softmax,
#    log_softmax and the losses do; on the CPU the losses do (`nll_loss`, inside `cross_entropy`), but softmax
#    and log_softmax run in whatever dtype arrives, here fp16. Checked below.
# 2. `scaler.scale(loss).backward()`: the loss is multiplied by the scale before the backward pass
#    (tutorial 6).
# 3. `scaler.unscale_(optimizer)`, then `clip_grad_norm_`: clipping must see the true gradients.
# 4. `scaler.step(optimizer)` skips the step if any gradient is inf or NaN; `scaler.update()` moves the scale.
#
# The model is a plain torch MLP (64 → 64 → 10 with BatchNorm, like fpsim's digits MLP), the data the digits
# that ship with fpsim. To see the safety nets work, the loop can corrupt one batch (inputs × 10^7, so activations
# overflow fp16's 65504) and blow up one loss (× 10^30, so the gradients overflow). A forward hook on every
# layer records the first layer whose output is not finite: NaN/inf monitoring.

# %%
digits = fpsim.data.digits(seed=0)
x_all = torch.tensor(digits.x_train, dtype=torch.float32, device=device)
y_all = torch.tensor(digits.y_train, device=device)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    start = 64 * step % (len(x_all) - 64)
    return x_all[start : start + 64], y_all[start : start + 64]


def first_nonfinite_layer(model: torch.nn.Module, found: list[str]):
    """Forward hooks that append the name of each layer whose output holds inf or NaN."""
    hooks = []
    for name, layer in model.named_modules():
        if not list(layer.children()):  # leaf layers only
            hooks.append(layer.register_forward_hook(
                lambda _, __, out, name=name: found.append(name) if not torch.isfinite(out).all() else None
            ))  # fmt: skip
    return hooks


def total_norm(model: torch.nn.Module) -> float:
    """The 2-norm of all gradients together: the norm of the per-tensor norms, as clip_grad_norm_ computes it."""
    norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)).item()


def make_model() -> torch.nn.Sequential:
    torch.manual_seed(0)  # the same initial weights at every call
    layers = [torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 10)]
    return torch.nn.Sequential(*layers).to(device)


def train_recipe(steps=30, clip=1.0, corrupt_batch_at=None, blow_up_loss_at=None, clip_before_unscale=False):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler(device)
    records = []
    for step in range(1, steps + 1):
        x, y = batch(step)
        if step == corrupt_batch_at:
            x = x * 1e7
        bad_layers: list[str] = []
        hooks = first_nonfinite_layer(model, bad_layers)
        with torch.autocast(device, dtype=torch.float16):
            logits = model(x)
            loss = functional.cross_entropy(logits, y)
        for hook in hooks:
            hook.remove()
        if step == blow_up_loss_at:
            loss = loss * 1e30
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if clip_before_unscale:  # the bug: clips the *scaled* gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip) if not clip_before_unscale else None
        before = [p.detach().clone() for p in model.parameters()]
        scale = scaler.get_scale()
        applied = total_norm(model)  # what the optimizer receives: clipped, and unscaled unless inf/NaN
        scaler.step(optimizer)  # skipped when a gradient is inf or NaN
        scaler.update()
        records.append({
            "step": step, "loss": loss.item(), "scale": scale, "skipped": scaler.get_scale() < scale,
            "norm": None if norm is None else norm.item(), "first bad layer": bad_layers[0] if bad_layers else None,
            "weights unchanged": all(torch.equal(a, b) for a, b in zip(before, model.parameters())),
            "logits dtype": logits.dtype, "loss dtype": loss.dtype, "applied gradient norm": applied,
        })  # fmt: skip
    return model, records


model, records = train_recipe(corrupt_batch_at=10, blow_up_loss_at=20)
for r in records:
    if r["step"] in (1, 9, 10, 11, 20, 21, 30):
        print({k: v for k, v in r.items() if not k.endswith("dtype")})

# %% [markdown]
# Read the log: at step 10 the corrupted batch overflows fp16 in the first Linear layer (layer `0`), the
# monitor names it, the gradients are NaN, the step is skipped and the scale halves. At step 20 the forward
# pass is fine, but the gradients of a loss of 10^30 overflow: skipped again, scale halved again.
# Every other step trained. Check each claim:

# %%
skipped = [r["step"] for r in records if r["skipped"]]
print("skipped steps:", skipped, " final scale:", records[-1]["scale"])
assert skipped == [10, 20]
assert [r["step"] for r in records if r["first bad layer"]] == [10]
# Predict the first bad layer independently: the first Linear's output on that batch, computed in fp32 with
# the initial weights (9 steps move them far less than the factor 100 of margin), passes fp16's max
first_linear = make_model()[0]
with torch.no_grad():
    largest = first_linear(batch(10)[0] * 1e7).abs().max().item()
print(f"first Linear on the corrupted batch, in fp32: largest output {largest:.3g} > 65504")
assert largest > 100 * fpsim.FP16.max
assert records[9]["first bad layer"] == "0"  # the Sequential's first layer
assert all(r["weights unchanged"] == r["skipped"] for r in records)  # a skipped step leaves every weight as it was
assert records[-1]["scale"] == 2.0**16 / 4  # two halvings; no growth within 2000 clean steps
assert all(r["logits dtype"] == torch.float16 for r in records)  # autocast ran the last Linear in fp16
assert all(r["loss dtype"] == torch.float32 for r in records)  # and the loss in fp32, on both devices
with torch.no_grad(), torch.autocast(device, dtype=torch.float16):  # softmax: on CUDA's fp32 list, not the CPU's
    probabilities = torch.softmax(model(batch(1)[0]), dim=1)
print("softmax under autocast on", device, "returns", probabilities.dtype)
assert probabilities.dtype == (torch.float32 if device == "cuda" else torch.float16)
assert next(model.parameters()).dtype == torch.float32  # the weights themselves stay fp32
assert records[-1]["loss"] < records[0]["loss"] / 3  # and it learned

# %% [markdown]
# ## Clip after unscaling
# Before `unscale_`, the gradients are multiplied by the scale, and so is their norm. A power-of-two scale
# multiplies every gradient, every square and the square root exactly, so the ratio is *exactly* the scale.

# %%
probe = make_model()
scaler = torch.amp.GradScaler(device)
x, y = batch(0)
with torch.autocast(device, dtype=torch.float16):
    probe_loss = functional.cross_entropy(probe(x), y)
scaler.scale(probe_loss).backward()
scaled_norm = total_norm(probe)
scaler.unscale_(torch.optim.SGD(probe.parameters(), lr=0.1))
true_norm = total_norm(probe)
print(f"norm before unscale_ {scaled_norm:.6g}, after {true_norm:.6g}, ratio {scaled_norm / true_norm:g}")
assert scaled_norm / true_norm == scaler.get_scale() == 2.0**16

# %% [markdown]
# So `clip_grad_norm_(params, 1.0)` before unscaling divides the gradients by the scaled norm printed above
# instead of by the true norm (when that is above 1; else not at all), and the unscaling then divides them by
# 2^16 again: the model barely learns. That is the first exercise below.
#
# ## The same experiment in the simulator and in torch
# fpsim's torch backend runs a training `Config` with real torch (autocast and GradScaler for `amp`) from the
# simulator's initial weights and batches, and returns the same `History`. Run the *overflow* scenario
# (gradients 2^20 times too large), with clipping after unscaling, in both.

# %%
config = train.scenario("overflow", policy="amp", steps=25, clip_norm=1.0)
simulated = train.run(config)
real = train.run(config, backend="torch", device=device)
agreement = compare.agreement(simulated, real)
print(f"skipped steps: simulator {agreement.skipped_simulator}, torch {agreement.skipped_torch}")
print(f"same scale at every step: {agreement.scales_equal}")
print(f"median relative loss difference: {agreement.loss_difference_median:.2g}")
assert agreement.skipped_agree  # the same steps skipped, one by one
assert agreement.scales_equal  # and the same loss scale at every step
for history in (simulated, real):  # each skipped step halves the scale (read off each History alone)
    for step in range(len(history.scale) - 1):
        if history.skipped[step]:
            assert history.scale[step + 1] == history.scale[step] / 2

# %% [markdown]
# And the *underflow* scenario (gradients 2^16 too small), where plain fp16 flushes gradients to zero and amp
# does not. The torch side counts its flushed gradients on the real backward pass.

# %%
sims, reals = [], []
for policy in ("fp16", "amp"):
    cfg = train.scenario("underflow", policy=policy, steps=12)
    sims.append(train.run(cfg))
    reals.append(train.run(cfg, backend="torch", device=device))
for s, r in zip(sims, reals):
    sim_flushed, torch_flushed = s.summary()["flushed %"], r.summary()["flushed %"]
    print(f"{s.policy['name']:5} flushed %: simulator {sim_flushed:.3f}, torch {torch_flushed:.3f}")
    assert abs(sim_flushed - torch_flushed) < 3  # within 3 points of each other
assert min(s.summary()["flushed %"] for s in sims[:1] + reals[:1]) > 20  # fp16 flushes a lot, on both sides
assert max(s.summary()["flushed %"] for s in sims[1:] + reals[1:]) < 0.1  # amp next to nothing

fig, _ = plots.simulator_vs_hardware(sims, reals)
fig.savefig(OUT / "08_underflow_simulator_vs_torch.png", dpi=70)
fig

# %% [markdown]
# ## What it buys on this machine
# Mixed precision is sold as "2–3× faster, half the memory". That holds for large matmuls on GPUs with
# Tensor Cores. Measure this machine instead of believing it: the torch backend times every training step
# (the census of flushed gradients left out) and records peak memory on CUDA. On a shared or busy machine
# single timings are noisy, so we report the fastest of the 10 steps, with the thread count torch used.

# %%
timed = {}
for policy in ("fp32", "amp", "bf16"):
    timed[policy] = train.run(train.scenario("baseline", policy=policy, steps=10), backend="torch", device=device)
base = min(timed["fp32"].step_seconds)
print(f"torch threads: {torch.get_num_threads()}; fastest of 10 steps per policy")
print(f"{'policy':6} {'ms/step':>8} {'× fp32 speed':>13} {'peak MiB':>9}")
for policy, history in timed.items():
    fastest = min(history.step_seconds)
    peak = "-" if history.peak_memory_bytes is None else f"{history.peak_memory_bytes / 2**20:.2f}"
    print(f"{policy:6} {1000 * fastest:8.3f} {base / fastest:13.2f} {peak:>9}")
    assert len(history.step_seconds) == 10
    assert all(t > 0 for t in history.step_seconds)
    assert (history.peak_memory_bytes is None) == (device == "cpu")  # memory is measured on CUDA only

# %% [markdown]
# Read your numbers honestly. This MLP has about 5 000 weights: each step is a handful of tiny kernels whose
# launch and bookkeeping cost more than their arithmetic, and autocast adds casts. Whatever ratio this machine
# printed, it is not the "2–3×" of the sales sheet: the speed-up of mixed precision lives in large matmuls on
# Tensor Cores.
#
# `fpsim.torch.bench` measures that: matmul throughput per dtype at growing sizes, and one training step of
# each bundled model per policy, with its peak memory, set against the "2–3×" and "50%" claims. On a GPU it
# runs here; on a CPU, run `fpsim bench --quick` yourself (about half a minute on 2 cores).

# %%
if torch.cuda.is_available():
    report = fpsim.torch.bench("cuda", quick=True)
    Console(width=120).print(report.table())
    measured = [row for row in report.steps if row.seconds is not None]
    assert measured
    assert all(row.seconds > 0 and row.peak_bytes > 0 for row in measured)
else:
    print("No CUDA here: run `fpsim bench --quick` for this CPU's matmul throughput and per-model step times.")

# %% [markdown]
# **Try it.** Run `train_recipe(clip_before_unscale=True)`: the bug of clipping before unscaling. Compare
# its final loss with the correct recipe's. Predict first: by what factor are the updates too small?

# %%
# Solution: clipping sees the scaled norm S·N (S = 2^16, N the true norm), so it multiplies the gradients by
# min(1, c / (S·N)), and unscaling divides by S. The correct recipe multiplies them by min(1, c / N). With
# c = 1: when N > 1 the update is 1/S of what it should be; when N < 1 it is c / (S·N) of it. Check step 1
# (the same weights and batch in both runs):
_, buggy = train_recipe(clip_before_unscale=True)
correct = records  # the run above: clipped after unscaling
N, S, c = correct[0]["norm"], correct[0]["scale"], 1.0
predicted = min(1, c / (S * N)) / min(1, c / N)
measured = buggy[0]["applied gradient norm"] / correct[0]["applied gradient norm"]
print(f"step 1: true norm {N:.4g}; update ratio {measured:.6g}, predicted {predicted:.6g} (1/S = {1 / S:.6g})")
assert abs(measured / predicted - 1) < 1e-4  # fp32 roundings in the norms and the clip factor
print(f"final loss: clipped before unscaling {buggy[-1]['loss']:.3f}, after {correct[-1]['loss']:.3f}")
assert buggy[-1]["loss"] > 0.9 * buggy[0]["loss"]  # almost no progress
assert correct[-1]["loss"] < buggy[-1]["loss"] / 3

# %% [markdown]
# ## Recap
# - The recipe: autocast for the forward pass, `scaler.scale(loss).backward()`, `unscale_`, *then* clip,
#   `scaler.step`, `scaler.update()`. Weights stay fp32.
# - A step with an inf or NaN gradient is skipped (weights untouched) and the scale halves; a forward hook
#   names the first layer whose output stops being finite.
# - Clipping before unscaling sees a norm exactly `scale` times too large.
# - fpsim's simulator and real torch skip the same steps with the same scales; both see fp16 flush a large
#   share of small gradients that amp keeps.
# - Speed-ups come from large matmuls on Tensor Cores, not from small models: measure, don't assume.
#
# The simulator-against-torch comparison also runs from the command line and writes a report folder
# (`report.md`, `report.json` and the figure):
#
# ```bash
# fpsim compare --scenario overflow --policy fp16,amp --steps 60 -o cmp
# ```
#
# Next: tutorial 9, beyond fp16.
