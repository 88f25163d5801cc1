"""Training under precision policies: determinism, nothing lost on overflow, each scenario's effect on fewer
steps, results files, and configs that fail before training starts."""

import csv
import json
import math
import os
import re

import numpy as np
import pytest

import fpsim
import fpsim.train as train
from fpsim import data
from fpsim.formats import FP32
from fpsim.nn import MLP
from fpsim.policies import POLICIES, Policy, Precision, get_policy
from fpsim.train import SCENARIOS, Config, History, load_results, run, save_csv, save_results, scenario


def mean(values):
    return float(np.mean(values))


def test_the_same_config_gives_the_same_history_bit_for_bit():
    config = Config(policy="amp", steps=30, eval_every=10)
    first, second = run(config), run(config)
    first.seconds = second.seconds = 0.0
    assert first.to_json() == second.to_json()
    assert run(Config(policy="amp", steps=30, seed=1)).loss != first.loss


def test_an_overflowing_step_changes_nothing_but_the_scale():
    config = Config(policy="amp", loss_scale=2.0**40, optimizer="adam")  # 2^40 overflows fp16 at once
    policy = config.validate()
    dataset = data.digits()
    p = Precision(policy)
    model = train.MLP([64, 64, 10], seed=0)
    master = {k: p.cast(v, p.master) for k, v in model.params.items()}
    optimizer, scaler = train._Optimizer(config, master, p), train._make_scaler(policy)
    before = ({k: v.copy() for k, v in master.items()}, {k: [s.copy() for s in v] for k, v in optimizer.state.items()})
    history = History({}, {})
    train._train_step(model, master, optimizer, scaler, p, config, dataset.x_train[:64], dataset.y_train[:64], history)
    assert history.skipped == [True] and scaler.scale == 2.0**39 and optimizer.t == 0
    assert all(np.array_equal(master[k], before[0][k]) for k in master)
    assert all(np.array_equal(a, b) for k in optimizer.state for a, b in zip(optimizer.state[k], before[1][k]))


def test_underflow_scenario():
    runs = {
        p: run(scenario("underflow", policy=p, steps=150))
        for p in ("fp32", "fp16", "fp16-static", "fp16-dynamic", "amp")
    }
    reference = runs["fp32"].final_accuracy
    assert mean(runs["fp16"].flushed) > 0.1 and mean(runs["amp"].flushed) < 0.001
    assert runs["fp16"].final_accuracy < reference - 0.02  # measured: 0.922 against 0.964
    for name in ("fp16-static", "fp16-dynamic", "amp"):
        assert abs(runs[name].final_accuracy - reference) <= 0.01, name


def test_overflow_scenario():
    fp16 = run(scenario("overflow", policy="fp16", steps=30))
    assert any(not math.isfinite(loss) for loss in fp16.loss)  # unscaled fp16 gradients overflow: NaN follows
    amp, fp32 = (run(scenario("overflow", policy=p, steps=100)) for p in ("amp", "fp32"))
    assert sum(amp.skipped) >= 10 and not any(amp.skipped[-50:])  # backs off, then trains without skipping
    assert amp.scale[0] == 2.0**16 and amp.scale[-1] < 1.0
    assert amp.final_accuracy >= fp32.final_accuracy - 0.02


def test_lost_updates_scenario():
    fp16, amp = (run(scenario("lost-updates", policy=p, steps=150)) for p in ("fp16", "amp"))
    assert mean(fp16.lost_updates) > 0.5 and mean(amp.lost_updates) < 0.05
    assert fp16.final_accuracy < amp.final_accuracy - 0.03


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_trains_the_baseline(policy):
    history = run(Config(policy=policy, steps=60, eval_every=30))
    assert history.final_accuracy > 0.85 and len(history.loss) == 60 and history.eval_steps == [30, 60]


def test_results_files_round_trip_atomically(tmp_path):
    histories = [run(Config(policy=p, steps=5)) for p in ("fp32", "fp16")]
    histories[1].loss[0] = math.nan  # NaN losses survive the JSON round trip
    path = tmp_path / "results.json"
    save_results(histories, path)
    loaded = load_results(path)
    assert [h.policy["name"] for h in loaded] == ["fp32", "fp16"] and math.isnan(loaded[1].loss[0])
    assert loaded[0].to_json() == histories[0].to_json() and list(tmp_path.iterdir()) == [path]
    with pytest.raises(ValueError, match=r"must end in \.json"):
        save_results(histories, tmp_path / "results.txt")


