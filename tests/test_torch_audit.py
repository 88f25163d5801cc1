"""fpsim.torch.audit: its counts are the NumPy codec's on the same tensors, its loss scale is the analytic power of
two, GradScaler's steady state is what fpsim's scaler state machine reaches, the first non-finite tensor is named,
bad inputs get one clear error, and the caller's model is left as it was."""

import io
import json
import math
from collections import OrderedDict
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fpsim
from fpsim._decimal import floor_log2
from fpsim.scaling import DynamicLossScaler
from fpsim.torch import audit
from fpsim.torch.audit import DEFAULT_FORMATS

FORMATS = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2")
assert FORMATS == DEFAULT_FORMATS


class Times(torch.nn.Module):
    """x · factor: a module without parameters."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


# ---- the counts are the NumPy codec's ------------------------------------------------------------------------------
def _small_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Linear → ReLU → Linear, with inputs from 1e-7 to 3e4: some values overflow fp16 and fp8, some flush."""
    generator = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 2)
    magnitudes = 10.0 ** torch.empty(8, 4).uniform_(-7, 4.5, generator=generator)
    signs = torch.where(torch.rand(8, 4, generator=generator) < 0.5, -1.0, 1.0)
    return model, magnitudes * signs, torch.randn(8, 3, generator=generator)


def _mse_scaled(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((output - target) ** 2).mean() * 1e-9  # gradients from about 1e-13 up: some flush, some not


def _reference_tensors(model, x, target) -> dict[tuple[str, str], torch.Tensor]:
    """The same fp32 tensors, computed here by hand: (name, kind) -> tensor."""
    first, _, second = model
    h = torch.nn.functional.linear(x, first.weight, first.bias)
    a = torch.relu(h)
    out = torch.nn.functional.linear(a, second.weight, second.bias)
    for t in (h, a, out):
        t.retain_grad()
    loss = _mse_scaled(out, target)
    loss.backward()
    found = {(name, "parameter"): p.detach() for name, p in model.named_parameters()}
    found |= {(name, "gradient"): p.grad for name, p in model.named_parameters()}
    for name, t in (("0", h), ("1", a), ("2", out)):
        found[(name, "activation")], found[(name, "activation gradient")] = t.detach(), t.grad
    found[("loss", "loss")] = loss.detach()
    return found


def _numpy_counts(x: np.ndarray, fmt: str) -> tuple[int, int, int, list[float]]:
    rounded, flags = fpsim.round(x, fmt, flags=True)
    with np.errstate(invalid="ignore"):
        kept = np.isfinite(x) & (x != 0) & np.isfinite(rounded) & (rounded != 0)
    errors = np.abs(rounded[kept] - x[kept]) / np.abs(x[kept])
    stats = [float(np.median(errors)), float(errors.max())] if errors.size else [None, None]
    return flags.overflow, flags.subnormal, flags.flushed_to_zero, stats


def test_counts_equal_fpsim_round_with_flags_on_the_same_tensors():
    model, x, target = _small_model()
    result = audit(model, x, _mse_scaled, target=target)
    reference = _reference_tensors(model, x, target)
    assert {(t.name, t.kind) for t in result.tensors} == set(reference)
    seen = {"overflow": 0, "subnormal": 0, "flushed": 0}
    for t in result.tensors:
        expected = reference[(t.name, t.kind)].numpy().astype(np.float64)
        magnitudes = np.abs(expected[expected != 0])
        assert (t.nonzero_min, t.nonzero_max) == (magnitudes.min(), magnitudes.max())
        for fmt in FORMATS:
            counts = t.formats[fmt]
            overflow, subnormal, flushed, errors = _numpy_counts(expected, fmt)
            assert (counts.total, counts.overflow, counts.subnormal, counts.flushed) == (
                expected.size, overflow, subnormal, flushed), (t.name, t.kind, fmt)  # fmt: skip
            assert [counts.error_median, counts.error_max] == errors, (t.name, t.kind, fmt)
            assert counts.percent("flushed") == 100 * flushed / expected.size
            seen = {name: seen[name] + getattr(counts, name) for name in seen}
    assert all(seen.values()), f"the data must exercise every count: {seen}"


def test_forward_tensors_come_in_execution_order_and_a_shared_output_counts_once():
    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.nn.Tanh())
    result = audit(model, torch.ones(4, 3), lambda out: out.sum())
    forward = [(t.name, t.kind) for t in result.tensors if t.kind in ("parameter", "activation", "loss")]
    assert forward == [("0.0.weight", "parameter"), ("0.0.bias", "parameter"), ("0.0", "activation"),
                       ("1", "activation"), ("loss", "loss")]  # fmt: skip
    assert [t.order for t in result.tensors] == list(range(len(result.tensors)))


