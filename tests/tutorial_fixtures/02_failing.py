# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 2. A failing check
# *Goal:* show how a failed assert stops a tutorial.
# *Time:* about 2 minutes

# %%
half = 0.5
print("before the check")

# %%
assert half == 0.25, "half is not a quarter"

# %%
print("never printed")