def test_csv_has_one_row_per_run_per_step(tmp_path):
    histories = [run(Config(policy=p, steps=4, eval_every=2)) for p in ("fp32", "amp")]
    save_csv(histories, tmp_path / "runs.csv")
    with open(tmp_path / "runs.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8 and [r["policy"] for r in rows] == ["fp32"] * 4 + ["amp"] * 4
    assert [r["step"] for r in rows[4:]] == ["1", "2", "3", "4"] and {r["run"] for r in rows[4:]} == {"2"}
    amp = histories[1]
    assert [float(r["loss"]) for r in rows[4:]] == amp.loss  # repr of a float reads back exactly
    assert [float(r["scale"]) for r in rows[4:]] == amp.scale and [r["skipped"] for r in rows] == ["0"] * 8
    assert [r["test_accuracy"] for r in rows[:4]] == [
        "",
        repr(histories[0].test_accuracy[0]),
        "",
        repr(histories[0].test_accuracy[1]),
    ]
    with pytest.raises(ValueError, match=r"must end in \.csv"):
        save_csv(histories, tmp_path / "runs.json")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"runs": [{}]}', "run 1 lacks config, flushed, loss, lost_updates"),
        (b'{"runs": "abc"}', "no 'runs' list"),
        (b'{"runs": []}', "no 'runs' list"),
        (b"[]", "no 'runs' list"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not text"),
        (b'{"runs": [', "not JSON"),
        (b'{"runs": [3]}', "run 1 is not an object"),
        (
            b'{"runs": [{"config": {}, "policy": {}, "loss": [], "scale": [], "skipped": [], "flushed": [], '
            b'"subnormal": [], "lost_updates": [], "max_activation": []}]}',
            "run 1: the policy has no name",
        ),
    ],
)
def test_malformed_results_files_name_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"results file {str(path)!r}: ") + ".*" + re.escape(problem)):
        load_results(path)


def test_results_file_fields_are_checked(tmp_path):
    good = json.loads(History({}, POLICIES["fp32"].to_dict(), loss=[1.0], scale=[1.0], skipped=[False], flushed=[0.0],
                              subnormal=[0.0], lost_updates=[0.0], max_activation=[1.0]).to_json())  # fmt: skip
    path = tmp_path / "runs.json"
    for change, problem in [
        ({"config": {"policy": "nope"}}, "unknown policy 'nope'"),  # the config as training would check it
        ({"config": {"lr": -1}}, "lr must be a finite number > 0"),
        ({"config": {"epochs": 3}}, "unknown config fields: epochs"),
        ({"policy": {**good["policy"], "compute": "fp99"}}, "unknown format 'fp99'"),
        ({"policy": {**good["policy"], "scaler": "bogus"}}, "scaler must be one of"),
        ({"policy": {"name": "fp32"}}, "its policy is not a whole Policy"),
        ({"loss": "abc"}, "loss must be a list of numbers"),
        ({"scale": [1.0, 2.0]}, "one entry per step"),
        ({"seconds": "1"}, "seconds must be a number"),
        ({"epochs": 3}, "unknown fields epochs"),
        ({"config": []}, "config and policy must be objects"),
    ]:
        path.write_text(json.dumps({"runs": [good, {**good, **change}]}))
        with pytest.raises(ValueError, match=f"run 2.*{problem}"):
            load_results(path)
    path.write_text(json.dumps({"runs": [good]}))
    assert load_results(path)[0].loss == [1.0]


def test_results_paths_that_are_not_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path, problem in [
        (tmp_path / "missing.json", "no such file"),
        (tmp_path, "it is a folder"),
        (tmp_path / "fifo", "it is not a regular file"),  # opening it would block forever
    ]:
        with pytest.raises(ValueError, match=re.escape(f"results file {str(path)!r}: {problem}")):
            load_results(path)


def test_progress_callback_and_scenarios():
    seen = []
    run(Config(steps=4), on_step=lambda history: seen.append(len(history.loss)))
    assert seen == [1, 2, 3, 4]
    assert set(SCENARIOS) == {"baseline", "underflow", "overflow", "lost-updates"}
    assert scenario("underflow", steps=7).steps == 7 and Config.from_dict(Config().to_dict()) == Config()