def test_a_module_called_twice_is_audited_at_each_call():
    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.linear(self.linear(x))

    names = [t.name for t in audit(Twice(), torch.ones(1, 2), lambda out: out.sum()).tensors if t.kind == "activation"]
    assert names == ["linear", "linear#2"]


# ---- loss scales ---------------------------------------------------------------------------------------------------
def _known_gradients() -> tuple[torch.nn.Module, torch.Tensor]:
    """out = x · w with w = 1 and x = 1/2: under loss = k · out (the test's k) the gradients are dL/dout = k and
    dL/dw = k/2."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    return model, torch.tensor([[0.5]])


# largest gradient k = 3·2^-20; S = the largest power of two with S·3·2^-20 <= max/headroom, by hand:
#   fp16, headroom 2: 65504/2 = 32752 = 10917.3·3, and 2^13 <= 10917.3 < 2^14, so S = 2^13·2^20 = 2^33
#   fp16, headroom 1: 65504 = 21834.7·3: 2^14 <= 21834.7 < 2^15, S = 2^34
#   fp8_e4m3, headroom 2: 448/2 = 224 = 74.7·3: 2^6 <= 74.7 < 2^7, S = 2^26
#   fp8_e5m2, headroom 2: 57344/2 = 28672 = 9557.3·3: 2^13 <= 9557.3 < 2^14, S = 2^33
#   bf16: 2^127 (about 1.7e38) · 3·2^-20 is far below bf16's max/2, and 2^127 is the largest fp32 scale
@pytest.mark.parametrize(
    ("fmt", "headroom", "exponent"),
    [("fp16", 2, 33), ("fp16", 1, 34), ("fp8_e4m3", 2, 26), ("fp8_e5m2", 2, 33), ("bf16", 2, 127), ("fp16", 8, 31),
     ("fp64", 2, 127)],
)  # fmt: skip
def test_recommended_loss_scale_is_the_analytic_power_of_two(fmt, headroom, exponent):
    k = 3 * 2.0**-20
    model, x = _known_gradients()
    scale = audit(model, x, lambda out: out.sum() * k, fmt, headroom=headroom).loss_scales[fmt]
    assert scale.largest == k
    assert scale.recommended == 2.0**exponent
    assert scale.overflow_scaled == 0


@pytest.mark.parametrize(("fmt", "rescued"), [("fp8_e4m3", 2), ("fp16", 0), ("fp8_e5m2", 2)])
def test_rescued_counts_the_gradients_that_flush_only_unscaled(fmt, rescued):
    # k = 3·2^-20 and k/2: below fp8_e4m3's half least subnormal (2^-10) and e5m2's (2^-17): both flush;
    # in fp16 (least subnormal 2^-24) both are subnormal, nothing flushes. Scaled, both are normal numbers.
    k = 3 * 2.0**-20
    model, x = _known_gradients()
    scale = audit(model, x, lambda out: out.sum() * k, fmt).loss_scales[fmt]
    assert (scale.flushed_unscaled, scale.flushed_scaled, scale.rescued, scale.total) == (rescued, 0, rescued, 2)


def _simulate_grad_scaler(fmt: str, largest: float, steps: int) -> tuple[list[float], list[bool]]:
    """fpsim's GradScaler state machine, found_inf whenever scale·largest rounds to inf or NaN in fmt."""
    scaler, scales, skipped, overflows = DynamicLossScaler(), [], [], {}
    for _ in range(steps):
        if scaler.scale not in overflows:
            overflows[scaler.scale] = not math.isfinite(float(fpsim.round(scaler.scale * largest, fmt)))
        found_inf = overflows[scaler.scale]
        scales.append(scaler.scale)
        skipped.append(found_inf)
        scaler.update(found_inf)
    return scales, skipped


