"""fpsim bench: `--quick` on the CPU (a smaller plan, one model) gives a well-formed report (JSON schema, figure,
the claims beside the measurements); regions are timed round-robin and synchronise with CUDA on the device's own
stream (fake events record the order); the CUDA memory is the step's own (fake allocator counters); the CPU memory
count is exact on known allocations; spread timings carry no verdict; bad input is one line and exit code 2. No test
asserts on wall-clock time."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import sys

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

torch = pytest.importorskip("torch")

from fpsim.cli import main  # noqa: E402
from fpsim.plots.bench import bench_figure  # noqa: E402

bench_module = importlib.import_module("fpsim.torch.bench")  # fpsim.torch.bench is the function
from fpsim._bench_text import unreliable  # noqa: E402
from fpsim.torch.bench import (  # noqa: E402
    MATMUL_DTYPES,
    POLICIES,
    BenchReport,
    LiveBytes,
    StepRow,
    interleaved_seconds,
    memory_verdict,
    speed_verdict,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


SMALL_PLAN = bench_module._Plan((32, 64), 2**16, warmup=1, repeat=2)
MODEL = "digits-mlp"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `fpsim bench --quick --device cpu --model digits-mlp -o ... --plot ...` for the module, on a smaller plan
    (matmuls of n = 32 and 64, two rounds; steps: one warm-up, two rounds): (exit code, stdout, JSON, png)."""
    folder = tmp_path_factory.mktemp("bench")
    out, png = folder / "bench.json", folder / "bench.png"
    patch = pytest.MonkeyPatch()
    stdout = io.StringIO()
    patch.setattr(sys, "stdout", stdout)
    patch.setitem(bench_module._PLANS, ("cpu", True), SMALL_PLAN)
    patch.setitem(bench_module._STEP_REPEATS, True, (1, 2))
    try:
        code = main(["bench", "--quick", "--device", "cpu", "--model", MODEL, "-o", str(out), "--plot", str(png)])
    finally:
        patch.undo()
    return code, stdout.getvalue(), json.loads(out.read_text()), png


def test_quick_bench_exits_cleanly_and_writes_both_files(quick_run):
    code, stdout, _, png = quick_run
    assert code == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 10_000
    assert "wrote" in stdout and "bench.json" in stdout and "bench.png" in stdout


def test_quick_report_follows_the_schema(quick_run):
    _, _, record, _ = quick_run
    assert record["schema"] == "fpsim.bench/2" and record["quick"] is True
    assert set(record) == {"schema", "fpsim", "quick", "environment", "methods", "matmul", "steps", "claims"}
    env = record["environment"]
    assert env["device"] == "cpu" and env["capability"] is None and env["torch"] == torch.__version__
    assert env["cpus"] >= 1 and env["load_average"] >= 0
    assert set(record["methods"]) == {"timing", "memory", "matmul"}
    assert "TorchDispatchMode" in record["methods"]["memory"] and "perf_counter" in record["methods"]["timing"]
    assert "round-robin: 2 rounds after 1 warm-up" in record["methods"]["timing"]
    for row in record["matmul"]:
        assert set(row) == {"dtype", "n", "seconds", "median_seconds", "tflops", "note"}
        assert row["dtype"] in MATMUL_DTYPES
        if row["n"] is None:  # a dtype this device has no matmul for: said, not measured
            assert row["seconds"] is row["median_seconds"] is row["tflops"] is None
            assert row["note"].startswith("not available on this device")
        else:
            assert 0 < row["seconds"] <= row["median_seconds"]
            assert math.isclose(row["tflops"], 2 * row["n"] ** 3 / row["seconds"] / 1e12)  # at the fastest
    for row in record["steps"]:
        assert set(row) == {"model", "policy", "ran", "seconds", "median_seconds", "peak_bytes", "note"}
        if row["seconds"] is None:
            assert row["median_seconds"] is row["peak_bytes"] is None and row["note"]
        else:
            assert 0 < row["seconds"] <= row["median_seconds"]
            assert isinstance(row["peak_bytes"], int) and row["peak_bytes"] > 0


