"""The prepared device check runs anywhere: on the CPU with tiny sizes it completes every section, and the
torch codec agrees with the native casts and with the NumPy codec there too."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fpsim

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
    units = sections["matrix units vs the chip"]
    assert units["device"].startswith("needs CUDA") and "## matrix units vs the chip" in markdown
    assert {row["model"] for row in units["rows"]} == {"h100_fp16", "h100_bf16", "h100_tf32", "h100_fp8_e4m3"}
    assert all(row["identical"] == "100.00%" for row in units["rows"])  # the model against itself, on the CPU
    bench = sections["fpsim bench --quick"]
    assert bench["exit code"] == 0 and bench["report"]["schema"] == "fpsim.bench/2"
    assert bench["report"]["environment"]["device"] == "cpu" and bench["report"]["quick"] is True
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG") and "claim: 2–3× faster" in bench["markdown"]
    assert {row["model"] for row in bench["report"]["steps"]} == {"digits-mlp"}  # --quick: one model
    audit = sections["fpsim audit"]
    assert audit["digits-mlp"]["exit code"] == 0 and (tmp_path / "audit_digits-mlp.json").is_file()
    assert audit["digits-mlp"]["report"]["tensors"]  # every tensor's counts, read back from the JSON


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


def test_a_failing_command_is_an_error_and_writes_nothing(tmp_path):
    gpu_check = load_script()
    with pytest.raises(RuntimeError, match="exited with 2: fpsim: error: --device must be one of"):
        gpu_check.bench_quick("tpu", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_probe_rows_hold_what_they_claim():
    rows = load_script().probe_rows()
    a, b = rows["frac_20"]
    assert a @ b == 1 + 8 * 2.0**-20 and set(a[1:9] * b[1:9]) == {2.0**-20}
    a, b = rows["group_17"]
    assert a @ b == 2.0**-24 and a[17] == -1 and a[0] == 1


# ---- matrix units vs the chip: the parts that run without CUDA -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "capability", "family"),
    [
        ("NVIDIA H200", (9, 0), "h100"),
        ("NVIDIA H100 80GB HBM3", (9, 0), "h100"),
        ("NVIDIA A100-SXM4-80GB", (8, 0), "a100"),
        ("NVIDIA L40S", (8, 9), "ada"),
        ("Tesla V100-SXM2-16GB", (7, 0), "v100"),
        ("NVIDIA B200", (10, 0), "b200"),
        ("NVIDIA GeForce RTX 3090", (8, 6), None),
        ("NVIDIA GeForce RTX 5090", (12, 0), None),
    ],
)
def test_the_preset_family_follows_the_compute_capability(name, capability, family):
    found, note = load_script().matrix_unit_family(name, capability)
    assert found == family and name in note
    assert ("skipped" in note) == (family is None)


def test_a_family_offers_the_presets_torch_can_reach():
    gpu_check = load_script()
    assert gpu_check.family_presets("h100") == ["h100_fp16", "h100_bf16", "h100_tf32", "h100_fp8_e4m3"]
    assert gpu_check.family_presets("v100") == ["v100_fp16"]
    assert gpu_check.family_presets("ada") == ["ada_fp8_e4m3"]


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "tf32", "fp8_e4m3"])
@pytest.mark.parametrize("kind", ["wide exponents", "cancellation", "subnormals"])
def test_unit_inputs_are_values_of_the_format_that_expose_what_they_claim(fmt, kind):
    a, b = load_script().unit_inputs(fmt, kind, 8, 64, 4, seed=3)
    assert a.shape == (8, 64) and b.shape == (64, 4)
    for values in (a, b):
        assert np.array_equal(fpsim.round(values, fmt), values)  # exact: the chip and the model see the same
    products = np.abs(a[:, :, None] * b[None, :, :])
    exact = np.abs(a @ b)  # the float64 error here is far below the ratios asserted
    if kind == "wide exponents":
        nonzero = products[products > 0]
        kept = 13 if fmt == "fp8_e4m3" else 25  # the aligned fraction bits of the units that take fmt
        assert np.log2(nonzero.max() / nonzero.min()) > kept + 1
    if kind == "cancellation":
        ulp = 2.0 ** -fpsim.get_format(fmt).nmant
        assert np.median(exact / products.sum(axis=1)) < ulp  # sums below their terms' own rounding error
    if kind == "subnormals":
        smallest_normal = 2.0 ** fpsim.get_format(fmt).emin
        assert np.mean((a != 0) & (np.abs(a) < smallest_normal)) > 0.3
        assert products[products > 0].min() >= 2.0**-126  # the products themselves are fp32 normals


def nudged(values: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        values = np.nextafter(values, values.dtype.type(np.inf))
    return values


@pytest.mark.parametrize(("fmt", "dtype"), [("fp32", np.float32), ("fp16", np.float16)])
def test_ulp_histogram_counts_the_steps_between_neighbours(fmt, dtype):
    gpu_check = load_script()
    model = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, -0.0, np.nan, 2.0, 3.0, np.inf], dtype=dtype)
    chip = model.copy()
    chip[1], chip[2], chip[3], chip[4] = (nudged(model[i : i + 1], s)[0] for i, s in ((1, 1), (2, 3), (3, 8), (4, 300)))
    chip[5], chip[6], chip[7], chip[8] = -0.0, -0.0, np.nan, np.nan  # -0 vs +0: neighbours; NaN vs 2: non-finite
    histogram = gpu_check.ulp_histogram(chip.astype(np.float64), model.astype(np.float64), fmt)
    assert histogram == {"identical": 5, "1": 2, "2": 0, "3-4": 1, "5-8": 1, "9-16": 0, "17-256": 0, ">256": 1,
                         "non-finite": 1}  # fmt: skip


def test_compare_unit_finds_a_chip_that_differs_by_one_ulp():
    gpu_check = load_script()
    model = gpu_check.model_matmul("h100_fp16", "fp32")

    def chip(a, b):  # the model, with its first output one fp32 ulp up, on each kind of input
        result = model(a, b)
        result.flat[0] = np.nextafter(np.float32(result.flat[0]), np.float32(np.inf))
        return result

    (row,) = gpu_check.compare_unit("h100_fp16", "fp16", "fp32", chip, [16], 4, 4)
    assert row["identical"] == f"{45 / 48:.2%}" and row["ulps of the rest"] == "1:3"
    assert row["wide exponents"] == row["cancellation"] == row["subnormals"] == f"{15 / 16:.1%}"


@pytest.mark.parametrize(("fmt", "dtype"), [("fp16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_compare_unit_takes_cublas_fp32_then_one_rounding_as_identical(fmt, dtype):
    """What the H200 did for fp16/bf16 outputs: cuBLAS's fp32 result cast once (NumPy/ml_dtypes: nearest even)."""
    gpu_check = load_script()
    preset = f"h100_{fmt}"
    fp32_model = gpu_check.model_matmul(preset, "fp32")

    def chip(a, b):
        return fp32_model(a, b).astype(dtype).astype(np.float64)

    rows = gpu_check.compare_unit(preset, fmt, fmt, chip, [16, 64, 256], 4, 4)
    assert [row["identical"] for row in rows] == ["100.00%"] * 3
    assert all(row["ulps of the rest"] == "-" and set(row) == set(rows[0]) for row in rows)