def test_size_estimates_use_the_real_data_and_model():
    for name, dataset in (("digits", data.digits()), ("teacher", data.teacher_student())):
        config = Config(data=name, hidden=[16, 8])
        model = MLP([dataset.n_features, 16, 8, dataset.n_classes])
        assert config.parameter_count() == sum(v.size for v in model.params.values())
        assert train._DATA_SHAPES[name][2] == len(dataset.x_train)
    assert Config(norm="none").parameter_count() == 64 * 64 + 64 + 64 * 10 + 10


def test_clipping_acts_after_unscaling():
    clipped = run(Config(policy="amp", steps=20, clip_norm=1e-3, lr=1.0))
    free = run(Config(policy="amp", steps=20, lr=1.0))
    assert clipped.loss[-1] > free.loss[-1]  # a tiny clip norm slows learning: it saw the unscaled gradients
    # the unscaled gradient norm stays far below 1e3 and the scaled one (x 2^16) far above: nothing is clipped
    between = run(Config(policy="amp", steps=20, clip_norm=1e3, lr=1.0))
    assert between.loss == free.loss


def test_fp8_policy_scales_each_tensor_into_range():
    p = Precision(get_policy("fp8"))
    x = np.array([1e-4, 3e-4, -2e-4])  # far below e4m3's smallest normal, 2^-6
    cast = p.cast(x, p.compute)
    assert np.all(cast != 0) and np.allclose(cast, x, rtol=2**-3)  # the per-tensor scale kept them
    tiny = np.array([1e-310, -3e-310])  # max / amax overflows float64: the shift is taken from log2s
    assert np.all(p.cast(tiny, p.compute) != 0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Config(policy="fp12").validate(), "unknown policy 'fp12'"),
        (lambda: Config(lr=-0.1).validate(), "lr must be a finite number > 0"),
        (lambda: Config(batch_size=0).validate(), "batch_size must be a positive int"),
        (lambda: Config(policy="amp", loss_scale=0.0).validate(), "loss_scale must be a finite number > 0"),
        (lambda: Config(policy="amp", loss_scale=-2.0).validate(), "loss_scale must be a finite number > 0"),
        (lambda: Config(scaler="magic").validate(), "scaler must be one of"),
        (lambda: Config(optimizer="lbfgs").validate(), "optimizer must be one of"),
        (lambda: Config(steps=0).validate(), "steps must be a positive int"),
        (lambda: Config(seed=-1).validate(), "seed must be a non-negative int"),
        (lambda: Config(seed=True).validate(), "seed must be a non-negative int"),
        (lambda: Config(momentum="0.9").validate(), "momentum must be a number in"),
        (lambda: Config(clip_norm="1").validate(), "clip_norm must be a finite number > 0"),
        (lambda: Config(policy="amp", loss_scale=1e-50).validate(), "rounds to 0.0 in fp32"),
        (lambda: Config(batch_size=5000).validate(), "batch_size 5000 exceeds the 1348 training examples of digits"),
        # 64e9 + 1e9 + 10e9 + 10 weights and biases, 2e9 norm parameters; 128 bytes each, and 64 bytes per unit
        # for each of 500 examples (the test set): 9.86 + 32.0 TB
        (lambda: Config(hidden=[10**9]).validate(), "77,000,000,010 parameters, about 41.9 TB of memory"),
        (lambda: Config(hidden=[0]).validate(), "hidden must be a list of positive ints"),
        (lambda: Config(hidden=64).validate(), "hidden must be a list of positive ints"),
        # 2 ms + 3 ns x 64 x 4938 parameters = 2.95 ms a step: 2.95e17 s
        (lambda: Config(steps=10**20).validate(), "steps=100000000000000000000 is too many: .* 9.34e\\+09 years"),
        # 2 ms + 3 ns x 64 x 4,358,154 parameters = 0.839 s a step: 9.71 days
        (lambda: Config(hidden=[2048, 2048], steps=10**6).validate(), r"9.71 days \(1,000,000 steps of about 0.839 s"),
        (lambda: Config(activation="sigmoid").validate(), "activation must be one of relu"),
        (lambda: Config(norm="group").validate(), "norm must be one of batch"),
        (lambda: Config(threads=0).validate(), r"threads must be a positive int or None \(torch's own count\)"),
        (lambda: Config(threads=True).validate(), "threads must be a positive int or None"),
        (lambda: Config.from_dict({"policy": "fp32", "epochs": 3}), "unknown config fields: epochs"),
        (lambda: scenario("melt"), "unknown scenario 'melt'"),
        (lambda: Policy("x", "fp16", "fp32", "fp16", "fp32", accumulate="fp16"), "accumulate must be fp32 or fp64"),
    ],
)
def test_bad_configs_fail_before_training(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_data_fails_before_training():
    d = data.digits()
    x = d.x_train.copy()
    x[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        run(Config(steps=1), dataset=data.Dataset("bad", x, d.y_train, d.x_test, d.y_test, 10))
    for labels in (d.y_train + 10, d.y_train - 1, d.y_train.astype(float)):
        with pytest.raises(ValueError, match="labels must be ints from 0 to n_classes - 1 = 9"):
            run(Config(steps=1), dataset=data.Dataset("bad", d.x_train, labels, d.x_test, d.y_test, 10))
    with pytest.raises(ValueError, match="non-empty test set"):
        run(Config(steps=1), dataset=data.Dataset("bad", d.x_train, d.y_train, d.x_test[:, :5], d.y_test, 10))


def test_custom_policies_survive_the_json_round_trip_of_a_config():
    import json

    mine = Policy("fp16-master32", "fp16", "fp32", "fp16", "fp16", scaler="dynamic")
    config = Config(policy=mine, steps=5)
    again = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert run(again).loss == run(config).loss


def test_amp_keeps_norm_parameters_and_their_gradients_in_fp32():
    import fpsim

    history = run(Config(policy="amp", steps=5))
    assert history.policy["reductions"] == "fp32"
    from fpsim.train import _compute_weights

    p = Precision(get_policy("amp"))
    weights = _compute_weights({"gamma0": np.full(3, 1 + 2.0**-20), "W0": np.full(3, 1 + 2.0**-20)}, p)
    assert weights["gamma0"][0] == 1 + 2.0**-20 and weights["W0"][0] == float(fpsim.round(1 + 2.0**-20, "fp16"))


def test_the_kernel_model_is_a_config_field():
    assert Config().kernels == "exact" and Config.from_dict(Config(kernels="torch").to_dict()).kernels == "torch"
    with pytest.raises(ValueError, match="kernels must be one of exact, torch"):
        run(Config(kernels="cuda"))
    history = run(Config(policy="fp16", kernels="torch", steps=5))
    assert history.config["kernels"] == "torch" and len(history.loss) == 5


def test_the_torch_kernel_model_runs_torchs_thread_count(monkeypatch):
    """kernels="torch" sums per thread as torch does: the count is torch's own unless given, and is recorded."""
    torch = pytest.importorskip("torch")
    history = run(Config(policy="fp32", kernels="torch", steps=2))
    assert history.config["threads"] == torch.get_num_threads()
    one, two = (run(Config(policy="fp32", kernels="torch", steps=6, threads=n)) for n in (1, 2))
    assert one.config["threads"] == 1 and two.config["threads"] == 2
    assert one.loss != two.loss  # BatchNorm's per-thread sums round differently (measured: step 6's loss)
    assert run(Config(policy="fp32", steps=2)).config["threads"] is None  # exact kernels use no threads


def test_the_exact_simulator_never_imports_torch(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # any import of torch raises ImportError
    assert len(run(Config(policy="amp", steps=2)).loss) == 2
    assert run(Config(policy="amp", kernels="torch", steps=2)).config["threads"] == 1  # without torch: 1


# ---- matmuls on a matrix unit (Policy.accumulate names a preset of fpsim.matrix_unit) -----------------------------
AMP_H100 = Policy("amp-h100", "fp16", "fp32", "fp16", "fp32", accumulate="h100_fp16", scaler="dynamic")


def test_a_matrix_unit_policy_multiplies_as_fpsim_matmul_on_that_unit():
    import fpsim
    from fpsim.formats import FP16, FP32

    rng = np.random.default_rng(10)
    a = (rng.standard_normal((7, 40)) * 2.0 ** rng.integers(-14, 8, (7, 40))).astype(np.float16).astype(np.float64)
    b = (rng.standard_normal((40, 5)) * 2.0 ** rng.integers(-14, 8, (40, 5))).astype(np.float16).astype(np.float64)
    p = Precision(AMP_H100)
    unit = fpsim.matmul(a, b, model="h100_fp16")
    assert p.accumulate is FP32 and np.array_equal(p.matmul(a, b, FP32), unit)
    assert np.array_equal(p.matmul(a, b, FP16), unit.astype(np.float16).astype(np.float64))  # numpy's RNE cast


def test_a_matrix_unit_truncates_where_fp32_blas_rounds():
    a, b = np.array([[1.0, -(2.0**-12)]]), np.array([[1.0], [2.0**-13]])  # 1 - 2^-25: a tie between fp32 neighbours
    from fpsim.formats import FP32

    assert Precision(POLICIES["amp"]).matmul(a, b, FP32)[0, 0] == 1.0  # fp32 round to nearest even
    assert Precision(AMP_H100).matmul(a, b, FP32)[0, 0] == 1 - 2.0**-24  # kept exactly, then toward zero


def test_amp_on_an_h100_trains_close_to_amp_but_not_identically():
    plain = run(scenario("underflow", policy="amp", steps=12, eval_every=12))
    h100 = run(scenario("underflow", policy="amp", accumulate="h100_fp16", steps=12, eval_every=12))
    assert h100.policy["accumulate"] == "h100_fp16" and h100.config["accumulate"] == "h100_fp16"
    assert h100.loss != plain.loss  # truncation changes some matmul results from the first step on
    assert np.allclose(h100.loss, plain.loss, rtol=1e-2) and h100.final_accuracy > 0.8


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Config(policy="amp", accumulate="h100_fp17").validate(), "must be .* a matrix unit \\(v100"),
        (lambda: Config(policy="bf16", accumulate="h100_fp16").validate(),
         "takes fp16 inputs, but the policy's compute format is bf16; the units for bf16 are a100_bf16, h100_bf16"),
        (lambda: Policy("x", "fp16", "fp32", "bf16", "fp32", accumulate="h100_fp16"), "policy's grads format is bf16"),
        (lambda: Config(policy="fp8", accumulate="h100_fp8_e4m3").validate(), "per_tensor_scaling is not modelled"),
        (lambda: Config(policy="fp32", accumulate="h100_tf32").validate(), "the units for fp32 are none"),
    ],
)  # fmt: skip
def test_bad_matrix_units_are_named_in_the_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_matrix_unit_run_survives_the_results_file(tmp_path):
    history = run(Config(policy="amp", accumulate="h100_fp16", steps=2))
    save_results([history], tmp_path / "runs.json")
    (again,) = load_results(tmp_path / "runs.json")
    assert again.config["accumulate"] == again.policy["accumulate"] == "h100_fp16" and again.loss == history.loss
    assert get_policy(again.policy) == Config.from_dict(again.config).validate()


