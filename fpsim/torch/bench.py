"""Measured speed and memory of mixed precision on this device: matmul throughput per dtype, and one training step
of each bundled model per policy (fp32, amp, bf16, fp8 where the GPU has it), next to the claims "2–3× faster" and
"50% less memory".

Invariant: every timed region is synchronised with the device (CUDA events on its stream, then waited for); what is
compared is timed round-robin after warm-up, ratios from the fastest repeats, and a spread timing gets no verdict;
torch's global matmul flags are restored after every measurement.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from rich.console import Group, RenderableType
from rich.text import Text
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fpsim import __version__
from fpsim._bench_text import SCHEMA, SPREAD_LIMIT, busy, mebibytes, milliseconds, spread, unreliable
from fpsim._terminal import table
from fpsim.torch import models as bundled
from fpsim.torch._settings import first_line, fp32_matmul
from fpsim.torch.fp8_linear import Fp8Linears
from fpsim.torch.training import resolve_device

__all__ = [
    "CLAIMS", "MATMUL_DTYPES", "POLICIES", "BenchReport", "MatmulRow", "StepRow", "bench", "interleaved_seconds",
    "selection",
]  # fmt: skip

MATMUL_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8_e4m3")
POLICIES = {
    "fp32": "fp32 weights and ops (TF32 off)",
    "amp": "torch.autocast(float16) over fp32 weights, torch.amp.GradScaler",
    "bf16": "torch.autocast(bfloat16) over fp32 weights, no loss scaling",
    "fp8": "nn.Linear/F.linear on FP8 GEMMs (torch._scaled_mm: e4m3 forward, e5m2 gradients, per-tensor amax "
    "scales), the rest under torch.autocast(bfloat16)",
}
CLAIMS = {"speed": "2–3× faster", "memory": "50% less memory"}
_AUTOCAST = {"amp": torch.float16, "bf16": torch.bfloat16, "fp8": torch.bfloat16}
_TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_FP8_CAPABILITY = (8, 9)  # Ada and Hopper: the first GPUs with FP8 Tensor Cores


@dataclass(frozen=True)
class _Plan:
    """Sizes and repeats of one run: quick (seconds on a laptop CPU) or full."""

    sizes: tuple[int, ...]
    flops_per_region: int  # matmuls are repeated inside one timed region until it holds about this much work
    warmup: int
    repeat: int


_PLANS = {
    ("cpu", True): _Plan((128, 256), 2**26, warmup=1, repeat=3),
    ("cpu", False): _Plan((256, 512, 1024), 2**28, warmup=2, repeat=7),
    ("cuda", True): _Plan((1024, 4096), 2**36, warmup=3, repeat=5),
    ("cuda", False): _Plan((1024, 2048, 4096, 8192), 2**38, warmup=5, repeat=15),
}
_STEP_REPEATS = {True: (2, 5), False: (5, 30)}  # (warm-up, timed) training steps, by quick


@dataclass(frozen=True)
class MatmulRow:
    """One n×n by n×n product in one dtype: seconds per product (the fastest repeat, and the median), TFLOP/s
    (2n³ operations over the fastest); or, with n None, a dtype the device has no matmul for and a note saying why."""

    dtype: str
    n: int | None
    seconds: float | None
    median_seconds: float | None
    tflops: float | None
    note: str = ""


@dataclass(frozen=True)
class StepRow:
    """One training step (zero_grad, forward, loss, backward, optimizer step) of a bundled model under a policy:
    seconds (the fastest repeat, and the median), peak bytes, what ran; or a note saying why it was not measured."""

    model: str
    policy: str
    ran: str
    seconds: float | None
    median_seconds: float | None
    peak_bytes: int | None
    note: str = ""


def _doubt(*rows: MatmulRow | StepRow) -> str | None:
    """Why the ratio of these rows' times carries no verdict (the one spread furthest), or None."""
    worst = max(rows, key=lambda row: spread(row.seconds, row.median_seconds))
    return unreliable(worst.seconds, worst.median_seconds)


