"""`fpsim train` and the top level of the command line: options reach the Config, outputs are checked before
training, Ctrl-C is one line and exit 130, plain `fpsim` lists the commands, and `import fpsim` stays light."""

import csv
import errno
import os
import re
import signal
import subprocess
import sys

import pytest

import fpsim.train as train
from fpsim.cli import main
from fpsim.policies import POLICIES
from fpsim.train import load_results

train_run = train.run  # the real run, for tests that watch calls to it


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any training starts: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the inputs were checked")

    monkeypatch.setattr(train, "run", refuse)


def test_train_prints_the_table_and_saves_json_and_csv(capsys, tmp_path):
    out_json, out_csv = tmp_path / "runs.json", tmp_path / "runs.csv"
    code, out, err = run(capsys, "train", "-p", "fp32,amp", "--steps", "6", "-o", str(out_json), "--csv", str(out_csv))
    lines = out.splitlines()
    assert (
        code == 0 and lines[0].startswith("scenario baseline: ") and lines[1].split()[:3] == ["policy", "final", "loss"]
    )
    assert [line.split()[0] for line in lines[2:4]] == ["fp32", "amp"]
    assert (
        lines[4]
        == "flushed % and lost updates %: means over all steps (`fpsim plot histogram` shows the last step's gradients)"
    )
    assert lines[5:] == [f"saved 2 run(s) to {out_json}", f"saved 2 run(s) to {out_csv}"]
    assert "[fp32] step 6/6 loss " in err and "[amp] step 6/6" in err
    runs = load_results(out_json)
    with open(out_csv, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["policy"] for r in rows] == ["fp32"] * 6 + ["amp"] * 6
    assert [float(r["loss"]) for r in rows] == runs[0].loss + runs[1].loss
    code, out, err = run(capsys, "train", "-p", "fp16", "-s", "overflow", "--steps", "5", "--quiet")
    assert code == 0 and err == "" and "nan" in out