def test_on_the_cpu_tf32_and_fp8_are_rows_that_say_they_are_not_available(quick_run):
    _, _, record, _ = quick_run
    missing = {row["dtype"]: row["note"] for row in record["matmul"] if row["n"] is None}
    assert set(missing) == {"tf32", "fp8_e4m3"} and "the CPU computes fp32" in missing["tf32"]
    measured = {(row["dtype"], row["n"]) for row in record["matmul"] if row["n"] is not None}
    assert measured == {(dtype, n) for dtype in ("fp32", "fp16", "bf16") for n in SMALL_PLAN.sizes}
    steps = {(row["model"], row["policy"]): row for row in record["steps"]}
    assert set(steps) == {(MODEL, policy) for policy in POLICIES}  # --model chose one
    assert steps[(MODEL, "fp8")]["note"].startswith("not available on this device: no FP8 matrix units")
    assert all(steps[(MODEL, policy)]["seconds"] is not None for policy in ("fp32", "amp", "bf16"))
    assert "on the CPU" in steps[(MODEL, "amp")]["ran"]


def test_the_claims_are_the_measured_ratios_beside_2_to_3x_and_50_percent(quick_run):
    _, stdout, record, _ = quick_run
    steps = {(row["model"], row["policy"]): row for row in record["steps"]}
    claims = record["claims"]
    assert claims["speed"] == "2–3× faster" and claims["memory"] == "50% less memory"
    assert {(row["model"], row["policy"]) for row in claims["steps"]} == {(MODEL, "amp"), (MODEL, "bf16")}
    for row in claims["steps"]:
        fp32, low = steps[(row["model"], "fp32")], steps[(row["model"], row["policy"])]
        assert row["speedup"] == fp32["seconds"] / low["seconds"]  # the fastest repeats
        assert row["memory_ratio"] == low["peak_bytes"] / fp32["peak_bytes"]
        worst = max(fp32, low, key=lambda r: r["median_seconds"] / r["seconds"])  # the wider spread decides
        assert row["reliable"] == (worst["median_seconds"] / worst["seconds"] <= 1.5)
        why = unreliable(worst["seconds"], worst["median_seconds"])
        assert row["speed"] == (speed_verdict(row["speedup"]) if row["reliable"] else why)
        assert row["memory"] == memory_verdict(row["memory_ratio"])
    assert "speed-up (claim: 2–3× faster)" in stdout and "memory saved (claim: 50% less memory)" in stdout
    for row in claims["steps"]:
        line = next(line for line in stdout.splitlines() if line.startswith(f"{row['policy']}: "))
        if row["reliable"]:
            assert ("slower than fp32" in line) == (row["speedup"] < 1)  # said plainly whenever it is so
        else:
            assert "timings unreliable for every model — rerun on an idle machine" in line


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
        StepRow("m", "fp32", "fp32", 0.004, 0.005, 1000),
        StepRow("m", "amp", "amp", 0.002, 0.002, 500),
        StepRow("m", "bf16", "bf16", 0.008, 0.012, 1250),  # median 1.5× the fastest: still judged
        StepRow("m", "fp8", "fp8", None, None, None, "not available"),
    ]
    matmul = [bench_module.MatmulRow("fp32", 64, 1e-3, 1e-3, 2 * 64**3 / 1e-3 / 1e12),
              bench_module.MatmulRow("fp16", 64, 2.5e-4, 3e-4, 2 * 64**3 / 2.5e-4 / 1e12),
              bench_module.MatmulRow("tf32", None, None, None, None, "not available on this device: ...")]  # fmt: skip
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
    assert "unreliable" not in text


def spread_report() -> BenchReport:
    """hand_report with amp's median 3.2× its fastest: amp's ratio is kept but carries no verdict."""
    report = hand_report()
    report.steps[1] = StepRow("m", "amp", "amp", 0.002, 0.0064, 500)
    report.steps.append(StepRow("n", "fp32", "fp32", 0.001, 0.001, 100))
    report.steps.append(StepRow("n", "amp", "amp", 0.0005, 0.0005, 100))
    return report


