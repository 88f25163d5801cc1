"""Matrix-unit (Tensor Core) and accumulation-model matmuls on torch tensors, with torch operations on any device.

Invariant: every result equals fpsim.matmul's for the same model bit for bit: a matrix unit's aligned addends are
exact int64 integers (truncation is a right shift of a magnitude), so the only roundings are fpsim.torch.round's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpsim.accumulation import MODELS, AccumulationModel
from fpsim.formats import FP32, Format, get_format
from fpsim.matrix_unit import MATRIX_UNITS, OUTPUTS, MatrixUnit, check_promote_every
from fpsim.torch.codec import _FLOAT64, _floating
from fpsim.torch.codec import round as round_tensor

__all__ = ["matmul"]

_NO_EXPONENT = -(1 << 20)  # a zero's exponent: below every real one, so zeros never set the alignment
_LEAST_SCALE = 2 * _FLOAT64.fmt.emin  # _FLOAT64.scale's least exponent; sums of zeros only are scaled there
_C_FRACTION_BITS = FP32.nmant  # the accumulator input c is an fp32 value (or its accumulator_bits)
_ELEMENTS_PER_STEP = 1 << 24  # int64 elements of one (rows, N, group) tensor: bounds memory on any device


@dataclass(frozen=True)
class _Split:
    """x = ±magnitude · 2^(exponent − fraction_bits), exactly; magnitude an integer, exponent the binade's."""

    magnitude: torch.Tensor  # int64
    exponent: torch.Tensor  # int64; _NO_EXPONENT where x is 0
    negative: torch.Tensor  # bool

    def rows(self, start: int, stop: int) -> _Split:
        return _Split(self.magnitude[start:stop], self.exponent[start:stop], self.negative[start:stop])

    def columns(self, start: int, stop: int) -> _Split:
        return _Split(self.magnitude[:, start:stop], self.exponent[:, start:stop], self.negative[:, start:stop])


def _split(values: torch.Tensor, emin: int, fraction_bits: int) -> _Split:
    """Finite float64 values of a format with least exponent emin (subnormals take emin) and `fraction_bits`."""
    magnitude = values.abs()
    exponent = (torch.frexp(magnitude).exponent.to(torch.int64) - 1).clamp_(min=emin)  # subnormals use emin
    integer = _FLOAT64.scale(magnitude, fraction_bits - exponent).to(torch.int64)  # exact: at most 24 bits
    exponent = torch.where(magnitude == 0, _NO_EXPONENT, exponent)
    return _Split(integer, exponent, torch.signbit(values))


def _aligned(magnitude: torch.Tensor, fraction_bits: int, shift: torch.Tensor, unit_bits: int) -> torch.Tensor:
    """magnitude · 2^(−fraction_bits − shift) truncated toward zero to a multiple of 2^−unit_bits, counted in
    units of 2^−unit_bits. The lift keeps every right shift non-negative and the lifted magnitude below 2^63."""
    lift = max(0, unit_bits - fraction_bits)
    lifted = magnitude << lift if lift else magnitude
    return lifted >> (shift + (fraction_bits + lift - unit_bits)).clamp_(max=63)  # >= 63 drops every bit