def test_training_options_reach_the_config(capsys, tmp_path):
    path = tmp_path / "runs.json"
    argv = ["--lr", "0.05", "--hidden", "32,16", "--optimizer", "adam", "--scaler", "static", "--loss-scale", "1024",
            "--data", "teacher", "--clip-norm", "2.5", "--seed", "3", "--steps", "4"]  # fmt: skip
    code, _, _ = run(capsys, "train", "-p", "fp16", "-q", "-o", str(path), *argv)
    (history,) = load_results(path)
    assert code == 0 and history.policy["scaler"] == "static" and history.policy["loss_scale"] == 1024.0
    expected = {"lr": 0.05, "hidden": [32, 16], "optimizer": "adam", "data": "teacher", "clip_norm": 2.5, "seed": 3}
    assert {k: history.config[k] for k in expected} == expected and history.scale == [1024.0] * 4
    # an option overrides the scenario's own setting; a left-out one keeps it
    code, _, _ = run(
        capsys, "train", "-s", "underflow", "-p", "amp", "-q", "--steps", "2", "--lr", "7", "-o", str(path)
    )
    (history,) = load_results(path)
    assert history.config["lr"] == 7.0 and history.config["loss_multiplier"] == 2.0**-16


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["--hidden", "64,x"], "--hidden must be layer widths such as 64 or 128,64; got '64,x'"),
        (["--hidden", ""], "--hidden must be layer widths"),
        (["--hidden", "0"], "--hidden must be a list of positive ints"),
        (["--clip-norm", "-1"], "--clip-norm must be a finite number > 0"),
        (["--loss-scale", "0", "-p", "amp"], "--loss-scale must be a finite number > 0"),
        (["--loss-scale", "1024"], "--loss-scale does not apply to policy fp32 (scaler none): add --scaler static"),
        (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
        (["--scaler", "magic"], "argument --scaler: invalid choice: 'magic'"),
        (["--data", "mnist"], "argument --data: invalid choice: 'mnist'"),
        (["--seed", "-1"], "--seed must be a non-negative int"),
        (["-p", "fp32,fp99"], "unknown policy 'fp99'"),
        (["-p", ","], "--policy needs at least one policy name"),
        # 2 ms + 3 ns x 64 examples x 4938 parameters a step, for 1e20 steps
        (["--steps", "99999999999999999999"], "--steps=99999999999999999999 is too many: it would take about 9.34e+09"),
        (["--hidden", "1000000000"], "--hidden=[1000000000] gives 77,000,000,010 parameters, about 41.9 TB"),
    ],
)
def test_bad_training_options_are_one_line_before_training(capsys, no_training, argv, message):
    code, out, err = run(capsys, "train", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("fpsim: error: ") and message in err


def output_cases(tmp_path):
    fifo, folder, read_only = tmp_path / "pipe.json", tmp_path / "folder.json", tmp_path / "keep.json"
    os.mkfifo(fifo)
    folder.mkdir()
    read_only.write_text("keep")
    read_only.chmod(0o444)
    return [
        (["--out", ""], "--out must name a file; got an empty path"),
        (["--csv", ""], "--csv must name a file; got an empty path"),
        (["--out", str(fifo)], f"--out '{fifo}' is not a regular file (a device, FIFO or socket)"),
        (["--csv", str(tmp_path / "runs.json")], "--csv must end in .csv"),
        (["--out", str(tmp_path / "runs.csv")], "--out must end in .json"),
        (["--out", str(folder)], f"--out '{folder}' is a folder"),
        (["--out", str(read_only)], f"--out '{read_only}' is read-only"),
        (["--out", "/proc/runs.json"], "--out '/proc/runs.json': cannot create files in '/proc'"),
        (["--out", str(tmp_path / "no" / "runs.json")], "the folder"),
    ]


def test_output_paths_are_checked_before_training_and_named_in_the_error(capsys, tmp_path, no_training):
    for argv, message in output_cases(tmp_path):
        code, out, err = run(capsys, "train", "--steps", "2", *argv)
        assert code == 2 and out == "" and err == f"fpsim: error: {err[14:]}" and message in err, argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json", "keep.json", "pipe.json"]
    assert (tmp_path / "keep.json").read_text() == "keep"
    with pytest.raises(AssertionError, match="training started"):  # good paths: the checks pass, training starts
        main(["train", "--csv", str(tmp_path / "a.csv"), "-o", str(tmp_path / "b.json")])


def test_the_same_file_for_json_and_csv_is_refused(capsys, tmp_path, no_training):
    link = tmp_path / "runs.csv"
    link.symlink_to(tmp_path / "runs.json")
    code, _, err = run(capsys, "train", "-o", str(tmp_path / "runs.json"), "--csv", str(link))
    assert code == 2 and "--out and --csv name the same file" in err


def test_ctrl_c_is_one_line_and_exit_130_with_no_file(capsys, tmp_path, monkeypatch):
    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted)
    code, out, err = run(capsys, "train", "-o", str(tmp_path / "runs.json"))
    assert (code, out, err) == (130, "", "fpsim: interrupted\n") and list(tmp_path.iterdir()) == []


def test_a_real_sigint_during_training(tmp_path):
    out = tmp_path / "runs.json"
    command = [sys.executable, "-m", "fpsim", "train", "--steps", "1000", "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()  # the first progress line: training is under way
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert first.startswith("[fp32] step 100/1000") and process.returncode == 130
    assert stdout == "" and stderr == "fpsim: interrupted\n" and list(tmp_path.iterdir()) == []


def test_train_help_has_a_description_defaults_and_every_choice(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "Train a small MLP under one or more precision policies" in out
    assert "(default: 300, at most 1,000,000)" in out and "(default: fp32)" in out and "(default: sgd)" in out
    for name, policy in POLICIES.items():
        assert f"  {name:<12}  {policy.description[:40]}" in out
    for name in [*train.SCENARIOS, "dynamic", "hysteresis"]:
        assert f"\n  {name} " in out


def test_plain_fpsim_lists_the_commands(capsys):
    code, out, err = run(capsys)
    assert code == 0 and err == "" and out.startswith("usage: fpsim COMMAND [options]")
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert {"formats", "explain", "round", "calc", "train", "plot"} <= set(listed)
    assert re.search(r"^  train +train the digits MLP under precision policies and compare$", out, re.MULTILINE)


def test_import_fpsim_is_light_and_submodules_load_on_first_use():
    probe = (
        "import sys, fpsim\n"  # rich may load: the explanation renders through it; the heavy three must not
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'hypothesis', 'torch'})\n"
        "print(heavy)\n"
        "print(fpsim.train.Config().steps, sorted(fpsim.policies.POLICIES)[0], fpsim.scaling.SCALERS['none'])\n"
        "print(callable(fpsim.plots.training_figure), fpsim.strategies.__name__, 'train' in dir(fpsim))\n"
        "print(callable(fpsim.compare.compare), callable(fpsim.demo.demo), 'torch' in sys.modules)\n"
        "print('matplotlib' in sys.modules)\n"
        "try:\n    fpsim.trian\nexcept AttributeError as err:\n    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "[]",
        "300 amp no loss scaling",
        "True fpsim.strategies True",
        "True True False",
        "True",
        "module 'fpsim' has no attribute 'trian'",
    ]