def test_a_row_whose_timings_spread_is_flagged_instead_of_judged():
    report = spread_report()
    amp_m, bf16_m, amp_n = report.claims()
    message = "unreliable: timings spread 3.2× (median over fastest) — rerun on an idle machine"
    assert (amp_m["speedup"], amp_m["reliable"], amp_m["speed"]) == (2.0, False, message)
    assert bf16_m["reliable"] and amp_n["reliable"] and amp_n["speed"] == "within the claimed 2–3×"
    assert report.summary()[0] == (
        "amp: 2.00× fp32's speed (claim 2–3×): within the claimed 2–3×; memory 50% to 100% of fp32 (claim 50%); "
        "timings unreliable for m"
    )
    stream = io.StringIO()
    from fpsim._terminal import console

    console(stream).print(report.table())
    assert "2.00× unreliable" in stream.getvalue()


def test_without_fp32_there_are_no_ratios_and_the_report_says_so():
    report = hand_report()
    report.steps[:] = [row for row in report.steps if row.policy != "fp32"]
    assert report.claims() == [] and report.summary()[0] == (
        "no ratios: fp32, the baseline of every ratio, was not measured"
    )
    assert [row[4] for row in report._step_table().rows] == ["-", "-"]  # speed-up: "-", not a made-up 1×


@pytest.mark.parametrize(("fastest", "median", "flagged"), [(1.0, 1.0, False), (2.0, 3.0, False), (2.0, 3.02, True),
                                                            (1e-3, 0.2, True)])  # fmt: skip
def test_the_unreliable_rule_is_the_median_over_the_fastest_against_1_5(fastest, median, flagged):
    reason = unreliable(fastest, median)
    assert (reason is not None) == flagged
    if flagged:
        assert f"spread {median / fastest:.1f}×" in reason and reason.endswith("rerun on an idle machine")


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
    """Fake torch.cuda.Event, current_stream and synchronize writing to one log; elapsed times come from a list."""

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

            def record(self, stream=None) -> None:
                recorder.log.append(f"record {self.name} on {stream}")

            def synchronize(self) -> None:
                recorder.log.append(f"wait {self.name}")
                self.done = True

            def elapsed_time(self, end) -> float:
                assert end.done, "elapsed_time read before the end event was waited for"
                recorder.log.append("read")
                return recorder.elapsed_ms.pop(0)

        return Event

    def synchronize(self, device=None) -> None:
        self.log.append(f"sync {device}")

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "Event", self.event_class())
        monkeypatch.setattr(torch.cuda, "synchronize", self.synchronize)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")


def test_timed_regions_on_cuda_sit_between_events_on_the_devices_stream_that_are_waited_for(monkeypatch):
    recorder = Recorder([3.0, 1.0, 2.0])
    recorder.install(monkeypatch)
    device = torch.device("cuda:1")  # not the current device: the events must still go on its stream
    seconds = interleaved_seconds({"a": lambda: recorder.log.append("run")}, device, repeat=3, warmup=2)
    assert seconds == {"a": [0.003, 0.001, 0.002]}
    on = "on stream of cuda:1"
    region = lambda i: [f"record event{i} {on}", "run", f"record event{i + 1} {on}", f"wait event{i + 1}", "read"]  # noqa: E731
    assert recorder.log == ["run", "run", "sync cuda:1", *region(1), *region(3), *region(5)]


def test_regions_are_timed_round_robin_with_their_setting_around_each_run():
    log = []

    @contextlib.contextmanager
    def setting(key):
        log.append(f"enter {key}")
        yield
        log.append(f"leave {key}")

    regions = {key: (lambda key=key: log.append(key)) for key in ("a", "b")}
    seconds = interleaved_seconds(regions, torch.device("cpu"), repeat=2, warmup=1, setting=setting)
    assert list(seconds) == ["a", "b"] and all(len(times) == 2 and min(times) > 0 for times in seconds.values())
    one_round = ["enter a", "a", "leave a", "enter b", "b", "leave b"]
    assert log == one_round * 3  # a warm-up round, then two timed rounds, a and b alternating