@dataclass(frozen=True)
class BenchReport:
    """What `bench` measured, the methods it used, and the claims set against the measurements."""

    environment: dict
    methods: dict
    quick: bool
    matmul: list[MatmulRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)

    def claims(self) -> list[dict]:
        """Per model and low-precision policy: speed-up over fp32 (fp32's fastest time / the fastest time) and
        memory ratio (peak / fp32 peak), each with a plain verdict against CLAIMS; where either row's timings
        spread too far, the speed verdict says so instead ("unreliable: ...")."""
        fp32 = {row.model: row for row in self.steps if row.policy == "fp32" and row.seconds is not None}
        rows = []
        for row in self.steps:
            base = fp32.get(row.model)
            if row.policy == "fp32" or row.seconds is None or base is None:
                continue
            speedup, ratio = base.seconds / row.seconds, row.peak_bytes / base.peak_bytes
            doubt = _doubt(base, row)
            rows.append({"model": row.model, "policy": row.policy, "speedup": speedup, "memory_ratio": ratio,
                         "speed": doubt or speed_verdict(speedup), "reliable": doubt is None,
                         "memory": memory_verdict(ratio)})  # fmt: skip
        return rows

    def matmul_speedups(self) -> list[dict]:
        """At the largest size measured: each dtype's TFLOP/s over fp32's, with its verdict or why it has none."""
        measured = [row for row in self.matmul if row.tflops is not None]
        if not measured:
            return []
        n = max(row.n for row in measured)
        at_n = {row.dtype: row for row in measured if row.n == n}
        if "fp32" not in at_n:
            return []
        base = at_n.pop("fp32")
        return [{"dtype": dtype, "n": n, "speedup": row.tflops / base.tflops,
                 "speed": _doubt(base, row) or speed_verdict(row.tflops / base.tflops)}
                for dtype, row in at_n.items()]  # fmt: skip

    def to_dict(self) -> dict:
        """A JSON-ready record (schema SCHEMA); unmeasured values are null with a note."""
        return {
            "schema": SCHEMA,
            "fpsim": __version__,
            "quick": self.quick,
            "environment": self.environment,
            "methods": self.methods,
            "matmul": [asdict(row) for row in self.matmul],
            "steps": [asdict(row) for row in self.steps],
            "claims": {**CLAIMS, "steps": self.claims(), "matmul": self.matmul_speedups()},
        }

    def table(self) -> RenderableType:
        """The report for the terminal: where it ran, matmul throughput, the training steps with their speed-up and
        memory saving next to the claims, what did not run and why, and the methods."""
        env = self.environment
        where = (
            f"{env['name']} ({env['device']}, {env['threads']} threads)" if env["capability"] is None else env["name"]
        )
        quick = ", --quick: small sizes, few repeats" if self.quick else ""
        parts: list[RenderableType] = [Text(f"fpsim bench on {where}, torch {env['torch']}{quick}", style="bold")]
        parts += [Text(line, style="bold") for line in self.warnings()]
        parts += [Text(""), Text("Matmul throughput, n×n by n×n, TFLOP/s (× fp32):"), _matmul_table(self.matmul)]
        parts += [Text(""), Text("One training step, fastest and median, and its peak memory:"), self._step_table()]
        parts += [Text(""), *(Text(line) for line in self.summary())]
        notes = [f"{row.dtype}: {row.note}" for row in self.matmul if row.seconds is None]
        notes += sorted({f"{row.policy}: {row.note}" for row in self.steps if row.seconds is None})
        notes += list(dict.fromkeys(f"{row.policy}: {row.ran}" for row in self.steps if row.seconds is not None))
        if any(row.seconds is not None and _doubt(row) for row in self.matmul):
            notes.append(f"?: its repeats spread over {SPREAD_LIMIT:g}× (median over fastest): unreliable")
        notes += [f"timing: {self.methods['timing']}", f"memory: {self.methods['memory']}"]
        return Group(*parts, Text(""), *(Text(note, style="dim") for note in notes))

    def warnings(self) -> list[str]:
        """A warning when the machine was busy before the run: its CPU times are then unreliable."""
        reason = busy(self.environment)
        return [f"warning: {reason}: these CPU times are unreliable; run again when it is idle"] if reason else []

    def _step_table(self):
        claims = {(row["model"], row["policy"]): row for row in self.claims()}
        cells = []
        for row in self.steps:
            if row.seconds is None:
                continue
            claim = claims.get((row.model, row.policy))
            cells.append([row.model, row.policy, milliseconds(row.seconds), milliseconds(row.median_seconds),
                          _speed_cell(row, claim), mebibytes(row.peak_bytes),
                          _saved(claim["memory_ratio"]) if claim else "-"])  # fmt: skip
        columns = ["model", "policy", "ms", "median", f"speed-up (claim: {CLAIMS['speed']})", "peak MiB",
                   f"memory saved (claim: {CLAIMS['memory']})"]  # fmt: skip
        return table(columns, cells, ["left", "left", "right", "right", "right", "right", "right"])

    def summary(self) -> list[str]:
        """One plain sentence per low-precision policy: its speed-up and memory saving over the models, against
        the claims; models whose timings spread too far are named and left out of the speed verdict."""
        lines, claims = [], self.claims()
        if not claims and any(row.seconds is not None for row in self.steps):
            lines.append("no ratios: fp32, the baseline of every ratio, was not measured")
        for policy in dict.fromkeys(row["policy"] for row in claims):
            rows = [row for row in claims if row["policy"] == policy]
            ratios = [row["memory_ratio"] for row in rows]
            memory = f"memory {_span(ratios, _percent)} of fp32 (claim 50%)"
            doubted = [row["model"] for row in rows if not row["reliable"]]
            speed = [row["speedup"] for row in rows if row["reliable"]]
            if not speed:
                lines.append(f"{policy}: timings unreliable for every model — rerun on an idle machine; {memory}")
                continue
            judged = " timed reliably" if doubted else ""
            verdict = f"slower than fp32 for every model{judged}" if max(speed) < 1 else speed_verdict(min(speed))
            if min(speed) < 1 <= max(speed):
                verdict = f"slower than fp32 for some models{judged}"
            doubt = f"; timings unreliable for {', '.join(doubted)}" if doubted else ""
            lines.append(f"{policy}: {_span(speed, times)} fp32's speed (claim 2–3×): {verdict}; {memory}{doubt}")
        for row in self.matmul_speedups():
            lines.append(
                f"{row['dtype']} matmul at n = {row['n']}: {times(row['speedup'])} fp32's TFLOP/s ({row['speed']})"
            )
        return lines