# ---- block formats (Policy.blocks names a preset of fpsim.BLOCK_FORMATS) -------------------------------------------
MX_SPEC = {"mxfp8": ("fp8_e4m3", 8), "mxfp4": ("fp4_e2m1", 2)}  # element format and its emax, OCP MX v1.0 table 1


def mx_reference(x, element, emax, axis, block=32):
    """OCP MX v1.0 §6.3 written from the spec, not from fpsim.blocks: per block along `axis` (the last one may be
    partial), X = 2^(floor(log2 amax) − emax) within E8M0's 2^-127…2^127, elements x/X rounded to nearest even,
    saturating; an all-zero block stays zero whatever its scale."""
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty_like(moved)
    for start in range(0, moved.shape[-1], block):
        part = moved[..., start : start + block]
        amax = np.abs(part).max(axis=-1, keepdims=True)
        exponent = np.frexp(np.where(amax > 0, amax, 1.0))[1] - 1 - emax  # frexp: floor(log2) with no rounding
        scale = np.exp2(np.clip(exponent, -127, 127))
        out[..., start : start + block] = fpsim.round(part / scale, element, overflow="saturate") * scale
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("policy", MX_SPEC)
def test_a_block_policy_quantizes_both_operands_along_the_reduction_axis(policy):
    element, emax = MX_SPEC[policy]
    rng = np.random.default_rng(3)
    a, b = (fpsim.round(rng.standard_normal(shape) * np.exp2(rng.integers(-9, 9, shape)), "fp32")
            for shape in ((6, 40), (40, 5)))  # fmt: skip  # K = 40: one whole block of 32 and a partial one
    p = Precision(get_policy(policy))

    def fp32_product(x, y):
        return (x.astype(np.float32) @ y.astype(np.float32)).astype(np.float64)

    expected = fp32_product(mx_reference(a, element, emax, -1), mx_reference(b, element, emax, 0))
    assert np.array_equal(p.matmul(a, b, FP32), expected)
    across = fp32_product(mx_reference(a, element, emax, 0), mx_reference(b, element, emax, -1))
    assert not np.array_equal(expected, across) and not np.array_equal(expected, fp32_product(a, b))


