"""The command line: each command's output, value syntaxes, and one-line errors with exit code 2."""

import io
import math
import re
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fpsim
from fpsim.cli import main
from fpsim.cli.codec import format_rows

README = Path(__file__).resolve().parent.parent / "README.md"
# the reference constants: numpy's and ml_dtypes' finfo, which fpsim does not use
FINFO = {
    "fp64": np.finfo(np.float64),
    "fp32": np.finfo(np.float32),
    "fp16": np.finfo(np.float16),
    "bf16": ml_dtypes.finfo(ml_dtypes.bfloat16),
    "fp8_e5m2": ml_dtypes.finfo(ml_dtypes.float8_e5m2),
    "fp8_e4m3": ml_dtypes.finfo(ml_dtypes.float8_e4m3fn),
    "fp6_e3m2": ml_dtypes.finfo(ml_dtypes.float6_e3m2fn),
    "fp6_e2m3": ml_dtypes.finfo(ml_dtypes.float6_e2m3fn),
    "fp4_e2m1": ml_dtypes.finfo(ml_dtypes.float4_e2m1fn),
    "fp8_e4m3fnuz": ml_dtypes.finfo(ml_dtypes.float8_e4m3fnuz),
    "fp8_e5m2fnuz": ml_dtypes.finfo(ml_dtypes.float8_e5m2fnuz),
    "e8m0": ml_dtypes.finfo(ml_dtypes.float8_e8m0fnu),
}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _readme_formats_table() -> str:
    lines = README.read_text(encoding="utf-8").split("## Formats", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| name "))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return "\n".join(lines[start:end])


def test_the_readme_formats_table_is_what_fpsim_formats_prints(capsys):
    code, out, _ = run(capsys, "formats", "--markdown")
    assert code == 0 and out.rstrip("\n") == _readme_formats_table()


def _cell_value(cell: str) -> Fraction:
    """A table cell's exact part, read by its own small grammar: 65504, 0.5, 2^-14, (2−2^-23)·2^127."""
    exact = cell.split(" ≈ ")[0]
    if match := re.fullmatch(r"\(2−2\^(-\d+)\)·2\^(\d+)", exact):
        return (2 - Fraction(2) ** int(match[1])) * Fraction(2) ** int(match[2])
    if match := re.fullmatch(r"2\^(-?\d+)", exact):
        return Fraction(2) ** int(match[1])
    return Fraction(exact)


@pytest.mark.parametrize("name", FINFO)
def test_formats_table_constants_match_numpy_and_ml_dtypes(capsys, name):
    _, out, _ = run(capsys, "formats", "--markdown")
    header, _, *rows = out.splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = dict(
        zip(columns, (c.strip() for c in next(r for r in rows if r.startswith(f"| {name} |")).strip("|").split("|")))
    )
    info = FINFO[name]
    expected = {"max": info.max, "smallest normal": info.smallest_normal, "eps": info.eps}
    if info.smallest_subnormal < info.smallest_normal:
        expected["smallest subnormal"] = info.smallest_subnormal
    else:  # no subnormals (e8m0: finfo repeats the smallest normal): the table says so instead of repeating it
        assert row["smallest subnormal"] == "—", name
    for column, value in expected.items():
        assert _cell_value(row[column]) == Fraction(float(value)), (name, column)
        if " ≈ " in row[column]:  # a quoted approximation: the exact value rounded to the digits shown
            shown = row[column].split(" ≈ ")[1]
            digits = len(shown.split("e")[0].replace(".", ""))
            assert float(shown) == float(f"{float(value):.{digits - 1}e}")
    assert row["bits"] == str(info.bits) and row["infinities"] == (
        "yes" if name in ("fp64", "fp32", "fp16", "bf16", "fp8_e5m2") else "no"
    )


def test_formats_terminal_table_lists_every_preset(capsys):
    code, out, _ = run(capsys, "formats")
    names = [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in fpsim.PRESETS]
    assert code == 0 and names == list(fpsim.PRESETS) and "\x1b[" not in out
    assert max(map(len, out.splitlines())) <= 120  # piped: the fixed width


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("columns", [40, 60, 80, 100])
def test_formats_fits_a_narrow_terminal_and_keeps_every_constant(monkeypatch, columns):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["formats"]) == 0
    lines = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue()).splitlines()
    assert max(map(len, lines)) <= columns
    words = {word for line in lines for word in line.split()}
    # the rendering hides nothing: every word of every cell (constants checked against finfo above) is shown whole
    assert {word for row in format_rows() for cell in row.values() for word in cell.split()} <= words


