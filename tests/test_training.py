"""Training under precision policies: determinism, nothing lost on overflow, each scenario's effect on fewer
steps, results files, and configs that fail before training starts."""

import io
import math

import numpy as np
import pytest

from fpsim import data
from fpsim.policies import POLICIES, Policy, Precision, get_policy
from fpsim.train import SCENARIOS, Config, History, load_results, run, save_results, scenario


def mean(values):
    return float(np.mean(values))


def test_the_same_config_gives_the_same_history_bit_for_bit():
    config = Config(policy="amp", steps=30, eval_every=10)
    first, second = run(config), run(config)
    first.seconds = second.seconds = 0.0
    assert first.to_json() == second.to_json()
    assert run(Config(policy="amp", steps=30, seed=1)).loss != first.loss


def test_an_overflowing_step_changes_nothing_but_the_scale():
    import fpsim.train as train  # the step function itself, to look at the state around one step

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
    (tmp_path / "other.json").write_text("[]")
    with pytest.raises(ValueError, match="not an fpsim results file"):
        load_results(tmp_path / "other.json")


def test_progress_lines_and_scenarios():
    stream = io.StringIO()
    run(Config(steps=4), progress_every=2, stream=stream)
    assert stream.getvalue().count("\n") == 2 and "step 4/4" in stream.getvalue()
    assert set(SCENARIOS) == {"baseline", "underflow", "overflow", "lost-updates"}
    assert scenario("underflow", steps=7).steps == 7 and Config.from_dict(Config().to_dict()) == Config()


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
        (lambda: Config(batch_size=5000).validate() and run(Config(batch_size=5000)), "batch_size 5000 exceeds"),
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