@given(st.fractions(min_value=Fraction(1, 2**80), max_value=2**80))
def test_floor_log2_brackets_the_limit(limit):
    k = floor_log2(limit)
    assert Fraction(2) ** k <= limit < Fraction(2) ** (k + 1)


# 65510·2^-20 · 2^20 = 65510 lies between fp16's max 65504 and the overflow threshold 65520: it rounds to max, so
# GradScaler keeps 2^20 although 2^20 · largest > max
@pytest.mark.parametrize(
    ("fmt", "k"), [("fp16", 3 * 2.0**-20), ("fp8_e4m3", 3 * 2.0**-6), ("fp16", 1.0), ("fp16", 65510 * 2.0**-20)]
)
def test_dynamic_steady_state_is_where_the_scaler_state_machine_settles(fmt, k):
    model, x = _known_gradients()
    scale = audit(model, x, lambda out: out.sum() * k, fmt).loss_scales[fmt]
    interval = DynamicLossScaler().growth_interval
    scales, skipped = _simulate_grad_scaler(fmt, k, scale.settle_steps + 3 * (interval + 1))
    assert scales[scale.settle_steps] == scale.dynamic
    assert sum(skipped[: scale.settle_steps]) == scale.settle_skipped
    after = scales[scale.settle_steps :]
    assert set(after) == {scale.dynamic, 2 * scale.dynamic}  # it tries twice the scale, overflows, halves back
    assert sum(skipped[scale.settle_steps :]) == 3


def test_between_max_and_the_overflow_threshold_the_recommendation_and_the_scaler_part():
    k = 65510 * 2.0**-20  # times 2^20: above max 65504, rounds to it (below 65520): GradScaler keeps 2^20
    model, x = _known_gradients()
    scale = audit(model, x, lambda out: out.sum() * k, "fp16", headroom=1).loss_scales["fp16"]
    assert (scale.recommended, scale.dynamic) == (2.0**19, 2.0**20)


def test_a_scale_that_never_overflows_stops_at_fp32s_largest_power_of_two():
    model, x = _known_gradients()
    scale = audit(model, x, lambda out: out.sum() * 2.0**-10, "bf16").loss_scales["bf16"]
    assert (scale.dynamic, scale.settle_steps, scale.settle_skipped) == (2.0**127, (127 - 16) * 2000, 0)
    assert scale.flushed_unscaled == 0


# ---- the first non-finite tensor -----------------------------------------------------------------------------------
def _blows_up() -> torch.nn.Module:
    """1e30 is finite in fp32 (max 3.4e38); the second factor of 1e30 makes the activations inf at 'boom'."""
    return torch.nn.Sequential(OrderedDict([("first", torch.nn.Linear(2, 2)), ("big", Times(1e30)),
                                            ("boom", Times(1e30)), ("last", torch.nn.Linear(2, 1))]))  # fmt: skip


def test_the_layer_where_the_loss_turns_inf_is_the_first_non_finite_tensor():
    result = audit(_blows_up(), torch.ones(3, 2), lambda out: out.sum(), steps=4)
    first = result.first_nonfinite
    assert (first.name, first.kind, first.module, first.step) == ("boom", "activation", "boom", 1)
    assert [t.name for t in result.tensors if t.kind == "activation"][:2] == ["first", "big"]
    assert result.steps == 1  # the run stops after the step that produced it
    assert result.to_dict()["first_nonfinite"]["name"] == "boom"


def test_a_nan_parameter_is_the_first_non_finite_tensor():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    first = audit(model, torch.ones(3, 2), lambda out: out.sum()).first_nonfinite
    assert (first.name, first.kind, first.nonfinite) == ("1.bias", "parameter", 1)