def test_the_cpu_path_never_touches_cuda(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA call on the CPU path")

    for name in ("Event", "synchronize", "current_stream", "device"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    calls = []
    interleaved_seconds({"a": lambda: calls.append(1)}, torch.device("cpu"), repeat=3, warmup=1)
    assert len(calls) == 4
    with bench_module._on(torch.device("cpu")):
        pass


def test_a_cuda_device_is_made_current_for_the_measurements():
    context = bench_module._on(torch.device("cuda:1"))  # built without touching the driver
    assert isinstance(context, torch.cuda.device) and context.idx == 1


def test_the_environment_is_read_first_and_every_measurement_runs_on_the_device(monkeypatch):
    log = []

    @contextlib.contextmanager
    def on(device):
        log.append("enter device")
        yield
        log.append("leave device")

    monkeypatch.setattr(bench_module, "environment", lambda device: log.append("environment") or {})
    monkeypatch.setattr(bench_module, "_on", on)
    monkeypatch.setattr(bench_module, "measure_matmuls", lambda *a: log.append("matmuls") or [])
    monkeypatch.setattr(bench_module, "measure_steps", lambda *a: log.append("steps") or [])
    monkeypatch.setitem(bench_module._PLANS, ("cpu", True), SMALL_PLAN)
    bench_module.bench("cpu", quick=True, models=["digits-mlp"])
    assert log == ["environment", "enter device", "matmuls", "matmuls", "steps", "leave device"]


def test_peak_memory_on_cuda_is_the_steps_own_kept_state_plus_what_it_adds(monkeypatch):
    """The absolute peak (here 5 MB) holds workspaces and other steps' tensors (the 3 MB allocated before); the
    step's own peak is its kept state plus max_memory_allocated − memory_allocated before."""
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: log.append("before") or 3_000_000)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: log.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: log.append("read") or 5_000_000)
    step = bench_module._Step("digits-mlp", "fp32", torch.device("cpu"))
    step.device = torch.device("cuda")  # the CUDA branch, run on CPU tensors
    monkeypatch.setattr(step, "forward_backward_update", lambda: log.append("step"))
    model = step.model
    kept = [*model.parameters(), *model.buffers(), step.batch, step.target]  # no momentum before the first step
    expected = sum(t.numel() * t.element_size() for t in kept) + 2_000_000
    assert bench_module.peak_bytes(step) == expected
    assert log == ["sync", "before", "reset", "step", "sync", "read"]


def test_tf32_is_on_only_around_the_tf32_regions_and_ieee_fp32_around_the_steps(monkeypatch):
    log = []

    @contextlib.contextmanager
    def fp32_matmul(tf32: bool = False):
        log.append(f"tf32={tf32}")
        yield

    monkeypatch.setattr(bench_module, "fp32_matmul", fp32_matmul)
    monkeypatch.setattr(bench_module, "_product", lambda dtype, n, device: lambda: log.append(dtype))
    bench_module.measure_matmuls(["fp32", "tf32"], 16, torch.device("cpu"), SMALL_PLAN)
    calls = SMALL_PLAN.flops_per_region // (2 * 16**3)  # products per timed region
    one_round = ["tf32=False", *["fp32"] * calls, "tf32=True", *["tf32"] * calls]
    assert log == one_round * (SMALL_PLAN.warmup + SMALL_PLAN.repeat)
    log.clear()
    monkeypatch.setattr(bench_module, "measure_matmuls", lambda *a: [])
    monkeypatch.setattr(bench_module, "measure_steps", lambda *a: log.append("steps") or [])
    bench_module.bench("cpu", quick=True, models=["digits-mlp"])
    assert log == ["tf32=False", "steps"]


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
    monkeypatch.setitem(bench_module._STEP_REPEATS, True, (1, 2))
    (row,) = bench_module.measure_steps("tiny-transformer", ["fp8"], torch.device("cpu"), quick=True)
    assert 0 < row.seconds <= row.median_seconds and row.peak_bytes > 0 and row.note == "" and "FP8 GEMMs" in row.ran