def test_explain_shows_formats_side_by_side_within_the_pipe_width(capsys):
    code, out, _ = run(capsys, "explain", "0.1", "--format", "fp32", "-f", "fp16,bf16")
    assert code == 0 and max(map(len, out.splitlines())) <= 120  # it was 213 columns wide
    assert out.splitlines()[1].split() == ["fp32", "fp16", "bf16"]
    assert "0x3dcccccd" in out and "0x2e66" in out and "0x3dcd" in out
    assert "0.100000001490116119384765625" in out and "\x1b[" not in out  # captured output is no terminal


def test_explain_of_typed_text_is_exact_and_says_what_float64_would_do(capsys):
    out = run(capsys, "explain", "0.1", "-f", "fp16")[1]
    assert out.startswith(
        "0.1 exactly (float64 would round it to 0.1000000000000000055511151231257827021181583404541015625)"
    )
    stored_minus_a_tenth = Decimal(float(np.float16(0.1))) - Decimal("0.1")  # Decimal(float) is exact
    assert Decimal(re.search(r"abs error +(\S+)", out)[1]) == stored_minus_a_tenth
    assert run(capsys, "explain", "0.5", "-f", "fp16")[1].startswith("0.5 exactly (a float64 too)")
    assert run(capsys, "explain", "1e400", "-f", "fp16")[1].startswith("1e400 exactly (beyond float64's range)")
    assert "stored value  65504" in run(capsys, "explain", "65519.99999999999999", "-f", "fp16")[1]


def test_explain_accepts_hex_floats_negative_numbers_and_bit_patterns(capsys):
    assert "0.1875" in run(capsys, "explain", "0x1.8p-3", "-f", "fp16")[1]
    assert "stored value  -1.0013580322265625e-5" in run(capsys, "explain", "-1e-5", "-f", "fp16")[1]
    code, out, _ = run(capsys, "explain", "--bits", "0x3c00", "-f", "fp16")
    assert code == 0 and "0 01111 0000000000" in out and "stored value  1" in out
    assert "-inf" in run(capsys, "explain", "-inf", "-f", "fp16")[1]
    assert "above         none" in run(capsys, "explain", "6", "-f", "fp4")[1]  # fp4 has nothing above max


def test_round_prints_results_and_flag_counts(capsys):
    code, out, _ = run(capsys, "round", "65520", "1e-8", "0.1", "-inf", "--format", "fp16")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "fp16, rounding nearest_even"
    assert lines[1].split() == ["65520", "->", "inf", "0x7c00"] and lines[2].split() == ["1e-8", "->", "0", "0x0000"]
    assert lines[-1] == "flags: 4 rounded: 3 inexact, 1 overflow, 1 underflow, 1 flushed_to_zero"


def _stored(out: str) -> Fraction:
    return Fraction(out.splitlines()[1].split()[2])


def test_round_rounds_the_exact_decimal_in_every_mode(capsys):
    # the cases: float64 first would round 0.1 up, and read 1.00000000000000000001 as 1
    out = run(capsys, "round", "0.1", "-f", "fp64", "-r", "down")[1]
    assert _stored(out) < Fraction(1, 10) < _stored(out) + Fraction(2) ** -56 and "1 inexact" in out
    assert _stored(run(capsys, "round", "1.00000000000000000001", "-f", "fp16", "-r", "up")[1]) == 1 + Fraction(1, 1024)
    assert _stored(run(capsys, "round", "9007199254740993", "-f", "fp64", "-r", "up")[1]) == 2**53 + 2  # beyond 2^53
    out = run(capsys, "round", "1e-400", "-f", "fp16", "-r", "up")[1]  # below float64's range, still exact
    assert _stored(out) == Fraction(2) ** -24 and "1 underflow" in out


def test_round_with_modes_policies_seeds_and_source_formats(capsys):
    assert _stored(run(capsys, "round", "1.0001", "-f", "fp16", "--rounding", "up")[1]) == Fraction(1025, 1024)
    assert _stored(run(capsys, "round", "1.0001", "-f", "fp16")[1]) == 1
    assert "448" in run(capsys, "round", "1000", "-f", "e4m3", "--overflow", "saturate")[1]
    first = run(capsys, "round", "1.0001", "1.0002", "-f", "bf16", "-r", "stochastic", "--seed", "3")[1]
    assert first == run(capsys, "round", "1.0001", "1.0002", "-f", "bf16", "-r", "stochastic", "--seed", "3")[1]
    code, out, _ = run(capsys, "round", "--bits", "0x3e00", "--from", "fp16", "-f", "e4m3")
    assert code == 0 and "1.5" in out and "0x3c" in out
    assert run(capsys, "round", "nan", "-f", "fp4", "--on-nan", "zero")[0] == 0


