"""The prepared device check runs anywhere: on the CPU with tiny sizes it completes every section, and the
torch codec agrees with the native casts and with the NumPy codec there too."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_check_on_the_cpu_completes_every_section(tmp_path):
    gpu_check = load_script()
    assert gpu_check.main(["--out", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["errors"] == {}
    sections = record["sections"]
    assert all(row["mismatches"] == 0 for row in sections["round vs native casts"])
    modes = gpu_check.DETERMINISTIC_MODES
    assert all(
        row[mode] == 0 for row in sections["round vs the NumPy codec, every deterministic mode"] for mode in modes
    )
    assert sections["native cast overflow"]["fp16"] == "inf"
    probes = sections["tensor core probes"]["outputs"]["fp16 mm -> fp16"]
    assert probes["frac_10"] == 1 + 2.0**-7  # 8 · 2^-10 survives any accumulator: the probe itself is right
    for scenario in ("underflow", "overflow"):
        assert all(a["skipped_agree"] for a in sections["simulator vs torch"][scenario]["agreements"])
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "## throughput" in markdown and "FAILED" not in markdown
    assert "Facebook employee" not in markdown  # torch's CPU error for mm(out_dtype=...) runs on for lines


def test_a_multi_line_torch_compile_error_stays_one_cell_of_the_markdown_table(monkeypatch):
    gpu_check = load_script()
    measure = gpu_check.bench_torch.measure

    def failing_compile(x, repeat, compile_):
        if compile_:
            raise RuntimeError("backend 'inductor' raised. Set TORCH_LOGS.\nCompilerError: a | b\n  more lines")
        return measure(x, repeat, compile_)

    monkeypatch.setattr(gpu_check.bench_torch, "measure", failing_compile)
    rows = gpu_check.throughput("cpu", 1000, 1, compile_=True)
    assert rows[-1]["x native"] == "unavailable: RuntimeError: backend 'inductor' raised"
    lines = gpu_check.markdown_table(rows).splitlines()
    assert len(lines) == len(rows) + 2 and all(line.count(" | ") == len(rows[0]) - 1 for line in lines[2:])


def test_probe_rows_hold_what_they_claim():
    rows = load_script().probe_rows()
    a, b = rows["frac_20"]
    assert a @ b == 1 + 8 * 2.0**-20 and set(a[1:9] * b[1:9]) == {2.0**-20}
    a, b = rows["group_17"]
    assert a @ b == 2.0**-24 and a[17] == -1 and a[0] == 1
