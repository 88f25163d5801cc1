"""fpsim bench: `--quick` on the CPU gives a well-formed report (JSON schema, figure, the claims beside the
measurements); timed regions synchronise with CUDA (fake events record the order); the CPU memory count is exact on
known allocations; bad input is one line and exit code 2. No test asserts on wall-clock time."""

from __future__ import annotations

import importlib
import io
import json
import math
import sys

import pytest

torch = pytest.importorskip("torch")

from fpsim.cli import main  # noqa: E402
from fpsim.plots.bench import bench_figure  # noqa: E402

bench_module = importlib.import_module("fpsim.torch.bench")  # fpsim.torch.bench is the function
from fpsim.torch import models  # noqa: E402
from fpsim.torch.bench import (  # noqa: E402
    MATMUL_DTYPES,
    POLICIES,
    BenchReport,
    LiveBytes,
    StepRow,
    matmul_precision,
    median_seconds,
    memory_verdict,
    speed_verdict,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `fpsim bench --quick --device cpu -o ... --plot ...` for the module: (exit code, stdout, JSON, png)."""
    folder = tmp_path_factory.mktemp("bench")
    out, png = folder / "bench.json", folder / "bench.png"
    capture = pytest.MonkeyPatch()
    stdout = io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    try:
        code = main(["bench", "--quick", "--device", "cpu", "-o", str(out), "--plot", str(png)])
    finally:
        capture.undo()
    return code, stdout.getvalue(), json.loads(out.read_text()), png


def test_quick_bench_exits_cleanly_and_writes_both_files(quick_run):
    code, stdout, _, png = quick_run
    assert code == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 10_000
    assert "wrote" in stdout and "bench.json" in stdout and "bench.png" in stdout


def test_quick_report_follows_the_schema(quick_run):
    _, _, record, _ = quick_run
    assert record["schema"] == "fpsim.bench/1" and record["quick"] is True
    assert set(record) == {"schema", "fpsim", "quick", "environment", "methods", "matmul", "steps", "claims"}
    env = record["environment"]
    assert env["device"] == "cpu" and env["capability"] is None and env["torch"] == torch.__version__
    assert env["cpus"] >= 1 and env["load_average"] >= 0
    assert set(record["methods"]) == {"timing", "memory", "matmul"}
    assert "TorchDispatchMode" in record["methods"]["memory"] and "perf_counter" in record["methods"]["timing"]
    for row in record["matmul"]:
        assert set(row) == {"dtype", "n", "seconds", "tflops", "note"} and row["dtype"] in MATMUL_DTYPES
        if row["n"] is None:  # a dtype this device has no matmul for: said, not measured
            assert row["seconds"] is row["tflops"] is None and row["note"].startswith("not available on this device")
        else:
            assert row["seconds"] > 0 and math.isclose(row["tflops"], 2 * row["n"] ** 3 / row["seconds"] / 1e12)
    for row in record["steps"]:
        assert set(row) == {"model", "policy", "ran", "seconds", "peak_bytes", "note"}
        if row["seconds"] is None:
            assert row["peak_bytes"] is None and row["note"]
        else:
            assert row["seconds"] > 0 and isinstance(row["peak_bytes"], int) and row["peak_bytes"] > 0


def test_on_the_cpu_tf32_and_fp8_are_rows_that_say_they_are_not_available(quick_run):
    _, _, record, _ = quick_run
    missing = {row["dtype"]: row["note"] for row in record["matmul"] if row["n"] is None}
    assert set(missing) == {"tf32", "fp8_e4m3"} and "the CPU computes fp32" in missing["tf32"]
    measured = {(row["dtype"], row["n"]) for row in record["matmul"] if row["n"] is not None}
    assert measured == {(dtype, n) for dtype in ("fp32", "fp16", "bf16") for n in (128, 256)}
    steps = {(row["model"], row["policy"]): row for row in record["steps"]}
    assert set(steps) == {(model, policy) for model in models.MODELS for policy in POLICIES}
    for model in models.MODELS:
        assert steps[(model, "fp8")]["note"].startswith("not available on this device: no FP8 matrix units")
        assert all(steps[(model, policy)]["seconds"] is not None for policy in ("fp32", "amp", "bf16"))
        assert "on the CPU" in steps[(model, "amp")]["ran"]


def test_the_claims_are_the_measured_ratios_beside_2_to_3x_and_50_percent(quick_run):
    _, stdout, record, _ = quick_run
    steps = {(row["model"], row["policy"]): row for row in record["steps"]}
    claims = record["claims"]
    assert claims["speed"] == "2–3× faster" and claims["memory"] == "50% less memory"
    assert {(row["model"], row["policy"]) for row in claims["steps"]} == {
        (model, policy) for model in models.MODELS for policy in ("amp", "bf16")
    }
    for row in claims["steps"]:
        fp32, low = steps[(row["model"], "fp32")], steps[(row["model"], row["policy"])]
        assert row["speedup"] == fp32["seconds"] / low["seconds"]
        assert row["memory_ratio"] == low["peak_bytes"] / fp32["peak_bytes"]
        assert row["speed"] == speed_verdict(row["speedup"]) and row["memory"] == memory_verdict(row["memory_ratio"])
    assert "speed-up (claim: 2–3× faster)" in stdout and "memory saved (claim: 50% less memory)" in stdout
    for policy in ("amp", "bf16"):
        speeds = [row["speedup"] for row in claims["steps"] if row["policy"] == policy]
        line = next(line for line in stdout.splitlines() if line.startswith(f"{policy}: "))
        assert ("slower than fp32" in line) == (min(speeds) < 1)  # said plainly whenever it is so


def test_autocast_halves_what_it_stores_so_the_cpu_memory_count_drops(quick_run):
    """Not a timing: autocast keeps fp16/bf16 activations for backward, so the counted peak is below fp32's."""
    _, _, record, _ = quick_run
    for row in record["claims"]["steps"]:
        assert row["memory_ratio"] < 1


# ---- verdicts and claims, by hand ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speedup", "verdict"),
    [
        (0.5, "slower than fp32: 2.00× the time"),
        (1.5, "faster, short of the claimed 2–3×"),
        (2.0, "within the claimed 2–3×"),
        (3.0, "within the claimed 2–3×"),
        (4.0, "beyond the claimed 2–3×"),
    ],
)
def test_speed_verdicts(speedup, verdict):
    assert speed_verdict(speedup) == verdict


