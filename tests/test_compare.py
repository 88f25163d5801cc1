"""The simulator against torch: agreement metrics on hand-made Histories, and `fpsim compare` / `fpsim demo`
end to end on a few steps, with their bad input."""

from __future__ import annotations

import json
import math
import os
import re

import pytest

from fpsim import compare
from fpsim.cli import main
from fpsim.report import Report, check_folder, markdown_table
from fpsim.train import History


def history(loss, scale=None, skipped=None, policy="amp") -> History:
    n = len(loss)
    return History(config={}, policy={"name": policy}, loss=list(loss), scale=scale or [1.0] * n,
                   skipped=skipped or [False] * n, flushed=[0.0] * n)  # fmt: skip


def test_loss_differences_are_relative_and_treat_non_finite_steps_by_rule():
    a = history([2.0, 4.0, math.nan, math.nan, 1.0, 0.0])
    b = history([2.0, 5.0, math.nan, 3.0, math.inf, 0.0])
    # |4 - 5| / 4 = 0.25; both NaN agree (0); one NaN or inf differs infinitely; equal zeros agree
    assert compare.loss_differences(a, b).tolist() == [0.0, 0.25, 0.0, math.inf, math.inf, 0.0]


def test_agreement_reports_skipped_steps_scales_and_the_first_divergence():
    sim = history([1.0, 1.0, 1.0, 1.0], scale=[4.0, 2.0, 2.0, 2.0], skipped=[True, False, False, False])
    hw = history([1.0, 1.0005, 1.01, 1.0], scale=[4.0, 2.0, 2.0, 2.0], skipped=[True, False, False, False])
    result = compare.agreement(sim, hw, tolerance=1e-3)
    assert result.skipped_simulator == result.skipped_torch == [1] and result.skipped_agree
    assert result.scales_equal
    assert result.first_divergence == 3  # 0.0005 is within 1e-3, 0.01 is not
    assert result.loss_difference_max == pytest.approx(0.01)
    assert result.loss_difference_median == pytest.approx(0.00025)


def test_agreement_sees_different_scales_and_skips():
    sim = history([1.0, 1.0], scale=[4.0, 2.0], skipped=[True, False])
    hw = history([1.0, 1.0], scale=[4.0, 4.0], skipped=[False, False])
    result = compare.agreement(sim, hw)
    assert not result.scales_equal and not result.skipped_agree and result.first_divergence is None


@pytest.mark.parametrize(
    ("sim", "hw", "tolerance", "message"),
    [
        (history([1.0]), history([1.0], policy="fp16"), 1e-3, "runs of one policy"),
        (history([1.0]), history([1.0, 1.0]), 1e-3, "same number of steps"),
        (history([1.0]), history([1.0]), 0, "tolerance must be a number > 0"),
    ],
)
def test_agreement_refuses_runs_of_different_experiments(sim, hw, tolerance, message):
    with pytest.raises(ValueError, match=message):
        compare.agreement(sim, hw, tolerance)


