"""The torch backend against the simulator: the same inputs, the same skipped steps and scales, determinism,
gradient counts on real backward tensors, clear errors, and torch's fused CPU SGD bug kept out."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fpsim import compare, train  # noqa: E402
from fpsim.formats import FP16  # noqa: E402
from fpsim.torch import training  # noqa: E402
from fpsim.train import Config, scenario  # noqa: E402

CPU = torch.device("cpu")
TIMING = ("seconds", "step_seconds", "peak_memory_bytes")


def torch_run(config, **options):
    return training.run(config, device="cpu", **options)


@pytest.mark.parametrize("policy", ["fp32", "amp", "bf16", "fp16", "fp16-dynamic", "fp8", "mxfp8"])
def test_initial_weights_are_the_simulators(policy):
    config = Config(policy=policy, norm="batch")
    trainer = training.Trainer(config, CPU, train._load_data(config))
    p = train.Precision(config.validate())
    model = train.MLP([64, *config.hidden, 10], config.activation, config.norm, config.init_gain, config.seed)
    for name, param in trainer.model.parameter_map().items():
        expected = p.cast(model.params[name], p.master)
        assert param.dtype == trainer.mech.param_dtype
        assert np.array_equal(training.to_torch_name(name, expected), param.detach().double().numpy()), name


def test_batches_are_the_simulators(monkeypatch):
    config = Config(policy="amp", steps=25, batch_size=100, eval_every=25)  # 13 batches per epoch: crosses one
    seen = {"numpy": [], "torch": []}
    simulator_step, torch_step = train._train_step, training.Trainer.step

    def record_numpy(model, master, optimizer, scaler, p, cfg, x, y, history):
        seen["numpy"].append((x, y))
        simulator_step(model, master, optimizer, scaler, p, cfg, x, y, history)

    def record_torch(self, x, y, **options):
        seen["torch"].append((x, y))
        return torch_step(self, x, y, **options)

    monkeypatch.setattr(train, "_train_step", record_numpy)
    monkeypatch.setattr(training.Trainer, "step", record_torch)
    train.run(config)
    torch_run(config)
    assert len(seen["torch"]) == len(seen["numpy"]) == 25
    for (xa, ya), (xb, yb) in zip(seen["numpy"], seen["torch"]):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


@pytest.mark.parametrize("name", ["underflow", "overflow"])
@pytest.mark.parametrize("policy", ["fp32", "amp", "bf16"])
def test_skipped_steps_and_scales_agree_with_the_simulator(name, policy):
    config = scenario(name, policy=policy, steps=30, eval_every=30)
    simulated, real = train.run(config), torch_run(config)
    assert real.skipped == simulated.skipped and real.scale == simulated.scale
    assert real.backend == "torch" and simulated.backend == "numpy"
    if policy == "amp" and name == "overflow":
        assert sum(real.skipped) == 18 and real.scale[18] == 2.0**-2  # backed off 18 times from 2^16
    assert np.allclose(real.loss, simulated.loss, rtol=0.02)


def test_the_same_config_gives_the_same_history():
    for config in (scenario("overflow", policy="amp", steps=20), scenario("underflow", policy="fp16-dynamic", steps=8)):
        first, second = (dataclasses.asdict(torch_run(config)) for _ in range(2))
        for key in TIMING:
            first.pop(key), second.pop(key)
        assert first == second
        assert len(first["gradient_sample"]) > 0


def test_the_history_records_time_memory_and_environment():
    history = train.run(Config(policy="amp", steps=3), backend="torch", device="cpu")
    assert len(history.step_seconds) == 3 and all(t > 0 for t in history.step_seconds)
    assert history.peak_memory_bytes is None  # the CPU has no allocator statistics
    env = history.environment
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["autocast_dtype"] == "float16"
    assert env["allow_tf32"] is False and env["deterministic_algorithms"] is True
    for flag in ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction"):
        assert isinstance(env[flag], bool)
    assert torch.are_deterministic_algorithms_enabled() is False  # the run's settings are undone


def test_gradient_counts_on_the_underflow_scenario():
    fp16, amp = (torch_run(scenario("underflow", policy=p, steps=10)) for p in ("fp16", "amp"))
    assert np.mean(fp16.flushed) > 0.1 and np.mean(amp.flushed) < 0.001  # as the simulator measures


@pytest.mark.parametrize(("factor", "flushed", "subnormal"), [(2.0**-26, 4, 0), (2.0**-20, 0, 4), (2.0**-3, 0, 0)])
def test_the_census_counts_what_rounding_did_to_the_exact_result(factor, flushed, subnormal):
    """2^-26 is below half of fp16's smallest subnormal 2^-24: flushed; 2^-20 is subnormal; 2^-3 is normal."""
    x = torch.ones(4, dtype=torch.float16, requires_grad=True)
    census = training.GradientCensus(torch.float16, FP16, keep_values=True)
    loss = (x * factor).sum()
    with census:
        loss.backward()
    assert (census.flags.flushed_to_zero, census.flags.subnormal) == (flushed, subnormal)
    assert census.flags.total == 4 and np.array_equal(np.concatenate(census.values), np.full(4, factor))