def test_memory_verdicts():
    assert memory_verdict(0.8) == "saves 20%; the claim is 50%"
    assert memory_verdict(1.25) == "25% more than fp32; the claim is 50% less"


def hand_report() -> BenchReport:
    steps = [
        StepRow("m", "fp32", "fp32", 0.004, 1000),
        StepRow("m", "amp", "amp", 0.002, 500),
        StepRow("m", "bf16", "bf16", 0.008, 1250),
        StepRow("m", "fp8", "fp8", None, None, "not available"),
    ]
    matmul = [bench_module.MatmulRow("fp32", 64, 1e-3, 2 * 64**3 / 1e-3 / 1e12),
              bench_module.MatmulRow("fp16", 64, 2.5e-4, 2 * 64**3 / 2.5e-4 / 1e12),
              bench_module.MatmulRow("tf32", None, None, None, "not available on this device: ...")]  # fmt: skip
    env = {"device": "cpu", "name": "test CPU", "torch": "x", "threads": 1, "capability": None}
    return BenchReport(env, {"timing": "t", "memory": "m", "matmul": "mm"}, True, matmul, steps)


def test_claims_are_fp32_time_over_time_and_peak_over_fp32_peak():
    report = hand_report()
    assert [(row["policy"], row["speedup"], row["memory_ratio"]) for row in report.claims()] == [
        ("amp", 2.0, 0.5),
        ("bf16", 0.5, 1.25),
    ]
    assert report.matmul_speedups() == [
        {"dtype": "fp16", "n": 64, "speedup": pytest.approx(4.0), "speed": "beyond the claimed 2–3×"}
    ]
    summary = report.summary()
    assert summary[0] == "amp: 2.00× fp32's speed (claim 2–3×): within the claimed 2–3×; memory 50% of fp32 (claim 50%)"
    assert summary[1] == (
        "bf16: 0.50× fp32's speed (claim 2–3×): slower than fp32 for every model; memory 125% of fp32 (claim 50%)"
    )


def test_the_terminal_table_shows_measurements_and_what_did_not_run():
    from fpsim._terminal import console

    stream = io.StringIO()
    console(stream).print(hand_report().table())
    text = stream.getvalue()
    assert "2.00×" in text and "0.50× slower" in text and "50%" in text and "25% more" in text
    assert "fp8: not available" in text and "tf32: not available on this device" in text


@pytest.mark.parametrize(
    ("load", "cpus", "warned"), [(10.0, 2, True), (1.5, 2, False), (2.0, 2, False), (None, 2, False)]
)
def test_a_busy_machine_is_warned_about(load, cpus, warned):
    report = hand_report()
    report.environment.update(load_average=load, cpus=cpus)
    assert bool(report.warnings()) == warned
    if warned:
        assert report.warnings()[0].startswith("warning: the machine was busy (load 10 on 2 CPUs)")