def _speed_cell(row: StepRow, claim: dict | None) -> str:
    if claim is None:
        return "1×" if row.policy == "fp32" else "-"
    if not claim["reliable"]:
        return f"{times(claim['speedup'])} unreliable"
    return times(claim["speedup"]) + (" slower" if claim["speedup"] < 1 else "")


def _span(values: list[float], show: Callable[[float], str]) -> str:
    low, high = show(min(values)), show(max(values))
    return low if low == high else f"{low} to {high}"


def times(ratio: float) -> str:
    """A ratio as 2.35×, or with two significant digits below 0.1 (0.0049×), so a small one never shows as 0.00×."""
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def _saved(ratio: float) -> str:
    return f"{1 - ratio:.0%}" if ratio <= 1 else f"{ratio - 1:.0%} more"


def _percent(fraction: float) -> str:
    return f"{fraction:.0%}"


def speed_verdict(speedup: float) -> str:
    """A speed-up over fp32 in words, against the claimed 2–3×."""
    if speedup < 1:
        return f"slower than fp32: {times(1 / speedup)} the time"
    if speedup < 2:
        return "faster, short of the claimed 2–3×"
    return "within the claimed 2–3×" if speedup <= 3 else "beyond the claimed 2–3×"


def memory_verdict(ratio: float) -> str:
    """A peak-memory ratio to fp32 in words, against the claimed 50% saving."""
    if ratio > 1:
        return f"{ratio - 1:.0%} more than fp32; the claim is 50% less"
    return f"saves {1 - ratio:.0%}; the claim is 50%"


def _matmul_table(rows: list[MatmulRow]):
    measured = [row for row in rows if row.tflops is not None]
    dtypes = list(dict.fromkeys(row.dtype for row in measured))
    sizes = list(dict.fromkeys(row.n for row in measured))
    found = {(row.dtype, row.n): row for row in measured}
    cells = [[str(n), *(_throughput(found.get((dtype, n)), found.get(("fp32", n))) for dtype in dtypes)]
             for n in sizes]  # fmt: skip
    return table(["n", *dtypes], cells)


def _throughput(row: MatmulRow | None, fp32: MatmulRow | None) -> str:
    if row is None:
        return ""
    text = f"{row.tflops:.4g}" + ("" if fp32 is None or row is fp32 else f" ({times(row.tflops / fp32.tflops)})")
    return text + ("?" if unreliable(row.seconds, row.median_seconds) else "")