def test_no_non_finite_tensor_gives_none():
    model, x = _known_gradients()
    assert audit(model, x, lambda out: out.sum()).first_nonfinite is None


# ---- bad inputs ----------------------------------------------------------------------------------------------------
def _linear():
    return torch.nn.Linear(4, 2)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: audit(torch.nn.ReLU(), torch.ones(3, 4), lambda o: o.sum()), ValueError, "model has no parameters"),
        (lambda: audit(_linear(), torch.ones(3, 5), lambda o: o.sum()), ValueError,
         r"batch of shape \(3, 5\) does not fit the model: .*3x5 and 4x2"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: o * 2), ValueError,
         r"loss_fn must return a scalar .*shape \(3, 2\)"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: o.sum(), ("fp16", "fp17")), ValueError,
         "formats: unknown format 'fp17'"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: o.sum(), ()), ValueError, "formats must name"),
        (lambda: audit("model", torch.ones(3, 4), lambda o: o.sum()), TypeError, "model must be a torch.nn.Module"),
        (lambda: audit(_linear(), [[1.0] * 4], lambda o: o.sum()), TypeError, "batch must be a torch tensor"),
        (lambda: audit(_linear(), torch.ones(3, 4), "mse"), TypeError, "loss_fn must be callable"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: 1.0), TypeError, "loss_fn must return a scalar tensor"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: o.sum(), steps=0), ValueError, "steps must be"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: o.sum(), headroom=0.5), ValueError, "headroom must"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o, t: (o - t).sum(), target=torch.ones(3, 7)), ValueError,
         r"loss_fn\(output, target\) failed"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: o.sum().detach()), ValueError, "does not depend"),
        (lambda: audit(_linear(), torch.ones(3, 4), lambda o: o.sum(), lr=0.5), ValueError, "lr=0.5 has no effect"),
    ],
)  # fmt: skip
def test_bad_inputs_get_one_clear_line(call, error, message):
    with pytest.raises(error, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


# ---- what the audit leaves and gives -------------------------------------------------------------------------------
def test_the_callers_model_and_flag_blocks_are_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with fpsim.track_flags() as flags:
        result = audit(model, torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), lambda o: o.sum(), steps=2)
    assert result.steps == 2 and {t.step for t in result.tensors} == {1, 2}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BatchNorm statistics
    assert not model.training
    assert flags.total == 0  # the audit's roundings are its own


def test_json_table_and_figure():
    model, x, target = _small_model()
    result = audit(model, x, _mse_scaled, target=target)
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert len(record["tensors"]) == len(result.tensors)
    assert record["loss_scales"]["fp16"]["rescued"] == result.loss_scales["fp16"].rescued
    worst = result.worst("fp16", 3)
    ranks = [t.formats["fp16"].severity() for t in worst]
    assert ranks == sorted(ranks, reverse=True) and len(worst) == 3
    console = fpsim._terminal.console(file=io.StringIO())
    console.print(result.table(rows=3))
    text = console.file.getvalue()
    assert all(f"\n{fmt} (max" in text for fmt in FORMATS) and "First non-finite tensor: none" in text
    _, axes = result.figure()
    scaled = sum(1 for s in result.loss_scales.values() if s.flushed_unscaled)
    assert len(axes) == len(FORMATS) + scaled >= len(FORMATS) + 1  # a scaled panel where something flushes
    titles = [a.get_title(loc="left") for a in axes]
    assert sum("(loss scale)" in t for t in titles) == scaled


def test_a_scale_per_format_for_the_histogram_names_only_drawn_formats():
    from fpsim.plots import gradient_histogram

    with pytest.raises(ValueError, match="scale names fp8_e4m3, which formats lacks"):
        gradient_histogram([1e-6, 2e-3], "fp16", scale={"fp16": 1024.0, "e4m3": 2.0})
    _, axes = gradient_histogram([1e-6, 2e-3], ["fp16", "bf16"], scale={"half": 2.0**20})
    assert [a.get_title(loc="left").split(":")[0] for a in axes] == [
        "fp16, gradients as computed",
        "fp16, gradients × $2^{20}$ (loss scale)",
        "bf16, gradients as computed",
    ]