def _signed(values: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    return torch.where(negative, -values, values)


def _plus_nan(values: torch.Tensor) -> torch.Tensor:
    """Every NaN becomes +NaN, as fpsim.matmul's results are."""
    return torch.where(torch.isnan(values), values.new_tensor(float("nan")).abs(), values)


@dataclass(frozen=True)
class _UnitPlan:
    """One call's matrix unit with its input format: the three-step rule per group, chained over K."""

    unit: MatrixUnit
    inputs: Format

    def round_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The operand as values of the input format (float64), as fpsim.matrix_unit casts it."""
        if self.unit.input_truncation:  # A100 tf32: the value as fp32 first, then its low bits dropped
            return round_tensor(round_tensor(x.to(torch.float64), FP32), self.inputs, "toward_zero")
        return round_tensor(x.to(torch.float64), self.inputs)

    def split(self, x: torch.Tensor) -> _Split:
        return _split(torch.where(torch.isfinite(x), x, 0.0), self.inputs.emin, self.inputs.nmant)

    def fused(self, a: _Split, b: _Split, c: torch.Tensor) -> torch.Tensor:
        """One group: split inputs a (M, g) and b (g, N), finite float64 c (M, N) → the sum rounded once toward
        zero to the unit's accumulator (fp32, or its accumulator_bits)."""
        f = self.unit.fraction_bits
        product_exponent = a.exponent[:, None, :] + b.exponent.T[None, :, :]  # (M, N, g): the products' binades
        accumulator = _split(c, FP32.emin, _C_FRACTION_BITS)  # c has fp32's exponent range
        top = torch.maximum(product_exponent.amax(dim=-1), accumulator.exponent)  # E, over products and c
        product = a.magnitude[:, None, :] * b.magnitude.T[None, :, :]  # exact: below 2^(2·nmant + 2)
        terms = _aligned(product, 2 * self.inputs.nmant, top[..., None] - product_exponent, f)
        total = _signed(terms, a.negative[:, None, :] ^ b.negative.T[None, :, :]).sum(dim=-1)  # exact in int64
        c_term = _aligned(accumulator.magnitude, _C_FRACTION_BITS, top - accumulator.exponent, f)
        total += _signed(c_term, accumulator.negative)
        exact = _FLOAT64.scale(total.to(torch.float64), top.clamp(min=_LEAST_SCALE + f) - f)  # exact: |total| < 2^53
        return round_tensor(exact, self.unit.accumulator, "toward_zero")  # fp32, or its accumulator_bits

    def chain(self, a: torch.Tensor, b: torch.Tensor, a_split: _Split, b_split: _Split) -> torch.Tensor:
        """The unit over all of a's columns: each group's fp32 output is the next one's c, starting from c = 0."""
        finite_inputs = bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())
        c = a.new_zeros((a.shape[0], b.shape[1]))
        for start in range(0, a.shape[1], self.unit.group):
            stop = start + self.unit.group
            result = self.fused(a_split.columns(start, stop), b_split.rows(start, stop), c)
            if finite_inputs:  # rounding toward zero never overflows: every c stays finite
                c = result
                continue
            # inf or NaN: IEEE's plain sum (inf, or NaN for inf - inf and 0·inf), whatever its order
            special_sum = (a[:, None, start:stop] * b.T[None, :, start:stop]).sum(dim=-1) + c
            special = ~torch.isfinite(special_sum)  # finite products of unit inputs cannot overflow float64
            c = _plus_nan(torch.where(special, special_sum, result))
        return c

    def rows(self, a: torch.Tensor, b: torch.Tensor, a_split: _Split, b_split: _Split, out: Format, promote_every):
        """Rows of a @ b: the unit's fp32 result rounded once to `out` (nearest even for fp16/bf16). With
        promote_every=N the unit restarts from 0 every N terms; its fp32 results are added into an fp32
        accumulator (RNE, the CUDA cores), which `out` then rounds."""
        if promote_every is None:
            return _to_out(self.chain(a, b, a_split, b_split), out)
        total = torch.zeros((a.shape[0], b.shape[1]), dtype=torch.float32, device=a.device)
        for start in range(0, a.shape[1], promote_every):
            stop = start + promote_every
            partial = self.chain(
                a[:, start:stop], b[start:stop], a_split.columns(start, stop), b_split.rows(start, stop)
            )
            total += partial.to(torch.float32)  # exact cast of an fp32 value; torch's float32 add is IEEE RNE
        return _to_out(total.to(torch.float64), out)

    def run(self, a: torch.Tensor, b: torch.Tensor, out: Format, promote_every: int | None) -> torch.Tensor:
        a, b = self.round_inputs(a), self.round_inputs(b)
        a_split, b_split = self.split(a), self.split(b)
        if a.shape[0] == 0:  # no rows: an empty result of the right shape
            return torch.zeros((0, b.shape[1]), dtype=torch.float64, device=a.device)
        rows_per_step = max(1, _ELEMENTS_PER_STEP // max(1, b.shape[1] * self.unit.group))
        return torch.cat(
            [  # rows are independent: chunks of them bound the (rows, N, group) temporaries
                self.rows(a[start:stop], b, a_split.rows(start, stop), b_split, out, promote_every)
                for start, stop in _steps(a.shape[0], rows_per_step)
            ]
        )


def _to_out(result: torch.Tensor, out: Format) -> torch.Tensor:
    """The final fp32 result in `out`: fp32 as it is, fp16/bf16 rounded once to nearest even (cuBLAS's epilogue)."""
    return result if out == FP32 else round_tensor(result, out, "nearest_even")


def _steps(length: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, length)) for start in range(0, length, step)]