# ---- timing ---------------------------------------------------------------------------------------------------
def interleaved_seconds(
    regions: Mapping[str, Callable[[], object]],
    device: torch.device,
    repeat: int,
    warmup: int = 1,
    setting: Callable[[str], contextlib.AbstractContextManager] = lambda key: contextlib.nullcontext(),
) -> dict[str, list[float]]:
    """Seconds of each region in `repeat` rounds, after `warmup` untimed rounds; each round runs every region once
    in turn (round-robin), so a change of load on the machine falls on all of them alike. `setting(key)` is entered
    around each of that region's runs, outside its timed interval. On CUDA each run sits between two events
    recorded on the device's current stream, the end event is waited for before the time is read, and the device
    is synchronised after the warm-up, so queued work never leaks into a timed region; on the CPU, perf_counter."""
    for _ in range(warmup):
        for key, run in regions.items():
            with setting(key):
                run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the warm-up's queued kernels finish outside the timed regions
    seconds: dict[str, list[float]] = {key: [] for key in regions}
    for _ in range(repeat):
        for key, run in regions.items():
            with setting(key):
                seconds[key].append(_seconds(run, device))
    return seconds


def _seconds(run: Callable[[], object], device: torch.device) -> float:
    """One timed call of `run`, synchronised with `device`."""
    if device.type != "cuda":
        began = time.perf_counter()
        run()
        return time.perf_counter() - began
    stream = torch.cuda.current_stream(device)  # `device`'s own stream, not the current device's
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(stream)
    run()
    end.record(stream)
    end.synchronize()  # the host waits until the device has run everything queued in the region
    return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds


def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """`device` as the current CUDA device (its handles, workspaces and default stream); nothing on the CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# ---- matmul throughput ------------------------------------------------------------------------------------------
def unavailable(dtype: str, device: torch.device) -> str | None:
    """Why `dtype` has no matmul of its own on `device`, or None where it has one."""
    if dtype == "tf32":
        if device.type != "cuda":
            return "not available on this device: TF32 is a mode of NVIDIA Tensor Cores; the CPU computes fp32"
        if torch.cuda.get_device_capability(device) < (8, 0):
            return "not available on this device: TF32 needs compute capability 8.0 (Ampere) or newer"
    if dtype == "fp8_e4m3":
        return fp8_unavailable(device)
    return None


def fp8_unavailable(device: torch.device) -> str | None:
    """Why `device` has no FP8 matrix units reachable from torch, or None where it has them."""
    if device.type != "cuda":
        return "not available on this device: no FP8 matrix units (CUDA compute capability 8.9+ has them)"
    if torch.cuda.get_device_capability(device) < _FP8_CAPABILITY or not hasattr(torch, "_scaled_mm"):
        return "not available on this device: FP8 GEMMs need torch._scaled_mm and compute capability 8.9 or newer"
    return None


def _product(dtype: str, n: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """One n×n by n×n product in `dtype` on `device`, operands made once."""
    generator = torch.Generator(device=device).manual_seed(n)
    a, b = (torch.randn(n, n, generator=generator, device=device) for _ in range(2))
    if dtype == "fp8_e4m3":
        one = torch.ones((), device=device)
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()  # b column-major
        return lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    a, b = a.to(_TORCH_DTYPES[dtype]), b.to(_TORCH_DTYPES[dtype])
    return lambda: torch.mm(a, b)


def measure_matmuls(dtypes: Sequence[str], n: int, device: torch.device, plan: _Plan) -> list[MatmulRow]:
    """TFLOP/s of each dtype at size n, the dtypes timed in turn: `calls` products per timed region, so small
    sizes are not launch-bound; TF32 on only around the tf32 regions."""
    flops = 2 * n**3
    calls = max(1, plan.flops_per_region // flops)
    regions = {dtype: _repeated(_product(dtype, n, device), calls) for dtype in dtypes}
    precision = lambda dtype: fp32_matmul(tf32=dtype == "tf32")  # noqa: E731
    measured = interleaved_seconds(regions, device, plan.repeat, plan.warmup, setting=precision)
    rows = []
    for dtype, seconds in measured.items():
        fastest, median = min(seconds) / calls, statistics.median(seconds) / calls
        note = "fp32 inputs on TF32 Tensor Cores" if dtype == "tf32" else ""
        rows.append(MatmulRow(dtype, n, fastest, median, flops / fastest / 1e12, note))
    return rows


def _repeated(run: Callable[[], object], calls: int) -> Callable[[], None]:
    def region() -> None:
        for _ in range(calls):
            run()

    return region


# ---- one training step ----------------------------------------------------------------------------------------
class _Step:
    """A bundled model on `device` with an SGD optimizer: `run()` is one training step under `policy`."""

    def __init__(self, name: str, policy: str, device: torch.device) -> None:
        example = bundled.load(name)
        self.model, self.loss_fn = example.model.to(device), example.loss_fn
        self.batch, self.target = example.batch.to(device), example.target.to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.device, self.dtype = device, _AUTOCAST.get(policy)
        self.scaler = torch.amp.GradScaler(device.type) if policy == "amp" else None
        self.linears = Fp8Linears if policy == "fp8" else contextlib.nullcontext

    def run(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward_update()

    def forward_backward_update(self) -> None:
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with autocast, self.linears():
            loss = self.loss_fn(self.model(self.batch), self.target)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # skips the update when a gradient overflowed
            self.scaler.update()

    def state(self) -> Iterator[torch.Tensor]:
        """Every tensor the step keeps between calls: parameters, buffers, optimizer and scaler state, the batch."""
        yield from self.model.parameters()
        yield from self.model.buffers()
        for values in self.optimizer.state.values():
            yield from (v for v in values.values() if isinstance(v, torch.Tensor))
        if self.scaler is not None:
            yield from (t for t in (self.scaler._scale, self.scaler._growth_tracker) if t is not None)
        yield from (self.batch, self.target)


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storage while active: every storage an operator returns is counted once, until it is
    freed (a weak-reference finalizer); `peak` is the largest total seen. Storages made before are not seen."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata  # the C++ storage's address: a view or an in-place result shares it
        if key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)


def storage_bytes(tensors: Iterator[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once)."""
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def peak_bytes(step: _Step) -> int:
    """Peak memory of one step, gradients freed first: the step's kept state plus the most its own work holds at
    once. On CUDA that is max_memory_allocated during the step minus memory_allocated before it (so cuBLAS
    workspaces made in the warm-up, and other steps' tensors, are left out); on the CPU, the peak of the live
    tensors it creates (LiveBytes)."""
    step.optimizer.zero_grad(set_to_none=True)
    kept = storage_bytes(step.state())
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)
        before = torch.cuda.memory_allocated(step.device)  # kept state, persistent workspaces, other steps' tensors
        torch.cuda.reset_peak_memory_stats(step.device)
        step.forward_backward_update()
        torch.cuda.synchronize(step.device)
        return kept + torch.cuda.max_memory_allocated(step.device) - before
    with LiveBytes() as live:
        step.forward_backward_update()
    return kept + live.peak