def test_block_flushes_of_a_gradient_operand_count_as_gradient_flushes():
    """A backward product's dz (what a gradient cast returned) is block-quantized like any operand; the nonzero values
    that the spec's rule (mx_reference) sends to zero count as flushed gradients, the forward operands do not."""
    rng = np.random.default_rng(5)
    h, w = (fpsim.round(rng.standard_normal(shape), "fp32") for shape in ((40, 8), (8, 6)))
    g = fpsim.round(rng.standard_normal((40, 6)) * np.exp2(rng.integers(-12, 1, (40, 6))), "fp32")
    p = Precision(get_policy("mxfp4"))
    p.matmul(h, w, FP32)  # forward: activations and weights, not gradients
    assert p.gradient_flags.total == 0
    dz = p.gradient(g)  # an fp32 cast of fp32 values: nothing flushed
    p.matmul(h.T, dz, FP32)  # dW: dz in blocks along the batch axis
    p.matmul(dz, w.T, FP32)  # dx: dz in blocks along its last axis
    flushed = [np.count_nonzero((mx_reference(dz, "fp4_e2m1", 2, axis) == 0) & (dz != 0)) for axis in (0, -1)]
    assert min(flushed) > 0  # magnitudes spread over 2^12 under one scale per block: the small ones flush
    assert p.gradient_flags.flushed_to_zero == sum(flushed) and p.gradient_flags.total == 3 * dz.size