# ---- accumulation models (fpsim.accumulation): one correctly rounded fp addition per term --------------------------
def _sum_to_odd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b rounded to odd at 53 bits (TwoSum's exact error as a sticky bit): it then rounds to any format of
    at most 51 bits as the exact sum would (fpsim.arithmetic.sum_to_odd, on tensors)."""
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)  # exact unless the sum overflowed (then total is inf)
    sticky = (error != 0) & torch.isfinite(total) & ((total.view(torch.int64) & 1) == 0)
    toward = torch.where(torch.signbit(error) == torch.signbit(total), 1, -1)  # magnitude one ulp up or down
    return (total.view(torch.int64) + sticky * toward).view(torch.float64)


def _model_matmul(model: AccumulationModel, a: torch.Tensor, b: torch.Tensor, out: Format) -> torch.Tensor:
    """Sequential fused (or rounded-product) accumulation in model.accumulate, term after term, then `out`."""
    if model.order != "sequential":
        raise ValueError(
            f"fpsim.torch.matmul runs accumulation models in order='sequential' only; {model.name!r} has "
            f"order={model.order!r}: use fpsim.matmul"
        )
    a, b = round_tensor(a.to(torch.float64), model.inputs), round_tensor(b.to(torch.float64), model.inputs)

    def term(k: int) -> torch.Tensor:
        product = a[:, k : k + 1] * b[k : k + 1, :]  # exact: inputs of at most 26 bits (check_arithmetic_format)
        return round_tensor(product, model.accumulate) if model.products == "rounded" else product

    total = round_tensor(term(0), model.accumulate)
    for k in range(1, a.shape[1]):
        total = round_tensor(_sum_to_odd(total, term(k)), model.accumulate)
    total = round_tensor(total, out) if out != model.accumulate else total
    return _plus_nan(total)


# ---- public API ----------------------------------------------------------------------------------------------------
def _resolve(model: object) -> MatrixUnit | AccumulationModel:
    if isinstance(model, (MatrixUnit, AccumulationModel)):
        return model
    if isinstance(model, str) and model in MATRIX_UNITS:
        return MATRIX_UNITS[model]
    if isinstance(model, str) and model in MODELS:
        return MODELS[model]
    if isinstance(model, str):
        raise ValueError(
            f"unknown model {model!r}; the matrix units are {', '.join(MATRIX_UNITS)} and the accumulation "
            f"models {', '.join(MODELS)}"
        )
    raise TypeError(f"model must be a preset name, a MatrixUnit or an AccumulationModel, got {type(model).__name__}")


def _operands(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    left, right = _floating(a, "a"), _floating(b, "b")
    if left.device != right.device:
        raise ValueError(f"a is on {left.device} and b on {right.device}: move both to one device")
    if left.ndim not in (1, 2) or right.ndim not in (1, 2):
        raise ValueError(f"a and b must be 1-D or 2-D; got shapes {tuple(left.shape)} and {tuple(right.shape)}")
    left, right = left.reshape(1, -1) if left.ndim == 1 else left, right.reshape(-1, 1) if right.ndim == 1 else right
    if left.shape[1] != right.shape[0]:
        raise ValueError(f"a's last axis ({left.shape[1]}) must match b's first ({right.shape[0]})")
    if left.shape[1] == 0:
        raise ValueError("a and b have K = 0: there is no first term to accumulate")
    return left, right


def _check_promote_every(promote_every: object, spec: MatrixUnit | AccumulationModel) -> None:
    if promote_every is None:
        return
    if not isinstance(spec, MatrixUnit):
        raise ValueError(f"promote_every needs a matrix-unit model ({', '.join(MATRIX_UNITS)}); got {spec.name!r}")
    check_promote_every(promote_every)  # the NumPy model's own check: one rule for both


def _out_format(out: object, spec: MatrixUnit | AccumulationModel) -> Format:
    if isinstance(spec, AccumulationModel):
        return spec.out if out is None else get_format(out)
    fmt = FP32 if out is None else get_format(out)
    if fmt not in OUTPUTS:
        raise ValueError(f"out must be one of {', '.join(f.name for f in OUTPUTS)} on a matrix unit; got {out!r}")
    return fmt


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    model: str | MatrixUnit | AccumulationModel = "h100_fp16",
    *,
    out: str | Format | None = None,
    promote_every: int | None = None,
) -> torch.Tensor:
    """a @ b (1-D or 2-D floating tensors, on their device) as `fpsim.matmul(a, b, model=...)` computes it, bit
    for bit: float64 operands give float64 results, others float32 (every result is an fp32 value or narrower).

    `model`: a matrix unit (a fpsim.matrix_unit.MATRIX_UNITS name such as 'h100_fp8_e4m3', or a MatrixUnit), or
    an accumulation model in order='sequential' (a fpsim.MODELS name such as 'fp32', or an AccumulationModel).
    Operands are rounded to the model's input format first. `out`: the result format (a matrix unit chains in
    fp32, rounding toward zero, and fp16/bf16 round its final fp32 result once to nearest even, as cuBLAS does on
    an H200; an accumulation model's default is its own).
    `promote_every=N` (matrix units only): the unit restarts every N terms, partial results summed in fp32.
    """
    spec = _resolve(model)
    left, right = _operands(a, b)
    out_format = _out_format(out, spec)
    _check_promote_every(promote_every, spec)
    if isinstance(spec, MatrixUnit):
        result = _UnitPlan(spec, get_format(spec.inputs[0])).run(left, right, out_format, promote_every)
    else:
        result = _model_matmul(spec, left.to(torch.float64), right.to(torch.float64), out_format)
    result = result.to(torch.float64 if torch.float64 in (left.dtype, right.dtype) else torch.float32)
    if b.ndim == 1:
        result = result[:, 0]
    return result[0] if a.ndim == 1 else result