SAME_SYNTAX = ["0.1", "1_000.5", "0x1.8p-3", "0X10", "1e-5", ".5", "5.", "1E3", "inf", "Infinity", "nan"]


@pytest.mark.parametrize("text", SAME_SYNTAX)
def test_round_explain_and_calc_read_values_alike(capsys, text):
    rounded = run(capsys, "round", text, "-f", "fp16", "-r", "up")[1].splitlines()[1].split()[2]
    explained = re.search(r"stored value +(\S+)", run(capsys, "explain", text, "-f", "fp16", "-r", "up")[1])[1]
    calculated = run(capsys, "calc", text, "-f", "fp16", "-r", "up")[1].splitlines()[-1].split()[1]
    assert rounded == explained == calculated


@pytest.mark.parametrize("text", ["\u0661", "0b101", "1__0", "1e123456", "--1", "0x"])
def test_round_explain_and_calc_refuse_values_alike(capsys, text):
    for argv in (["round", text, "-f", "fp16"], ["explain", text, "-f", "fp16"], ["calc", text, "-f", "fp16"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1, argv


def test_a_5000_digit_value_is_not_echoed_back(capsys):
    code, _, err = run(capsys, "round", "1" * 5000 + "x", "-f", "fp16")
    assert code == 2 and len(err) < 200 and "limit is 4000" in err
    code, _, err = run(capsys, "round", "1" * 3000 + "x", "-f", "fp16")
    assert code == 2 and len(err) < 200 and "3001 characters" in err
    code, out, _ = run(capsys, "round", "1" * 3000, "-f", "fp16")  # long but valid: read exactly
    assert code == 0 and re.search(r"->\s+inf\s+0x7c00", out) and "1 overflow" in out


@pytest.mark.parametrize("expression", ["0/0", "sqrt(-1)", "nan", "-nan + 1"])
def test_calc_hints_name_only_what_calc_can_do(capsys, expression):
    code, out, err = run(capsys, "calc", expression, "-f", "fp4")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "on-nan" not in err and "on_nan" not in err  # calc has no --on-nan
    assert err.rstrip().endswith("try -f fp16, bf16 or fp8_e4m3")
    assert run(capsys, "calc", expression, "-f", "fp16")[1].splitlines()[-1].split()[:2] == ["result:", "nan"]


@pytest.mark.parametrize(
    ("text", "fmt", "rounding", "stored", "code", "flag"),
    [  # IEEE 754: the all-ones exponent with a zero fraction is inf; code 1 is the smallest subnormal
        ("1e5000", "fp16", "nearest_even", "inf", "0x7c00", "1 overflow"),
        ("3e4300", "bf16", "nearest_even", "inf", "0x7f80", "1 overflow"),
        ("-1e5000", "fp64", "nearest_even", "-inf", "0xfff0000000000000", "1 overflow"),
        ("1e-5000", "fp64", "up", "4.9406564584124654", "0x0000000000000001", "1 underflow"),
    ],
)
def test_values_with_thousands_of_digits_round_and_explain(capsys, text, fmt, rounding, stored, code, flag):
    status, out, err = run(capsys, "round", text, "-f", fmt, "-r", rounding)
    assert status == 0 and err == "", err
    assert out.splitlines()[1].split()[:2] == [text, "->"] and out.splitlines()[1].split()[3] == code
    assert out.splitlines()[1].split()[2].startswith(stored) and flag in out
    status, out, err = run(capsys, "explain", text, "-f", fmt, "-r", rounding)
    assert status == 0 and err == "", err
    assert re.search(r"^hex +(\S+)$", out, re.MULTILINE)[1] == code
    assert re.search(r"^stored value +(\S+)", out, re.MULTILINE)[1].startswith(stored)
    assert flag.split()[1] in re.search(r"^flags +(.+)$", out, re.MULTILINE)[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["round", "1", "-f", "fp17"], "unknown format 'fp17'"),
        (["round", "abc", "-f", "fp16"], "VALUE must be a decimal"),
        (["round", "1", "-f", "fp16", "-r", "sideways"], "invalid choice: 'sideways'"),
        (["round", "nan", "-f", "fp4"], "--on-nan zero"),  # CLI syntax, not on_nan='zero'
        (["round", "1", "-f", "e4m3", "--overflow", "inf"], "--overflow inf is impossible"),
        (["round", "--bits", "0x10000", "-f", "fp16"], "bits must be in [0, 2^16)"),
        (["round", "--bits", "zz", "-f", "fp16"], "--bits values must be integers"),
        (["round", "0b101", "-f", "fp16"], "bit patterns need --bits"),
        (["explain", "--bits", "1", "-f", "fp16,bf16"], "exactly one --format"),
        (["round", "1"], "the following arguments are required: --format"),
        (["draw"], "invalid choice: 'draw'"),
        (["round", "0x.", "-f", "fp16"], "VALUE must be"),
        (["round", "\u0661", "-f", "fp16"], "ASCII"),
        (["round", "1", "-f", ""], "--format needs a format name"),
        (["round", "1", "-f", "fp16,bf16"], "exactly one --format"),
        (["round", "1", "-f", "fp16", "-r", "stochastic", "--seed", "-1"], "non-negative"),
        (["round", "1", "-f", "fp16", "--seed", "3"], "add --rounding stochastic"),  # would be ignored
        (["explain", "1", "--seed", "3"], "add --rounding stochastic"),
        (["round", "1", "-f", "fp16", "--from", "bf16"], "add --bits"),  # would be ignored
        (["round", "--bits", "1", "-f", "fp16", "--from", ""], "--from needs a format name"),
        (["calc", "1 +* 2", "-f", "fp16"], "not valid arithmetic"),
        (["calc", "0x1p0 + _0", "-f", "fp16"], "may only contain"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fpsim: error: ") and message in err


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        ("formats", ["exact constants", "--markdown"]),
        ("explain", ["side by side", "default: fp32,fp16,bf16", "default: nearest_even", "nearest_away:", "hex float"]),
        ("round", ["once, from its exact value", "default: nearest_even", "saturate:", "default: raise"]),
        ("calc", ["grammar:", "fma(", "default: nearest_even", "hex float"]),
    ],
)
def test_help_describes_the_command_its_defaults_and_choices(capsys, command, needles):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert exit_info.value.code == 0 and all(needle in out for needle in needles), [n for n in needles if n not in out]


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


_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # every `import torch` now fails, as on a machine without it
from fpsim.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "argv", [["demo", "--out", "OUT"], ["compare", "-o", "OUT"], ["train", "--backend", "torch", "--steps", "2"]]
)
def test_torch_commands_without_torch_name_the_extra_in_one_line_and_exit_2(tmp_path, argv):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, *argv], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "fpsim: error: fpsim.torch needs PyTorch; install it with: pip install fpsim[torch]\n"
    assert not (tmp_path / "out").exists()