def measure_steps(name: str, policies: Sequence[str], device: torch.device, quick: bool) -> list[StepRow]:
    """Fastest and median time and peak memory of one training step of model `name` under each policy, the
    policies timed in turn (round-robin); a policy the device lacks, or an fp8 step torch refuses, is a row with a
    note."""
    rows, steps = {}, {}
    for policy in policies:
        reason = fp8_unavailable(device) if policy == "fp8" else None
        if reason is None:
            step = _Step(name, policy, device)
            reason = _first_run(step, policy)
        if reason is None:
            steps[policy] = step
        else:
            rows[policy] = StepRow(name, policy, POLICIES[policy], None, None, None, reason)
    warmup, repeat = _STEP_REPEATS[quick]
    measured = interleaved_seconds({policy: step.run for policy, step in steps.items()}, device, repeat, warmup - 1)
    for policy, seconds in measured.items():
        rows[policy] = StepRow(name, policy, _ran(policy, device), min(seconds), statistics.median(seconds),
                               peak_bytes(steps[policy]))  # fmt: skip
    return [rows[policy] for policy in policies]


def _first_run(step: _Step, policy: str) -> str | None:
    """Run the step once (the first warm-up): None, or why an fp8 step failed."""
    try:
        step.run()
    except (RuntimeError, TypeError) as err:  # torch._scaled_mm is private: its rules change between releases
        if policy != "fp8":
            raise
        return f"failed with torch {torch.__version__}: {first_line(err)}"
    return None


def _ran(policy: str, device: torch.device) -> str:
    if policy in _AUTOCAST and device.type == "cpu":
        return POLICIES[policy] + " on the CPU"
    return POLICIES[policy]