def test_mxfp4_training_reports_what_block_scaling_flushes():
    fp32, mxfp4 = (run(Config(policy=p, steps=3, eval_every=3)) for p in ("fp32", "mxfp4"))
    assert np.mean(fp32.flushed) == 0 and np.mean(mxfp4.flushed) > 0.01


def test_block_policies_train_close_to_fp32():
    fp32, mxfp8, mxfp4 = (run(Config(policy=p, steps=40, eval_every=40)) for p in ("fp32", "mxfp8", "mxfp4"))
    assert mxfp8.policy["blocks"] == "mxfp8_e4m3" and mxfp8.loss != fp32.loss  # quantized from the first matmul
    gap8, gap4 = (np.abs(np.array(h.loss) - fp32.loss).mean() for h in (mxfp8, mxfp4))
    assert gap8 < gap4  # 3 mantissa bits per element stay closer to fp32 than 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Policy("x", "fp32", "fp32", "fp32", "fp32", blocks="mxfp9"), "blocks must be 'none' or a block "
         "format name \\(mxfp8_e4m3"),
        (lambda: Policy("x", "fp32", "fp32", "fp32", "fp32", blocks=None), "blocks must be 'none' or a block"),
        (lambda: Policy("x", "fp16", "fp32", "fp16", "fp32", blocks="mxfp4", accumulate="h100_fp16"),
         "blocks='mxfp4' with accumulate='h100_fp16' is not modelled"),
        (lambda: Policy("x", "fp32", "fp32", "fp32", "fp32", blocks="mxfp4", per_tensor_scaling=True),
         "per_tensor_scaling would scale them again"),
    ],
)  # fmt: skip
def test_bad_block_policies_are_named_in_the_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_block_policy_run_survives_the_results_file(tmp_path):
    history = run(Config(policy="mxfp4", steps=2))
    save_results([history], tmp_path / "runs.json")
    (again,) = load_results(tmp_path / "runs.json")
    assert get_policy(again.policy) == POLICIES["mxfp4"] and again.loss == history.loss


def test_last_gradients_are_the_whole_tensors_the_gradient_sample_strides_through():
    config = scenario("underflow", policy="amp", steps=3)  # a loss scale: both divide by it
    tensors, history = train.last_gradients(config), run(config)
    flat = np.concatenate([g.reshape(-1) for g in tensors])
    stride = flat.size // train.GRADIENT_SAMPLE
    assert stride >= 1 and history.gradient_sample == flat[::stride][: train.GRADIENT_SAMPLE].tolist()
    assert [g.shape for g in tensors[:4]] == [(64, 10), (64, 10), (10,), (64, 64)]  # dlogits, W1, b1, hidden
