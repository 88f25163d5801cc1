"""The NumPy MLP: every layer's hand-written backward pass against central finite differences in float64."""

import numpy as np
import pytest

from fpsim.nn import ACTIVATIONS, MLP, NORMS
from fpsim.policies import Policy, Precision

EXACT = Precision(Policy("exact", "fp64", "fp64", "fp64", "fp64", accumulate="fp64"))  # nothing rounds


def loss_and_grads(model, weights, x, y):
    logits, cache = model.forward(x, weights, EXACT, train=True)
    loss, dlogits = model.loss(logits, y, EXACT)
    return loss, model.backward(dlogits, cache, weights, EXACT)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_matches_finite_differences(activation, norm):
    rng = np.random.default_rng(0)
    model = MLP([5, 7, 6, 3], activation, norm, seed=1)
    weights = {k: v + rng.normal(0, 0.1, v.shape) for k, v in model.params.items()}  # off the symmetric init
    x, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    _, grads = loss_and_grads(model, weights, x, y)
    assert set(grads) == set(weights)
    step = 1e-6
    for name, value in weights.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {k: v.copy() for k, v in weights.items()}
            shifted[name][index] += step
            above, _ = loss_and_grads(model, shifted, x, y)
            shifted[name][index] -= 2 * step
            below, _ = loss_and_grads(model, shifted, x, y)
            numeric[index] = (above - below) / (2 * step)
        assert np.allclose(grads[name], numeric, rtol=1e-5, atol=1e-8), name


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="activation must be one of"):
        MLP([2, 2], activation="sigmoid")
    with pytest.raises(ValueError, match="norm must be one of"):
        MLP([2, 2], norm="group")
    with pytest.raises(ValueError, match="sizes must list at least two positive ints"):
        MLP([4])