def test_bad_devices_and_backends(monkeypatch):
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, auto"):
        training.run(Config(steps=1), device="tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU here; use the device cpu, or auto"):
        training.run(Config(steps=1), device="cuda")
    assert training.resolve_device("auto") == CPU
    with pytest.raises(ValueError, match="needs backend='torch'"):
        train.run(Config(steps=1), device="cpu")
    with pytest.raises(ValueError, match="backend must be one of numpy, torch"):
        train.run(Config(steps=1), backend="jax")


def fused_cpu_sgd_skips_updates(dtype: torch.dtype, size: int) -> bool:
    """Whether torch's fused CPU SGD leaves a `size`-element parameter unchanged after a step of gradient 1."""
    param = torch.nn.Parameter(torch.ones(size, dtype=dtype))
    param.grad = torch.ones(size, dtype=dtype)
    torch.optim.SGD([param], lr=0.5, fused=True).step()
    return bool(torch.equal(param.detach(), torch.ones(size, dtype=dtype)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_fused_cpu_sgd_bug_is_pinned(dtype):
    """pytorch#191763: on the CPU, torch 2.12–2.13's fused SGD skips updates of fp16/bf16 tensors of 16 or
    more elements. When this fails, the installed torch behaves differently: re-check the bug."""
    affected = torch.__version__.startswith(("2.12", "2.13"))
    assert not fused_cpu_sgd_skips_updates(dtype, 15)
    assert fused_cpu_sgd_skips_updates(dtype, 16) == affected


@pytest.mark.parametrize("policy", ["fp32", "amp", "fp16", "fp16-dynamic"])
@pytest.mark.parametrize("optimizer", train.OPTIMIZERS)
def test_the_backend_never_builds_a_fused_optimizer(policy, optimizer):
    trainer = training.Trainer(Config(policy=policy, optimizer=optimizer), CPU, train._load_data(Config()))
    assert trainer.optimizer.defaults["fused"] is False and trainer.optimizer.defaults["foreach"] is False


def test_fp8_follows_the_simulator():
    config = Config(policy="fp8", steps=6, eval_every=6)
    simulated, real = train.run(config), torch_run(config)
    assert np.allclose(real.loss, simulated.loss, rtol=1e-5) and real.flushed == simulated.flushed
    assert real.environment["fp8_matmul"] == "emulated"
    with pytest.raises(ValueError, match=r"needs torch\._scaled_mm on a CUDA GPU of compute capability 8\.9"):
        torch_run(config, fp8_matmul="scaled_mm")
    with pytest.raises(ValueError, match="fp8_matmul must be one of emulated, scaled_mm"):
        torch_run(config, fp8_matmul="fast")


@pytest.mark.parametrize("policy", ["mxfp8", "mxfp4", "nvfp4"])
def test_block_policies_follow_the_simulator(policy):
    """The same block-quantized operands on both sides (fpsim.torch.block_matmul, Precision.matmul); only the fp32
    BLAS summation order differs (measured: loss within 2e-7 relative over 6 steps, the same accuracy)."""
    config = Config(policy=policy, steps=6, eval_every=6)
    simulated, real = train.run(config), torch_run(config)
    assert np.allclose(real.loss, simulated.loss, rtol=1e-5) and real.test_accuracy == simulated.test_accuracy
    assert real.loss != train.run(Config(policy="fp32", steps=6, eval_every=6)).loss  # the blocks act
    blocks = train.get_policy(policy).blocks
    assert f"fake-quantized to {blocks} blocks along its reduction axis" in real.environment["mechanism"]


@pytest.mark.parametrize("policy", ["mxfp4", "nvfp4"])
def test_block_policies_count_block_flushes_of_the_gradient_operands(policy):
    """Both backends count what block quantization of each backward product's dy flushes (the simulator's test pins
    the count to the spec); torch's census also counts every other fp32 backward op, so its share is smaller."""
    config = Config(policy=policy, steps=3, eval_every=3)
    simulated, real = train.run(config), torch_run(config)
    assert np.mean(real.flushed) > 0.01 and np.mean(simulated.flushed) > 0.01
    assert np.mean(torch_run(Config(policy="fp32", steps=3, eval_every=3)).flushed) == 0


def test_a_policy_torch_cannot_run_fails_before_training():
    policy = train.Policy("odd", "fp16", "fp32", "bf16", "fp32")
    with pytest.raises(ValueError, match="policy 'odd' has no torch mechanism"):
        torch_run(Config(policy=policy))
    blocks_over_bf16 = train.Policy("mx-bf16", "bf16", "fp32", "bf16", "fp32", blocks="mxfp8_e4m3")
    with pytest.raises(ValueError, match=r"has no torch mechanism: .* or block formats over fp32"):
        torch_run(Config(policy=blocks_over_bf16))


@pytest.mark.parametrize(("name", "policy"), [("baseline", "bf16"), ("underflow", "fp16")])
def test_synced_steps_are_bit_identical_with_torchs_kernels(name, policy):
    """Started from the simulator's exact state, torch's step gives the simulator's weights bit for bit
    (measured: 100% of weight elements here; fp32 is limited by MKL's summation order, see the README)."""
    config = scenario(name, policy=policy, kernels="torch")
    assert not any(train.run(dataclasses.replace(config, steps=3, kernels="exact")).skipped)  # weights move
    steps = training.synced_step_agreement(config, 3)
    assert [s.identical for s in steps] == [1.0, 1.0, 1.0] and all(s.non_finite == 0 for s in steps)
    assert all(s.first_different is None and s.max_ulps == 0 for s in steps)


def test_synced_amp_steps_that_update_the_weights():
    """The overflow scenario skips steps 1-18 (nothing changes); steps 19-21 update. Measured: 99.98% of weight
    elements bit-identical, the one differing element a b0 bias (a near-zero column sum of BatchNorm's dx)."""
    config = scenario("overflow", policy="amp", kernels="torch")
    skipped = train.run(dataclasses.replace(config, steps=21, kernels="exact")).skipped
    assert skipped[:18] == [True] * 18 and not any(skipped[18:])
    steps = training.synced_step_agreement(config, 21)
    assert all(s.identical == 1.0 for s in steps[:18])  # skipped: trivially identical
    for s in steps[18:]:
        assert s.identical >= 0.999 and s.non_finite == 0
        assert s.first_different in (None, "b0")


def test_non_finite_weights_are_not_counted_as_identical():
    """fp16 without scaling overflows in the overflow scenario: NaN weights on both sides are not agreement."""
    steps = training.synced_step_agreement(scenario("overflow", policy="fp16", kernels="torch"), 2)
    assert steps[-1].non_finite == 1.0 and steps[-1].identical == 0.0
    assert steps[-1].first_different is None  # NaN on both sides: no tensor differs
    row = compare._synced_row("fp16", steps)
    assert row["non-finite weights (worst step)"] == 1.0 and row["identical weights (worst step)"] == 0.0


def test_the_localizer_names_the_first_differing_tensor():
    exact = training.synced_step_agreement(scenario("baseline", policy="fp16", kernels="exact"), 1)[0]
    assert exact.identical < 0.99 and exact.first_different == "W1" and exact.max_ulps >= 1  # exact: one rounding
    assert set(exact.per_tensor) == {"W0", "b0", "gamma0", "beta0", "W1", "b1"}
    with pytest.raises(ValueError, match="steps must be a positive int"):
        training.synced_step_agreement(Config(), 0)


def test_the_torch_backend_refuses_the_simulators_kernel_model():
    """torch runs its own kernels: kernels='torch' on the torch backend would be recorded but mean nothing."""
    with pytest.raises(ValueError, match="kernels='torch' sets the simulator's rounding points"):
        train.run(Config(kernels="torch", steps=1), backend="torch", device="cpu")


@pytest.mark.parametrize("before", [None, ":16:8"])
def test_the_cublas_workspace_setting_is_restored(monkeypatch, before):
    if before is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", before)
    with training._torch_settings(torch.device("cuda")):  # only flags and the environment: no GPU is touched
        assert training.os.environ["CUBLAS_WORKSPACE_CONFIG"] == (before or ":4096:8")
    assert training.os.environ.get("CUBLAS_WORKSPACE_CONFIG") == before


def test_step_times_leave_the_census_out(monkeypatch):
    """The census re-runs every backward op in float64 (several times a step's cost): step_seconds subtracts
    the census's own measured time, which a census reports."""
    census = training.GradientCensus(torch.float16, FP16, keep_values=False)
    x = torch.ones(4, dtype=torch.float16, requires_grad=True)
    with census:
        (x * 2.0**-3).sum().backward()
    assert census.seconds > 0
    real_step = training.Trainer.step

    def slow_census(self, x, y, **options):
        record = real_step(self, x, y, **options)
        return {**record, "census_seconds": record["census_seconds"] + 1000.0}  # a census of 1000 s

    monkeypatch.setattr(training.Trainer, "step", slow_census)
    history = torch_run(Config(policy="amp", steps=2))
    assert all(t < -900 for t in history.step_seconds)  # the reported census time was taken off each step


def test_compare_reports_the_median_step_and_peak_memory():
    history = train.History({}, {"name": "amp"}, loss=[1.0, 1.0, 1.0], seconds=100.0)
    history.step_seconds, history.peak_memory_bytes = [0.001, 0.003, 0.5], 3 * 2**20
    row = compare._outcome(history, "torch cpu")
    assert row["ms/step"] == 3.0 and row["peak MiB"] == 3.0  # the median step, not seconds / steps (evaluations)
    history.step_seconds, history.peak_memory_bytes = [], None
    row = compare._outcome(history, "simulator")
    assert row["ms/step"] == 1000 * 100.0 / 3 and row["peak MiB"] is None


def test_the_config_sets_torchs_threads_for_the_run():
    before = torch.get_num_threads()
    history = torch_run(Config(policy="fp32", steps=1, threads=1))
    assert history.environment["threads"] == 1 and torch.get_num_threads() == before


def test_the_torch_backend_refuses_a_matrix_unit_model():
    config = scenario("underflow", policy="amp", accumulate="h100_fp16", steps=2)
    with pytest.raises(ValueError, match="simulator matmul model"):
        train.run(config, backend="torch", device="cpu")