def test_other_import_errors_are_bugs_and_keep_their_traceback(monkeypatch):
    import fpsim.cli.codec

    def broken(args):
        raise ImportError("cannot import name 'x' from 'fpsim.y'")

    monkeypatch.setattr(fpsim.cli.codec, "cmd_formats", broken)
    with pytest.raises(ImportError, match="cannot import name"):
        main(["formats"])


# A real SIGINT, sent by the process to itself at the moment a command module starts to load
_INTERRUPTED_WHILE_LOADING = """
import os, signal, sys

class SigintOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SigintOnImport())
from fpsim.cli import main
sys.exit(main(["formats"]))
"""


@pytest.mark.parametrize("module", ["fpsim.cli._common", "fpsim.cli.codec", "fpsim.cli.plot", "fpsim.train"])
def test_ctrl_c_while_the_commands_load_is_one_line_and_exit_130(module):
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_WHILE_LOADING, module], capture_output=True, text=True)
    assert (done.returncode, done.stderr, done.stdout) == (130, "fpsim: interrupted\n", "")


def test_importing_the_cli_loads_no_command_module():
    code = "import sys, fpsim.cli; print(sorted(m for m in sys.modules if m.startswith('fpsim.cli.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_plot_values_are_the_nearest_float64():
    from fpsim.cli import UsageError, parse_value

    assert parse_value("0x1.8p-3") == 0.1875 and parse_value("-INF") == -np.inf and np.isnan(parse_value("nan"))
    assert parse_value("1e-5") == 1e-5 and parse_value(" 65504 ") == 65504.0 and parse_value(".5") == 0.5
    assert parse_value("0e5") == 0.0 and parse_value("0x0p-5000") == 0.0 and str(parse_value("-0.0")) == "-0.0"
    assert math.copysign(1, parse_value("-0")) == -1
    for text in ("1e400", "1e-400"):
        with pytest.raises(UsageError, match="outside float64's range"):
            parse_value(text)


def _command_names() -> list[str]:
    from fpsim.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(commands.choices)


_COMMAND_NAMES = _command_names()


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in _COMMAND_NAMES)], ids=" ".join)
def test_every_help_prints_and_exits_0(capsys, argv):
    """argparse formats help strings with %: a bare "50%" in one command's help broke `fpsim --help`."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 0 and captured.err == "" and "usage: fpsim" in captured.out
