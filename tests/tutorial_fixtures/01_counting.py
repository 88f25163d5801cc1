# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 1. Counting cells
#
# *Goal:* see that each code cell runs once, in one namespace.
#
# *Time:* about 1 minute

# %%
import os
from pathlib import Path

OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))
OUT.mkdir(parents=True, exist_ok=True)
counter = 0

# %% [markdown]
# ## Counting
#
# The next cell adds **one** to `counter`.

# %%
counter += 1
print(f"counter is {counter}")

# %%
from matplotlib.figure import Figure

fig = Figure(figsize=(3, 2))
fig.subplots().plot([0, 1], [0, 1])
fig.savefig(OUT / "line.png")
fig

# %%
unsaved = Figure(figsize=(3, 2))
unsaved.subplots().plot([0, 1], [1, 0])
unsaved

# %%
import matplotlib.pyplot as plt

figure, axes = plt.subplots(figsize=(3, 2))
(line,) = axes.plot([0, 1], [0.5, 0.5])

# %%
counter * 10

# %% [markdown]
# **Try it.** Check that `counter` is still one.

# %%
# Solution
assert counter == 1
print("checked")