# ---- synchronisation and memory on CUDA, with fakes that record the order of calls --------------------------


class Recorder:
    """Fake torch.cuda.Event and torch.cuda.synchronize writing to one log; elapsed times come from a list."""

    def __init__(self, elapsed_ms: list[float]) -> None:
        self.log: list[str] = []
        self.elapsed_ms = list(elapsed_ms)
        self.events = 0

    def event_class(self):
        recorder = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing
                recorder.events += 1
                self.name = f"event{recorder.events}"
                self.done = False

            def record(self) -> None:
                recorder.log.append(f"record {self.name}")

            def synchronize(self) -> None:
                recorder.log.append(f"wait {self.name}")
                self.done = True

            def elapsed_time(self, end) -> float:
                assert end.done, "elapsed_time read before the end event was waited for"
                recorder.log.append("read")
                return recorder.elapsed_ms.pop(0)

        return Event

    def synchronize(self, device=None) -> None:
        self.log.append("device sync")


def test_timed_regions_on_cuda_sit_between_events_that_are_waited_for(monkeypatch):
    recorder = Recorder([3.0, 1.0, 2.0])
    monkeypatch.setattr(torch.cuda, "Event", recorder.event_class())
    monkeypatch.setattr(torch.cuda, "synchronize", recorder.synchronize)
    seconds = median_seconds(lambda: recorder.log.append("run"), torch.device("cuda"), repeat=3, warmup=2)
    assert seconds == 0.002  # the median of 3, 1 and 2 ms
    region = lambda start, end: [f"record event{start}", "run", f"record event{end}", f"wait event{end}", "read"]  # noqa: E731
    assert recorder.log == ["run", "run", "device sync", *region(1, 2), *region(3, 4), *region(5, 6)]