def test_markdown_table_and_report_folder(tmp_path):
    assert (
        markdown_table([{"a": 1.23456789, "b": True, "c": None}]) == "| a | b | c |\n|---|---|---|\n| 1.235 | yes | – |"
    )
    # a line break or a bare | inside a cell would break the row: cells stay on one line, | escaped
    assert markdown_table([{"a|b": "x\n  y | z"}]) == "| a\\|b |\n|---|\n| x y \\| z |"
    (tmp_path / "file").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        check_folder(tmp_path / "file")
    with pytest.raises(ValueError, match="parent folder"):
        check_folder(tmp_path / "missing" / "deeper")
    report = Report(tmp_path / "new", "Title")
    report.section("One", "text")
    report.data["x"] = [1.0]
    path = report.write()
    assert path.read_text().startswith("# Title\n\n## One\n\ntext") and (tmp_path / "new" / "report.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--steps", "0", "-o", "OUT"], "--steps: must be a whole number of steps >= 1"),
        (["compare", "--device", "tpu", "-o", "OUT"], "device must be one of"),
        (["compare", "--policy", "fp99", "-o", "OUT"], "fp99"),
        (["compare", "--policy", ",", "-o", "OUT"], "--policy needs at least one policy"),
        (["compare", "-o", "FILE"], "exists and is not a folder"),
        (["compare", "-o", ""], "must name a folder"),
        (["demo", "--out", "FILE"], "exists and is not a folder"),
        (["demo", "--steps", "-3", "--out", "OUT"], "--steps"),
        (["demo", "--device", "cuda:x", "--out", "OUT"], "device"),
        (["demo", "--out", ""], "--out must name a folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv, message):
    (tmp_path / "FILE").write_text("keep")
    argv = [str(tmp_path / a) if a in ("OUT", "FILE") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "OUT").exists() and (tmp_path / "FILE").read_text() == "keep"


@pytest.mark.parametrize(
    ("argv", "entry", "kind"),
    [
        (["compare", "-o", "OUT"], "compare_underflow.png", "folder"),
        (["compare", "-s", "overflow", "-o", "OUT"], "compare_overflow.png", "fifo"),
        (["compare", "-o", "OUT"], "report.json", "read-only"),
        (["demo", "--out", "OUT"], "overflow.png", "folder"),
        (["demo", "--out", "OUT"], "report.md", "folder"),
    ],
)
def test_an_entry_the_report_cannot_replace_is_refused_before_any_training(tmp_path, capsys, argv, entry, kind):
    out = tmp_path / "OUT"
    out.mkdir()
    {"folder": lambda p: p.mkdir(), "fifo": os.mkfifo, "read-only": lambda p: p.write_text("keep")}[kind](out / entry)
    if kind == "read-only":
        (out / entry).chmod(0o444)
    assert main([str(out) if a == "OUT" else a for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no progress: nothing was trained
    assert captured.err.startswith(f"fpsim: error: --out {str(out)!r} holds {entry!r}, which is ")
    assert captured.err.count("\n") == 1 and sorted(p.name for p in out.iterdir()) == [entry]


def test_a_report_writes_only_the_figures_it_declared(tmp_path):
    report = Report(tmp_path, "Title", figures=["one"])
    with pytest.raises(ValueError, match="figure 'two' was not declared"):
        report.figure("two", None, "caption")


def test_cuda_where_there_is_none_is_a_clear_error(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the message is about machines without it")
    assert main(["compare", "--device", "cuda", "-o", str(tmp_path / "out")]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err


def test_compare_writes_its_report_and_finds_the_same_skipped_steps(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "-s", "overflow", "-p", "fp32,amp", "--steps", "6", "--device", "cpu", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^amp\s", printed, re.MULTILINE) and f"wrote {out / 'report.md'}" in printed
    markdown = (out / "report.md").read_text()
    for image in re.findall(r"\]\(([^)]+\.png)\)", markdown):
        assert (out / image).stat().st_size > 10_000  # every linked figure was written
    agreements = {a["policy"]: a for a in json.loads((out / "report.json").read_text())["comparison"]["agreements"]}
    # amp backs off from 2^16 on every one of its first steps in the overflow scenario, in both backends
    assert agreements["amp"]["skipped_agree"] and agreements["amp"]["skipped_simulator"] == [1, 2, 3, 4, 5, 6]
    assert agreements["amp"]["scales_equal"] and agreements["fp32"]["skipped_simulator"] == []


def test_demo_tells_the_story_in_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "4", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for part in ("1. The bits of 0.1", "2. The underflow scenario", "3. The overflow scenario", "report.md"):
        assert part in printed
    markdown = (out / "report.md").read_text()
    assert "0x3dcccccd" in markdown and "0x2e66" in markdown  # 0.1's fp32 and fp16 codes
    images = re.findall(r"\]\(([^)]+\.png)\)", markdown)
    assert len(images) == 2 and all((out / image).exists() for image in images)