@pytest.mark.parametrize(("preset", "group"), [("h100_bf16", 16), ("a100_bf16", 8), ("v100_fp16", 4)])
def test_the_order_probe_reads_the_models_chain_of_groups(preset, group):
    gpu_check = load_script()
    probe = gpu_check.probe_order(preset, 64, chip=None)
    survivors = dict(zip(map(tuple, probe["pairs"]), probe["model survivors"]))
    # by hand: ±big in the sum truncate away every one fused or accumulated with them; the groups after j's count
    assert survivors[(0, 20)] == 64 - group * (20 // group + 1) and survivors[(0, 63)] == 0
    assert survivors[(5, 63)] == 0
    assert probe["model reading"].startswith(f"one sequential chain of {group}-product groups")


def test_the_order_probe_tells_a_split_k_from_one_chain():
    gpu_check = load_script()
    model = gpu_check.model_matmul("h100_bf16", "fp32")

    def split_k(a, b):  # two halves of K on two chains, their fp32 results added at the end
        half = a.shape[1] // 2
        return fpsim.round(model(a[:, :half], b[:half]) + model(a[:, half:], b[half:]), "fp32")

    probe = gpu_check.probe_order("h100_bf16", 64, chip=split_k)
    assert probe["chip equals model"] is False
    assert probe["chip reading"].startswith("not one chain of 16-product groups")
    chip, model = (dict(zip(map(tuple, probe["pairs"]), probe[f"{side} survivors"])) for side in ("chip", "model"))
    # by hand, ±big at 0 and 40: one chain counts the ones of the last group; split, each half holds one big
    # (every one of either half truncated away) and the halves cancel to 0
    assert model[(0, 40)] == 16 and chip[(0, 40)] == 0