# ---- what the hooks reach ------------------------------------------------------------------------------------------
class FunctionalHead(torch.nn.Module):
    """A Linear whose weights are applied with functional.linear: its forward hook never fires."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.first(x), self.head.weight, self.head.bias)


def test_a_module_used_functionally_is_named_as_unaudited():
    result = audit(FunctionalHead(), torch.ones(3, 2), lambda o: o.sum())
    assert result.unaudited == ("head",)
    assert "head" not in {t.module for t in result.tensors if t.kind == "activation"}
    assert result.to_dict()["unaudited_modules"] == ["head"]
    console = fpsim._terminal.console(file=io.StringIO())
    console.print(result.table(rows=1))
    assert "head: never called as a module (its weights used functionally): its output is not audited" in (
        console.file.getvalue().replace("\n", " ")
    )


def test_nested_outputs_are_each_audited():
    lstm = torch.nn.LSTM(3, 2, batch_first=True)  # returns (output, (h, c))
    result = audit(lstm, torch.ones(1, 4, 3), lambda o: o[0].sum())
    rows = {t.name: t.shape for t in result.tensors if t.kind == "activation"}
    assert rows == {"(model)[0]": (1, 4, 2), "(model)[1]": (1, 1, 2), "(model)[2]": (1, 1, 2)}


class Cast(torch.nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_a_narrow_float_output_is_measured_as_its_values(dtype):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), Cast(dtype))
    with torch.no_grad():
        model[0].weight.fill_(0.1), model[0].bias.fill_(0.3)  # 0.6: rounds differently in each narrow format
    result = audit(model, torch.ones(4, 3), lambda o: o.float().sum(), "fp16")
    (cast,) = [t for t in result.tensors if t.name == "1" and t.kind == "activation"]
    expected = float(torch.tensor(0.6000000238418579).to(dtype).double())  # fp32's 0.1·3 + 0.3, cast by torch
    assert (cast.nonzero_min, cast.nonzero_max, cast.shape) == (expected, expected, (4, 2))


@pytest.mark.parametrize("failing_kind", ["activation", "gradient"])  # a forward hook, a backward hook
def test_an_error_in_the_audits_own_hooks_is_raised_as_it_is(monkeypatch, failing_kind):
    audit_module = __import__("importlib").import_module("fpsim.torch.audit")
    measure = audit_module._measure

    def failing(x, formats, name, kind, *rest):
        if kind == failing_kind:
            raise RuntimeError("the audit's own bug")
        return measure(x, formats, name, kind, *rest)

    monkeypatch.setattr(audit_module, "_measure", failing)
    with pytest.raises(RuntimeError, match=r"^the audit's own bug$"):  # not "batch ... does not fit the model"
        audit(_linear(), torch.ones(3, 4), lambda o: o.sum())


# ---- loss scales at the edges --------------------------------------------------------------------------------------
def test_fp64_gets_the_largest_fp32_scale():
    model, x = _known_gradients()
    scale = audit(model, x, lambda out: out.sum() * 2.0**-10, ("fp64",)).loss_scales["fp64"]
    # fp64's max / 2^-10 is about 2^1034: GradScaler's fp32 scale stops at 2^127, and nothing overflows there
    assert (scale.recommended, scale.dynamic, scale.settle_steps, scale.settle_skipped) == (
        2.0**127, 2.0**127, (127 - 16) * 2000, 0)  # fmt: skip


@pytest.mark.parametrize(("fmt", "largest", "clip"), [("fp4_e2m1", 2.0**-10, 13), ("fp6_e3m2", 0.75, 6)])
def test_a_saturating_format_never_stops_the_scaler(fmt, largest, clip):
    # fp4_e2m1's max is 6 = 1.5·2^2: 2^12·2^-10 = 4 fits, 2^13·2^-10 = 8 > 6 is clipped to 6 (no inf to see).
    # fp6_e3m2's max is 28: 2^5·0.75 = 24 fits, 2^6·0.75 = 48 is clipped; the text names the first clipping scale.
    model, x = _known_gradients()
    scale = audit(model, x, lambda out: out.sum() * largest, fmt).loss_scales[fmt]
    assert scale.saturates and fpsim.get_format(fmt).overflow == "saturate"
    assert (scale.dynamic, scale.settle_steps, scale.settle_skipped) == (2.0**127, (127 - 16) * 2000, 0)
    scales, skipped = _simulate_grad_scaler(fmt, largest, scale.settle_steps + 1)
    assert scales[-1] == scale.dynamic and not any(skipped)  # fpsim's state machine: never an inf, never a skip
    assert f"from 2^{clip} on the largest gradient is silently clipped to max" in scale.reasoning
    assert fpsim.round(2.0**clip * largest, fmt) == fpsim.get_format(fmt).max < 2.0**clip * largest
    assert fpsim.round(2.0 ** (clip - 1) * largest, fmt) == 2.0 ** (clip - 1) * largest


def _three_gradients() -> tuple[torch.nn.Module, torch.Tensor]:
    """out = w · x with w = 1 and loss = 1000 · out: dL/dout = 1000 and dL/dw = 1000 · x = 1000, 1e-3, 1e-7."""
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    return model, torch.tensor([[1.0, 1e-6, 1e-10]])


def test_a_scale_below_one_rescues_nothing_and_the_overflow_is_named():
    # fp8_e4m3: max 448, least subnormal 2^-9 (flushes below 2^-10 ≈ 9.8e-4). Unscaled: 1000 overflows twice,
    # 1e-3 is subnormal, 1e-7 flushes. Scale 2^-3 (the largest S with 1000·S ≤ 224): 1e-3/8 and 1e-7/8 flush.
    model, x = _three_gradients()
    result = audit(model, x, lambda out: out.sum() * 1000, "fp8_e4m3")
    scale = result.loss_scales["fp8_e4m3"]
    assert scale.recommended == 2.0**-3
    assert (scale.overflow_unscaled, scale.flushed_unscaled, scale.flushed_scaled, scale.overflow_scaled) == (
        2, 1, 2, 0)  # fmt: skip
    assert scale.rescued == 0  # element by element: the 1e-7 flushes both ways, 1e-3 only scaled
    assert result.to_dict()["loss_scales"]["fp8_e4m3"]["overflow_unscaled"] == 2
    console = fpsim._terminal.console(file=io.StringIO())
    console.print(result.table(rows=1))
    text = console.file.getvalue().replace("\n", " ")
    assert "2 gradient elements overflow unscaled: the scale must be below 1" in text and "needs no scale" not in text


def test_lr_with_a_single_step_is_refused():
    with pytest.raises(ValueError, match=r"lr=0.1 has no effect with steps=1"):
        audit(_linear(), torch.ones(3, 4), lambda o: o.sum(), lr=0.1)
    assert audit(_linear(), torch.ones(3, 4), lambda o: o.sum(), steps=2, lr=0.1).steps == 2


# ---- the figure ----------------------------------------------------------------------------------------------------
def test_histogram_titles_never_round_a_nonzero_share_to_zero_and_the_title_fits():
    # 1 of 200000 gradients flushes in fp16 (1e-9 < 2^-25), the others are normal: 0.0005% and 99.9995%; a
    # six-digit count, as the bundled models have, made the one-line title wider than the figure
    values = np.concatenate([[1e-9], np.full(199_999, 0.5)])
    from fpsim.plots import gradient_histogram

    figure, axes = gradient_histogram(values, ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2"), scale={"fp16": 2.0**20})
    title = axes[0].get_title(loc="left")
    assert "flushed <0.1%" in title and "normal >99.9%" in title
    figure.canvas.draw()
    box, frame = figure._suptitle.get_window_extent(), figure.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1, "the suptitle runs past the figure's edges"
