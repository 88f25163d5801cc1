"""The command line: each command's output, value syntaxes, and one-line errors with exit code 2."""

import subprocess
import sys

import numpy as np
import pytest

import fpsim
from fpsim.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_formats_table_lists_every_preset_with_exact_constants(capsys):
    code, out, _ = run(capsys, "formats")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line and line.split()[0] in fpsim.PRESETS}
    assert set(rows) == set(fpsim.PRESETS)
    assert rows["fp16"][1:5] == ["16", "e5m10", "15", "65504"] and rows["fp8_e4m3"][2] == "e4m3fn"
    assert float(rows["bf16"][5]) == pytest.approx(2.0**-126, rel=1e-5)


def test_explain_shows_formats_side_by_side(capsys):
    code, out, _ = run(capsys, "explain", "0.1", "--format", "fp32", "-f", "fp16,bf16")
    assert code == 0
    assert out.splitlines()[1].split() == ["fp32", "fp16", "bf16"]
    assert "0x3dcccccd" in out and "0x2e66" in out and "0x3dcd" in out
    assert "0.100000001490116119384765625" in out and "\x1b[" not in out  # captured output is no terminal


def test_explain_accepts_hex_floats_negative_numbers_and_bit_patterns(capsys):
    assert "0.1875" in run(capsys, "explain", "0x1.8p-3", "-f", "fp16")[1]
    assert "stored value  -1.0013580322265625e-5" in run(capsys, "explain", "-1e-5", "-f", "fp16")[1]
    code, out, _ = run(capsys, "explain", "--bits", "0x3c00", "-f", "fp16")
    assert code == 0 and "0 01111 0000000000" in out and "stored value  1" in out
    assert "-inf" in run(capsys, "explain", "-inf", "-f", "fp16")[1]


def test_round_prints_results_and_flag_counts(capsys):
    code, out, _ = run(capsys, "round", "65520", "1e-8", "0.1", "-inf", "--format", "fp16")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "fp16, rounding nearest_even"
    assert lines[1].split()[-2:] == ["inf", "0x7c00"] and lines[2].split()[-2:] == ["0", "0x0000"]
    assert lines[-1] == "flags: 4 rounded: 3 inexact, 1 overflow, 1 underflow, 1 flushed_to_zero"


def test_round_with_modes_policies_seeds_and_source_formats(capsys):
    assert "-> 1.0009765625 " in run(capsys, "round", "1.0001", "-f", "fp16", "--rounding", "up")[1]
    assert "-> 1 " in run(capsys, "round", "1.0001", "-f", "fp16")[1]
    assert "448" in run(capsys, "round", "1000", "-f", "e4m3", "--overflow", "saturate")[1]
    first = run(capsys, "round", "1.0001", "1.0002", "-f", "bf16", "-r", "stochastic", "--seed", "3")[1]
    assert first == run(capsys, "round", "1.0001", "1.0002", "-f", "bf16", "-r", "stochastic", "--seed", "3")[1]
    code, out, _ = run(capsys, "round", "--bits", "0x3e00", "--from", "fp16", "-f", "e4m3")
    assert code == 0 and "1.5" in out and "0x3c" in out
    assert run(capsys, "round", "nan", "-f", "fp4", "--on-nan", "zero")[0] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["round", "1", "-f", "fp17"], "unknown format 'fp17'"),
        (["round", "abc", "-f", "fp16"], "VALUE must be a decimal"),
        (["round", "1", "-f", "fp16", "-r", "sideways"], "invalid choice: 'sideways'"),
        (["round", "nan", "-f", "fp4"], "has no NaN encoding"),
        (["round", "--bits", "0x10000", "-f", "fp16"], "bits must be in [0, 2^16)"),
        (["round", "--bits", "zz", "-f", "fp16"], "--bits values must be integers"),
        (["explain", "--bits", "1", "-f", "fp16,bf16"], "exactly one --format"),
        (["round", "1"], "the following arguments are required: --format"),
        ([], "the following arguments are required: command"),
        (["plot"], "the following arguments are required: kind"),
        (["draw"], "invalid choice: 'draw'"),
        (["round", "0x1p1024", "-f", "fp16"], "outside float64's range"),
        (["round", "1e400", "-f", "fp16"], "outside float64's range"),
        (["round", "1e-400", "-f", "fp16"], "outside float64's range"),
        (["round", "0x.", "-f", "fp16"], "VALUE must be"),
        (["round", "1", "-f", ""], "--format needs a format name"),
        (["round", "1", "-f", "fp16,bf16"], "exactly one --format"),
        (["round", "1", "-f", "fp16", "-r", "stochastic", "--seed", "-1"], "non-negative seed"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fpsim: error: ") and message in err


def test_calc_shows_each_rounding(capsys):
    code, out, _ = run(capsys, "calc", "65504 + 16", "--format", "fp16")
    assert code == 0 and "65504 + 16 = inf" in out and out.splitlines()[-1].startswith("result: inf")
    code, out, _ = run(capsys, "calc", "-1 + 1e-8", "-f", "fp32", "-r", "up")
    assert code == 0 and "result: -0.999999940395355224609375" in out
    code, _, err = run(capsys, "calc", "__import__('os')", "-f", "fp16")
    assert code == 2 and err.count("\n") == 1 and "may only contain" in err


def test_train_prints_a_comparison_table_and_saves_results(capsys, tmp_path):
    from fpsim.train import load_results

    out_file = tmp_path / "runs.json"
    code, out, err = run(capsys, "train", "--policy", "fp32,amp", "--steps", "20", "--out", str(out_file))
    assert code == 0 and out.splitlines()[1].split()[:3] == ["policy", "final", "loss"]
    assert [line.split()[0] for line in out.splitlines()[2:4]] == ["fp32", "amp"]
    assert "step 20/20" in err and [h.policy["name"] for h in load_results(out_file)] == ["fp32", "amp"]
    code, out, err = run(capsys, "train", "-p", "fp16", "-s", "overflow", "--steps", "5", "--quiet")
    assert code == 0 and err == "" and "nan" in out
    assert run(capsys, "train", "-p", "fp99")[0] == 2 and run(capsys, "train", "--steps", "0")[0] == 2


def test_python_dash_m_runs_the_same_cli():
    ok = subprocess.run([sys.executable, "-m", "fpsim", "round", "0.1", "-f", "bf16"], capture_output=True, text=True)
    assert ok.returncode == 0 and "0.10009765625" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fpsim", "round", "x", "-f", "bf16"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_values_are_parsed_exactly():
    from fpsim.cli import parse_value

    assert parse_value("0x1.8p-3") == 0.1875 and parse_value("-INF") == -np.inf and np.isnan(parse_value("nan"))
    assert parse_value("1e-5") == 1e-5 and parse_value(" 65504 ") == 65504.0 and parse_value(".5") == 0.5
    assert parse_value("0e5") == 0.0 and parse_value("0x0p-5000") == 0.0 and str(parse_value("-0.0")) == "-0.0"
