"""`fpsim audit`: each bundled model runs and prints its tables, --json and --plot write well-formed files, and bad
input (device, format, options, output paths) is one line and exit code 2 before the model runs."""

import importlib
import json

import pytest
import torch

from fpsim.cli import audit as audit_cli
from fpsim.cli import main
from fpsim.torch import models

audit_module = importlib.import_module("fpsim.torch.audit")  # the module: fpsim.torch.audit is also the function


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_audit(monkeypatch):
    """Fail the test if the model runs: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the audit ran before the inputs were checked")

    monkeypatch.setattr(audit_module, "_loss", refuse)


def test_the_cli_lists_exactly_the_bundled_models_and_the_default_formats():
    assert tuple(models.MODELS) == audit_cli.MODEL_NAMES
    assert audit_cli.DEFAULT_FORMATS == audit_module.DEFAULT_FORMATS


@pytest.mark.parametrize("name", list(models.MODELS))
def test_each_bundled_model_is_audited(capsys, name):
    code, out, err = run(capsys, "audit", "--model", name, "--rows", "2", "--device", "cpu")
    assert (code, err) == (0, "")
    assert out.startswith(f"{name}, seed 0, fp32 on cpu, ") and f" parameters:\n{models.MODELS[name]}\n" in out
    for fmt in audit_module.DEFAULT_FORMATS:
        assert f"\n{fmt} (max" in out and f"\n{fmt} " in out.split("Loss scales")[1]
    assert "GradScaler (from 2^16" in out and "First non-finite tensor: none" in out


def test_json_and_plot_are_written(capsys, tmp_path):
    report, figure = tmp_path / "audit.json", tmp_path / "audit.png"
    code, out, err = run(capsys, "audit", "-m", "digits-mlp", "-f", "fp16", "-f", "fp8_e5m2", "--steps", "2",
                         "--json", str(report), "--plot", str(figure), "--device", "cpu")  # fmt: skip
    assert (code, err) == (0, "")
    record = json.loads(report.read_text())
    assert (record["model"], record["formats"], record["steps"], record["device"]) == (
        "digits-mlp", ["fp16", "fp8_e5m2"], 2, "cpu")  # fmt: skip
    assert {t["step"] for t in record["tensors"]} == {1, 2}
    assert set(record["loss_scales"]) == {"fp16", "fp8_e5m2"}
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {report}" in out and f"wrote {figure}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "tpu"], "fpsim: error: --device must be one of cpu, cuda, auto"),
        (["-f", "fp17"], "unknown format 'fp17'"),
        (["--steps", "0"], "--steps must be a positive int"),
        (["--headroom", "0.5"], "--headroom must be a finite number >= 1"),
        (["--seed", "-1"], "--seed must be a non-negative int"),
        (["--rows", "0"], "--rows must be a positive integer"),
        (["--json", "audit.txt"], "--json"),
        (["--plot", "audit.json"], "--plot"),
    ],
)
def test_bad_input_is_one_line_before_the_model_runs(capsys, no_audit, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "audit", "--model", "digits-cnn", "--device", "cpu", *argv)
    assert (code, out) == (2, "")
    assert err.startswith("fpsim: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cuda_where_there_is_none_is_one_line(capsys, no_audit, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run(capsys, "audit", "--model", "digits-mlp", "--device", "cuda")
    assert (code, out) == (2, "")
    assert err.startswith("fpsim: error: --device 'cuda': ") and "sees no CUDA GPU here; use --device cpu" in err
    assert err.count("\n") == 1


def test_an_unknown_model_is_one_line(capsys):
    code, _, err = run(capsys, "audit", "--model", "resnet50")
    assert code == 2 and "invalid choice: 'resnet50'" in err and err.count("\n") == 1


@pytest.mark.parametrize("fmt", ["fp64", "fp4_e2m1"])
def test_formats_at_the_ends_of_the_scale_range(capsys, fmt):
    # fp64: max / largest gradient is about 2^1030, beyond any fp32 scale; fp4_e2m1 saturates instead of overflowing
    code, out, err = run(capsys, "audit", "-m", "digits-mlp", "-f", fmt, "--rows", "1", "--device", "cpu")
    assert (code, err) == (0, "")
    (line,) = [row for row in out.split("Loss scales")[1].splitlines() if row.startswith(f"{fmt} ")]
    assert line.split()[-1] == "2^127"  # GradScaler's largest fp32 scale: it never sees an inf in either