def test_a_full_disk_while_saving_is_one_line_naming_the_file_and_keeps_the_old_one(capsys, tmp_path, monkeypatch):
    path = tmp_path / "runs.json"
    path.write_text("old runs")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run(capsys, "train", "--steps", "2", "-q", "-o", str(path))
    assert (code, err) == (2, f"fpsim: error: cannot write '{path}': No space left on device\n")
    assert path.read_text() == "old runs" and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cpu"], "--device needs --backend torch"),
        (["--backend", "torch", "--kernels", "torch"], "drop --kernels"),
        (["--backend", "torch", "--device", "tpu"], "device must be one of"),
        (["--backend", "jax"], "invalid choice: 'jax'"),
    ],
)
def test_backend_options_are_checked_before_training(capsys, argv, message):
    code, out, err = run(capsys, "train", "-q", *argv)
    assert code == 2 and message in err and out == ""


def test_train_runs_the_same_scenario_in_torch(capsys):
    pytest.importorskip("torch")
    code, out, _ = run(capsys, "train", "-q", "-s", "overflow", "-p", "amp", "--steps", "4", "--backend", "torch",
                       "--device", "cpu")  # fmt: skip
    row = next(line.split() for line in out.splitlines() if line.startswith("amp"))
    assert code == 0 and "torch on cpu" in out and row[4] == "4"  # amp skips its first 4 overflow steps


def test_kernels_reach_the_simulator(capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(train, "run", lambda config, **kw: seen.append(config.kernels) or train_run(config, **kw))
    code, _, _ = run(capsys, "train", "-q", "--steps", "2", "--kernels", "torch")
    assert code == 0 and seen == ["torch"]


def test_dir_of_fpsim_lists_its_api_and_submodules_only():
    import pkgutil

    import fpsim

    submodules = {module.name for module in pkgutil.iter_modules(fpsim.__path__)}
    public = {name for name in dir(fpsim) if not name.startswith("_")}
    assert public - set(fpsim.__all__) - submodules == set()  # importlib was listed
    assert {"train", "plots", "round", "explain"} <= public


def test_accumulate_reaches_the_policy(capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(train, "run", lambda config, **kw: seen.append(config.validate()) or train_run(config, **kw))
    code, _, _ = run(capsys, "train", "-q", "-p", "amp", "--steps", "2", "--accumulate", "h100_fp16")
    assert code == 0 and [p.accumulate for p in seen] == ["h100_fp16"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-p", "amp", "--accumulate", "h100_fp17"],
            "--accumulate must be fp32 or fp64 (BLAS partial sums) or a matrix",
        ),
        (
            ["-p", "amp,bf16", "--accumulate", "h100_fp16"],
            "--accumulate='h100_fp16' takes fp16 inputs, but the policy's",
        ),
        (["-p", "amp", "--accumulate", "h100_fp16", "--backend", "torch"], "drop --accumulate"),
    ],
)
def test_bad_accumulate_is_one_line_before_training(capsys, no_training, argv, message):
    code, out, err = run(capsys, "train", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_train_help_lists_the_matrix_units_by_format(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--accumulate" in out and re.search(r"\n  fp16 +v100_fp16, a100_fp16, h100_fp16", out)
    assert re.search(r"\n  bf16 +a100_bf16, h100_bf16", out)