def test_an_fp8_step_that_torch_refuses_is_a_row_naming_the_error(monkeypatch):
    refusal = "Multiplication of two Float8_e5m2 matrices is not supported"

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{refusal}\nmore detail")

    monkeypatch.setattr(bench_module, "fp8_unavailable", lambda device: None)
    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    monkeypatch.setitem(bench_module._STEP_REPEATS, True, (1, 2))
    fp32, fp8 = bench_module.measure_steps("digits-mlp", ["fp32", "fp8"], torch.device("cpu"), quick=True)
    assert fp8.seconds is None and fp8.note == f"failed with torch {torch.__version__}: RuntimeError: {refusal}"
    assert fp32.seconds > 0  # the other policies are still timed


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
        (
            ["--model", "digits-mlp,mnist"],
            "--model must be one or more of digits-mlp, digits-cnn, tiny-transformer; got 'mnist'",
        ),
        (["--policy", "fp64"], "--policy must be one or more of fp32, amp, bf16, fp8; got 'fp64'"),
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
                                               ({"quick": "yes"}, TypeError), ({"models": ["mnist"]}, ValueError),
                                               ({"models": []}, ValueError),
                                               ({"policies": ("fp16",)}, ValueError)])  # fmt: skip
def test_the_api_refuses_bad_arguments(monkeypatch, kwargs, error):
    monkeypatch.setattr(bench_module, "measure_matmuls", lambda *a: pytest.fail("measured despite bad input"))
    with pytest.raises(error, match=next(iter(kwargs))):
        bench_module.bench(**kwargs)


def test_models_and_policies_choose_the_steps_in_order_without_repeats():
    assert bench_module.selection(None, None) == (tuple(bench_module.bundled.MODELS), tuple(POLICIES))
    assert bench_module.selection("digits-cnn", ["bf16", "fp32", "bf16"]) == (("digits-cnn",), ("bf16", "fp32"))
    with pytest.raises(ValueError, match="policies must be one or more of fp32, amp, bf16, fp8; got 'AMP'"):
        bench_module.selection(None, ["AMP"])


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


def test_each_precision_has_one_colour_in_every_panel():
    _, (time_panel, memory_panel, matmul_panel) = bench_figure(hand_report())
    colours = {}
    for panel in (time_panel, memory_panel, matmul_panel):
        for container in panel.containers:
            colours.setdefault(container.get_label(), set()).add(container[0].get_facecolor()[:3])
    assert colours["fp32"] == {(0.0, 0x72 / 255, 0xB2 / 255)}  # the fp32 policy's blue, in all three panels
    assert len(colours["fp16"] | colours["amp"]) == 1  # amp computes in fp16: one green


def test_labels_and_legends_leave_every_bar_label_inside_its_panel_and_uncovered():
    """A tall bar (133 ms, 33× fp32's) on the log axis: its label ends below the top, and each legend lies
    below its panel."""
    report = hand_report()
    report.steps[2] = StepRow("m", "bf16", "bf16", 0.133, 0.133, 1250)
    figure, panels = bench_figure(report)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # the layout settles on a draw
    renderer = canvas.get_renderer()
    for panel in panels:
        box = panel.get_window_extent(renderer)
        labels = [text for text in panel.texts if text.get_text()]
        assert labels and all(text.get_window_extent(renderer).y1 <= box.y1 for text in labels)
        assert panel.get_legend().get_window_extent(renderer).y1 <= box.y0
    assert "133 ms" in [text.get_text() for text in panels[0].texts]


def test_bars_whose_timings_spread_are_hatched_and_the_legend_says_why():
    _, (time_panel, memory_panel, _) = bench_figure(spread_report())
    hatched = {(c.get_label(), i) for c in time_panel.containers for i, bar in enumerate(c) if bar.get_hatch()}
    assert hatched == {("amp", 0)}  # model m's amp; model n's and every memory bar are plain
    assert not any(bar.get_hatch() for c in memory_panel.containers for bar in c)
    assert "unreliable: median over 1.5× the fastest" in [t.get_text() for t in time_panel.get_legend().get_texts()]