def test_the_cpu_path_never_touches_cuda(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA call on the CPU path")

    monkeypatch.setattr(torch.cuda, "Event", forbidden)
    monkeypatch.setattr(torch.cuda, "synchronize", forbidden)
    calls = []
    median_seconds(lambda: calls.append(1), torch.device("cpu"), repeat=3, warmup=1)
    assert len(calls) == 4


def test_peak_memory_on_cuda_resets_the_counter_and_reads_it_after_a_synchronize(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: log.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: log.append("read") or 12345)
    step = bench_module._Step("digits-mlp", "fp32", torch.device("cpu"))
    step.device = torch.device("cuda")  # the CUDA branch, run on CPU tensors
    monkeypatch.setattr(step, "forward_backward_update", lambda: log.append("step"))
    assert bench_module.peak_bytes(step) == 12345
    assert log == ["sync", "reset", "step", "sync", "read"]


def test_matmul_precision_sets_tf32_and_restores_every_flag_even_after_an_error():
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    try:
        cuda.allow_tf32, cudnn.allow_tf32 = True, False
        torch.set_float32_matmul_precision("medium")
        with matmul_precision(tf32=False):
            assert (cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision()) == (
                False,
                False,
                "highest",
            )
        inside = []

        def fail_inside() -> None:
            with matmul_precision(tf32=True):
                inside.append((cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision()))
                raise RuntimeError("inside")

        with pytest.raises(RuntimeError, match="inside"):
            fail_inside()
        assert inside == [(True, True, "high")]
        assert (cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision()) == (True, False, "medium")
    finally:
        cuda.allow_tf32, cudnn.allow_tf32 = saved[0], saved[1]
        torch.set_float32_matmul_precision(saved[2])


@pytest.mark.parametrize(("capability", "tf32", "fp8"), [((7, 0), False, False), ((8, 0), True, False),
                                                         ((8, 9), True, True), ((9, 0), True, True)])  # fmt: skip
def test_tf32_and_fp8_follow_the_compute_capability(monkeypatch, capability, tf32, fp8):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert (bench_module.unavailable("tf32", cuda) is None) == tf32
    assert (bench_module.unavailable("fp8_e4m3", cuda) is None) == fp8
    assert bench_module.unavailable("fp16", cuda) is None and bench_module.unavailable("bf16", cuda) is None


def test_on_an_fp8_capable_device_the_fp8_step_is_measured(monkeypatch):
    monkeypatch.setattr(bench_module, "fp8_unavailable", lambda device: None)  # the CPU's _scaled_mm stands in
    row = bench_module.measure_step("tiny-transformer", "fp8", torch.device("cpu"), quick=True)
    assert row.seconds > 0 and row.peak_bytes > 0 and row.note == "" and "FP8 GEMMs" in row.ran


def test_an_fp8_step_that_torch_refuses_is_a_row_naming_the_error(monkeypatch):
    refusal = "Multiplication of two Float8_e5m2 matrices is not supported"

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{refusal}\nmore detail")

    monkeypatch.setattr(bench_module, "fp8_unavailable", lambda device: None)
    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    row = bench_module.measure_step("digits-mlp", "fp8", torch.device("cpu"), quick=True)
    assert row.seconds is None and row.note == f"failed with torch {torch.__version__}: RuntimeError: {refusal}"


# ---- the CPU memory count ---------------------------------------------------------------------------------


def test_live_bytes_counts_each_storage_once_until_it_is_freed():
    with LiveBytes() as live:
        a = torch.zeros(1000)  # 4000 bytes
        b = torch.zeros(2000, dtype=torch.float16)  # 4000 bytes
        view = a[:10]  # a view: no new storage
        a.add_(1)  # in place: no new storage
        del a, view
        c = torch.ones(3000, dtype=torch.float64)  # 24000 bytes, after a's 4000 went
    assert live.peak == 4000 + 24000 and live.current == 4000 + 24000
    del b, c
    assert live.current == 0


def test_live_bytes_sees_the_tensors_backward_makes():
    x = torch.randn(256, 64, requires_grad=True)
    w = torch.randn(64, 32, requires_grad=True)
    with LiveBytes() as live:
        y = x @ w  # 256×32 fp32 = 32768 bytes
        y.sum().backward()  # grads 256×64 and 64×32 fp32, and the ones of the sum's backward
    assert live.peak >= 32768 + 65536 + 8192
    assert x.grad is not None and live.current >= 65536 + 8192


# ---- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "tpu"], "--device must be one of cpu, cuda, auto"),
        (["--device", "cuda"], "--device 'cuda': torch"),
        (["--device", "cuda:1"], "sees no CUDA GPU here; use --device cpu"),
        (["-o", "bench.txt"], "-o must end in .json"),
        (["--plot", "bench.json"], "--plot must end in .png, .svg, .pdf"),
        (["--plot", "missing/bench.png"], "does not exist"),
        (["--quick", "--steps", "3"], "unrecognized arguments: --steps 3"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2_before_any_work(monkeypatch, capsys, tmp_path, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: pytest.fail("measured despite bad input"))
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fpsim: error: ") and message in err
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: pytest.fail("measured despite bad input"))
    (tmp_path / "taken.json").mkdir()
    assert main(["bench", "-o", str(tmp_path / "taken.json")]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize(("kwargs", "error"), [({"device": "tpu"}, ValueError), ({"device": 0}, ValueError),
                                               ({"quick": "yes"}, TypeError)])  # fmt: skip
def test_the_api_refuses_bad_arguments(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        bench_module.bench(**kwargs)


# ---- the figure --------------------------------------------------------------------------------------------


def test_the_figure_draws_time_and_memory_relative_to_fp32_and_the_matmul_throughput():
    figure, panels = bench_figure(hand_report().to_dict())
    time_panel, memory_panel, matmul_panel = panels
    heights = {container.get_label(): [bar.get_height() for bar in container] for container in time_panel.containers}
    assert heights == {"fp32": [1.0], "amp": [0.5], "bf16": [2.0]}  # time ÷ fp32's: 2 ms/4 ms, 8 ms/4 ms
    assert time_panel.get_yscale() == "log" and memory_panel.get_yscale() == "linear"
    heights = {container.get_label(): [bar.get_height() for bar in container] for container in memory_panel.containers}
    assert heights == {"fp32": [1.0], "amp": [0.5], "bf16": [1.25]}
    assert "tf32" in matmul_panel.get_title() and matmul_panel.get_yscale() == "log"
    assert "test CPU" in figure.get_suptitle() and "busy" not in figure.get_suptitle()
    busy = hand_report().to_dict()
    busy["environment"] |= {"load_average": 9.5, "cpus": 2}
    assert "the machine was busy (load 9.5 on 2 CPUs)" in bench_figure(busy)[0].get_suptitle()


def test_the_figure_takes_the_report_object_too_and_refuses_anything_else():
    figure, _ = bench_figure(hand_report())
    assert figure is not None
    with pytest.raises(TypeError, match=r"report must be a fpsim\.torch\.bench report"):
        bench_figure({"steps": []})
    empty = hand_report().to_dict() | {"steps": []}
    with pytest.raises(ValueError, match="no measured training steps"):
        bench_figure(empty)