# ---- the whole bench ------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    """Where the bench runs, read before measuring: device and its name (CPU model, or GPU and compute
    capability), torch and Python versions, torch's threads, the CPU count and the load average."""
    record = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": load_average(),
              "capability": None}  # fmt: skip
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        record |= {"name": torch.cuda.get_device_name(device), "capability": f"{capability[0]}.{capability[1]}",
                   "cuda": torch.version.cuda}  # fmt: skip
    else:
        record["name"] = cpu_name()
    return record


def load_average() -> float | None:
    """The 1-minute load average before measuring (None where the OS has none): above the CPU count, other
    programs compete for the cores and CPU times mean little."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows has no getloadavg
        return None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "CPU"


def methods(device: torch.device, plan: _Plan, quick: bool) -> dict:
    """How the report was measured, in words: timing (rounds, warm-up, which statistic, synchronisation), memory
    (what is counted and how), and the matmul operation count."""
    sync = (
        "CUDA events recorded on the device's stream around each timed region, the end event waited for; device "
        "synchronised after warm-up"
        if device.type == "cuda"
        else "time.perf_counter around each timed region (CPU ops are synchronous)"
    )
    memory = (
        "the step's kept state (parameters, buffers, optimizer and scaler state, batch) plus torch.cuda."
        "max_memory_allocated during the step minus memory_allocated before it (persistent cuBLAS workspaces and "
        "other steps' tensors left out); gradients freed first"
        if device.type == "cuda"
        else "tensor bytes: the step's kept state (parameters, buffers, optimizer and scaler state, batch) plus the "
        "peak of live tensor storage it creates, counted op by op through a TorchDispatchMode (torch's CPU "
        "allocator keeps no peak, and process RSS also holds Python and freed pages); gradients freed first"
    )
    warmup, repeat = _STEP_REPEATS[quick]
    timing = (f"round-robin: {plan.repeat} rounds after {plan.warmup} warm-up (matmuls, dtypes in turn), {repeat} "
              f"after {warmup} (training steps, policies in turn); the fastest repeat gives the ratios (min-of-k: "
              f"load only adds time), the median is shown beside it; a median over {SPREAD_LIMIT:g}× the fastest "
              f"marks the timing unreliable, with no verdict; {sync}")  # fmt: skip
    return {"timing": timing, "memory": memory, "matmul": "2n³ operations per product; fp8 via torch._scaled_mm, "
            "unit scales, bf16 out; TF32 on only for the tf32 rows"}  # fmt: skip


def selection(models: Sequence[str] | None, policies: Sequence[str] | None) -> tuple[tuple[str, ...], ...]:
    """The bundled models and policies to measure: all of each where None, else the names given, checked."""
    return _names(models, tuple(bundled.MODELS), "models"), _names(policies, tuple(POLICIES), "policies")


def _names(chosen: Sequence[str] | None, allowed: tuple[str, ...], argument: str) -> tuple[str, ...]:
    if chosen is None:
        return allowed
    names = (chosen,) if isinstance(chosen, str) else tuple(chosen)
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        got = ", ".join(map(repr, unknown)) if unknown else "none"
        raise ValueError(f"{argument} must be one or more of {', '.join(allowed)}; got {got}")
    return tuple(dict.fromkeys(names))


def bench(
    device: str = "auto",
    quick: bool = False,
    models: Sequence[str] | None = None,
    policies: Sequence[str] | None = None,
) -> BenchReport:
    """Measure matmul throughput per dtype and a training step of each bundled model per policy on `device`
    ("cpu", "cuda", "cuda:N" or "auto"); `quick` uses small sizes and few repeats (seconds on a CPU); `models`
    and `policies` limit the steps to those names (default: all of fpsim.torch.models.MODELS and of POLICIES)."""
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be True or False; got {quick!r}")
    names, chosen = selection(models, policies)
    where = resolve_device(device)
    record = environment(where)  # before measuring: the load average describes the machine the bench met
    plan = _PLANS[(where.type, quick)]
    missing = {dtype: unavailable(dtype, where) for dtype in MATMUL_DTYPES}
    matmul = [MatmulRow(dtype, None, None, None, None, reason) for dtype, reason in missing.items() if reason]
    with _on(where):
        for n in plan.sizes:
            matmul += measure_matmuls([dtype for dtype in MATMUL_DTYPES if not missing[dtype]], n, where, plan)
        with fp32_matmul():
            steps = [row for name in names for row in measure_steps(name, chosen, where, quick)]
    return BenchReport(record, methods(where, plan, quick), quick, matmul, steps)
