"""Loss scalers: DynamicLossScaler against torch.amp.GradScaler('cpu') step by step, unscaling bit for bit,
the variants' policies, and bad arguments."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fpsim.scaling import (
    DynamicLossScaler,
    StaticLossScaler,
    apex_scaler,
    hysteresis_scaler,
    naive_scaler,
    unscale,
)


def torch_trajectory(found_infs, **options):
    """Drive a real GradScaler: a gradient of inf (or NaN) where found_inf, else 1; record scale and tracker."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", **options)
    scaler.scale(torch.ones(1))  # GradScaler creates its scale tensor on first use
    states = []
    for step, found_inf in enumerate(found_infs):
        parameter.grad = torch.tensor([(math.nan if step % 2 else math.inf) if found_inf else 1.0])
        scaler.step(optimizer)
        scaler.update()
        states.append((scaler.get_scale(), int(scaler._growth_tracker)))
    return states


def fpsim_trajectory(found_infs, **options):
    scaler = DynamicLossScaler(**options)
    states = []
    for found_inf in found_infs:
        scaler.update(found_inf)
        states.append((scaler.scale, scaler.growth_tracker))
    return states


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=40),
    st.sampled_from([1, 2, 3, 7]),
    st.sampled_from([2.0**16, 3.0, 2.0**126, 3.4e38, 1e-30]),
    st.sampled_from([(2.0, 0.5), (3.0, 0.25), (1.5, 0.9)]),
)
def test_dynamic_scaler_follows_torch_gradscaler_step_by_step(found_infs, interval, init_scale, factors):
    options = {
        "init_scale": init_scale,
        "growth_factor": factors[0],
        "backoff_factor": factors[1],
        "growth_interval": interval,
    }
    assert fpsim_trajectory(found_infs, **options) == torch_trajectory(found_infs, **options)


def test_the_reference_trajectory_from_the_numerics_notes():
    # growth_interval 3, infs at steps 2, 3 and 9 (1-based), from 65536: numerics.md §4 lists the initial
    # scale followed by the scale after each of 11 updates
    found = [i in (2, 3, 9) for i in range(1, 12)]
    scales = [65536.0] + [s for s, _ in fpsim_trajectory(found, growth_interval=3)]
    assert scales == [65536, 65536, 32768, 16384, 16384, 16384, 32768, 32768, 32768, 16384, 16384, 16384]


def test_growth_stops_below_fp32_max():
    scaler = DynamicLossScaler(init_scale=2.0**127, growth_interval=1)
    scaler.update(False)
    assert scaler.scale == 2.0**127 and scaler.growth_tracker == 0  # 2^128 is not a finite fp32


@pytest.mark.parametrize("scale", [3.0, 2.0**16, 1000.0, 7.0e-3])
def test_unscaling_is_bit_identical_to_torch(scale):
    rng = np.random.default_rng(0)
    gradients = [(rng.standard_normal(1000) * 1e3).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)]
    parameters = [torch.nn.Parameter(torch.zeros(g.shape)) for g in gradients]
    for parameter, gradient in zip(parameters, gradients):
        parameter.grad = torch.from_numpy(gradient.copy())
    optimizer = torch.optim.SGD(parameters, lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    scaler.scale(torch.ones(1))  # GradScaler creates its scale tensor on first use
    scaler.unscale_(optimizer)
    ours, found_inf = unscale(gradients, scale)
    assert not found_inf
    for mine, parameter in zip(ours, parameters):
        assert np.array_equal(mine, parameter.grad.numpy().astype(np.float64))
    if scale == 3.0:  # the reciprocal-multiply differs from a division in a good share of elements
        divided = (gradients[0] / np.float32(3.0)).astype(np.float64)
        assert np.count_nonzero(ours[0] != divided) > 100


def test_unscale_reports_inf_and_nan():
    assert unscale([np.array([1.0, np.inf])], 2.0)[1] and unscale([np.array([np.nan])], 2.0)[1]
    assert not unscale([np.array([1e30])], 2.0)[1]


def test_state_dict_uses_torchs_keys_and_round_trips():
    scaler = DynamicLossScaler(init_scale=1024.0, growth_interval=3)
    scaler.update(False)
    state = scaler.state_dict()
    reference = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3).state_dict()
    assert set(state) == set(reference)
    other = DynamicLossScaler()
    other.load_state_dict(state)
    assert other.state_dict() == state
    other.load_state_dict({**state, "scale": 0.0})  # a scale backed off to zero is a state torch loads too
    assert other.scale == 0.0
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"scale": 2.0})


def test_variants():
    apex = apex_scaler()
    assert apex.scale == 2.0**32
    for _ in range(40):
        apex.update(True)
    assert apex.scale == 1.0  # floored
    lazy = hysteresis_scaler(2, init_scale=64.0, growth_interval=2)
    scales = []
    for found_inf in (True, True, True, True, False, False, True, True):
        lazy.update(found_inf)
        scales.append(lazy.scale)
    assert scales == [64.0, 32.0, 16.0, 8.0, 8.0, 16.0, 16.0, 8.0]  # growth restores the forgiven overflow
    naive = naive_scaler(init_scale=1.0)
    scales = []
    for _ in range(8):  # any scale above 8 overflows: the naive scaler keeps trying it
        naive.update(naive.scale > 8)
        scales.append(naive.scale)
    assert scales == [2.0, 4.0, 8.0, 16.0, 8.0, 16.0, 8.0, 16.0]
    static = StaticLossScaler(128.0)
    static.update(True)
    assert static.scale == 128.0 and static.unscale([np.array([256.0])])[0][0].tolist() == [2.0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: StaticLossScaler(0.0), "scale must be a finite number > 0"),
        (lambda: StaticLossScaler(-1.0), "scale must be a finite number > 0"),
        (lambda: StaticLossScaler(math.inf), "scale must be a finite number > 0"),
        (lambda: DynamicLossScaler(init_scale=0.0), "init_scale must be"),
        (lambda: DynamicLossScaler(growth_factor=1.0), "growth_factor must be a finite number > 1"),
        (lambda: DynamicLossScaler(backoff_factor=1.5), "backoff_factor must be between 0 and 1"),
        (lambda: DynamicLossScaler(growth_interval=0), "growth_interval must be a positive int"),
        (lambda: StaticLossScaler(1e-50), "rounds to 0.0 in fp32"),
        (lambda: DynamicLossScaler(init_scale=1e39), "rounds to inf in fp32"),
        (
            lambda: DynamicLossScaler().load_state_dict({**DynamicLossScaler().state_dict(), "backoff_factor": 7.0}),
            "backoff_factor must be between 0 and 1",
        ),
        (
            lambda: DynamicLossScaler().load_state_dict({**DynamicLossScaler().state_dict(), "_growth_tracker": -5}),
            "_growth_tracker must be a non-negative int",
        ),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
