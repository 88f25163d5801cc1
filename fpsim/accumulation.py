"""Reductions under an accumulation model: inputs in one format, partial sums in another, in a chosen order.

Invariant: each partial sum is one correctly rounded addition in the accumulate format (the terms entering it
exact, or rounded first when the model rounds products); the result is rounded once more, to the out format.
Where a numpy dtype's own addition is that rounding (fp32, fp16, bf16 in nearest_even), sequential and Kahan
sums run in the dtype, bit for bit the general loop's result; a NaN result is always the canonical +NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from fpsim._inputs import restore_scalar
from fpsim.arithmetic import check_arithmetic_format, operands, sum_to_odd
from fpsim.flags import Flags, report, tracking
from fpsim.formats import BF16, FP16, FP32, TF32, Format, get_format
from fpsim.matrix_unit import MATRIX_UNITS, MatrixUnit, unit_matmul
from fpsim.rounding import Rounding

ORDERS = {
    "sequential": "one running sum, term after term (a CPU loop; cuBLAS within one thread)",
    "pairwise": "a balanced binary tree of sums (numpy's strategy, in its pure form)",
    "blocked": "sequential within blocks of `block` terms, then over the block sums (GPU split-K)",
    "kahan": "compensated summation: a second accumulator carries each addition's rounding error",
}
PRODUCT_POLICIES = {
    "exact": "each product enters the accumulator exactly (fused multiply-add, Tensor Cores)",
    "rounded": "each product is rounded to the accumulate format before it is added",
}


@dataclass(frozen=True)
class AccumulationModel:
    """How a reduction runs: the formats of inputs, partial sums and result; products; order; block size."""

    name: str
    inputs: Format
    accumulate: Format
    out: Format
    products: str = "exact"
    order: str = "sequential"
    block: int = 32
    description: str = ""

    def __post_init__(self) -> None:
        check_arithmetic_format(self.inputs)  # products of two inputs must be exact in float64
        check_arithmetic_format(self.accumulate)
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}; got {self.order!r}")
        if self.products not in PRODUCT_POLICIES:
            raise ValueError(f"products must be one of {', '.join(map(repr, PRODUCT_POLICIES))}; got {self.products!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"block must be a positive int, got {self.block!r}")


MODELS: dict[str, AccumulationModel] = {
    model.name: model
    for model in (
        AccumulationModel(
            "fp16_fp32acc",
            FP16,
            FP32,
            FP16,
            description="fp16 inputs, fp32 partial sums, fp16 result: Tensor Cores, autocast",
        ),
        AccumulationModel(
            "fp16_acc", FP16, FP16, FP16, description="fp16 inputs and partial sums: reduced-precision reductions"
        ),
        AccumulationModel(
            "bf16_fp32acc", BF16, FP32, BF16, description="bf16 inputs, fp32 partial sums, bf16 result: Tensor Cores"
        ),
        AccumulationModel(
            "tf32", TF32, FP32, FP32, description="fp32 inputs rounded to tf32, fp32 partial sums: TF32 Tensor Cores"
        ),
        AccumulationModel("fp32", FP32, FP32, FP32, description="fp32 inputs and partial sums, fused multiply-add"),
    )
}


def resolve_model(
    fmt: object = None,
    accumulate: object = None,
    *,
    out: object = None,
    products: str | None = None,
    order: str | None = None,
    block: int | None = None,
    model: str | AccumulationModel | None = None,
) -> AccumulationModel:
    """A model from a preset name (or model) with any field overridden; plain formats alone work too."""
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(
                f"unknown accumulation model {model!r}; the presets are {', '.join(MODELS)}; "
                f"the matrix units (matmul and dot only) are {', '.join(MATRIX_UNITS)}"
            )
        model = MODELS[model]
    if model is not None and not isinstance(model, AccumulationModel):
        raise TypeError(f"model must be a preset name or an AccumulationModel, got {type(model).__name__}")
    if model is None and fmt is None:
        raise ValueError("give the input format (fmt) or an accumulation model (model=)")
    overridden = any(v is not None for v in (fmt, accumulate, out, products, order, block))
    inputs = get_format(fmt) if fmt is not None else model.inputs
    accumulate = get_format(accumulate) if accumulate is not None else (model.accumulate if model else inputs)
    base = model or AccumulationModel("custom", inputs, accumulate, accumulate)
    return replace(
        base,
        name="custom" if overridden else base.name,
        inputs=inputs,
        accumulate=accumulate,
        out=get_format(out) if out is not None else (base.out if model else accumulate),
        products=base.products if products is None else products,
        order=base.order if order is None else order,
        block=base.block if block is None else block,
    )


_NATIVE_BLOCK = 1 << 16  # terms (times the batch) fetched per step of a fast path: bounded memory for matmul
_GENERAL_ONLY: ContextVar[bool] = ContextVar("fpsim_general_loop", default=False)


@contextmanager
def general_loop() -> Iterator[None]:
    """Reductions inside the block skip the native fast paths: for tests and benchmarks that compare the two."""
    token = _GENERAL_ONLY.set(True)
    try:
        yield
    finally:
        _GENERAL_ONLY.reset(token)


@lru_cache(maxsize=1)
def _native_dtypes() -> dict[Format, np.dtype]:
    """Formats whose numpy dtype adds exactly as fpsim.add does in nearest_even with overflow to inf.

    float32 adds in IEEE hardware. numpy's float16 and ml_dtypes' bfloat16 add in float32 and round the sum
    once more, to nearest even: the double rounding is innocuous since float32's 24 bits are at least 2p + 2
    (p = 11 and 8; Figueroa). The exponent range adds no hazard: a sum of two fp16 values lies within float32's
    normal range; one of two bf16 values below 2^-126 is a multiple of 2^-133, exact in float32; and float32
    overflows only past its own max, beyond bf16's overflow threshold (2 - 2^-8)·2^127, where bf16 is inf too.
    """
    dtypes = {FP32: np.dtype(np.float32), FP16: np.dtype(np.float16)}
    try:  # bfloat16 is ml_dtypes' (a test dependency); without it, bf16 sums take the general loop
        import ml_dtypes
    except ImportError:
        return dtypes
    return {**dtypes, BF16: np.dtype(ml_dtypes.bfloat16)}


class _Reduction:
    """Runs one model over terms laid out along the last axis, counting flags across every rounding.

    Sequential and Kahan sums in fp32, fp16 or bf16, in nearest_even with overflow to inf and no flags to
    count, run in that numpy dtype (its additions are this model's, term for term), while each term is a
    value of the dtype; any other case, or the first term that is not, continues in the general loop.
    """

    def __init__(
        self, model: AccumulationModel, rounding: str, rng: object, want_flags: bool, overflow: str | None = None
    ) -> None:
        self.model = model
        self.accumulate = Rounding.resolve(model.accumulate, rounding, overflow, rng=rng)
        self.out = Rounding.resolve(model.out, rounding, overflow, rng=self.accumulate.rng)
        self.want_flags = want_flags
        self.counting = want_flags or tracking()
        self.flags = Flags()
        self.native = self._native_dtype()

    def _native_dtype(self) -> np.dtype | None:
        plan = self.accumulate
        fast = plan.mode == "nearest_even" and plan.overflow == "inf" and self.model.order in ("sequential", "kahan")
        return _native_dtypes().get(plan.fmt) if fast and not self.counting and not _GENERAL_ONLY.get() else None

    def count(self, raised: Flags) -> None:
        """Add flags raised outside a rounding (input casts, invalid products) to the call's and tracked flags."""
        if self.counting:
            self.flags += raised
            report(raised)

    def _invalid(self, result: np.ndarray, *operands: np.ndarray) -> Flags | None:
        """inf - inf and 0·inf: NaN made from operands that are not NaN (counted only when flags are)."""
        if not self.counting:
            return None
        made = np.isnan(result)
        for operand in operands:
            made &= ~np.isnan(operand)
        return Flags(invalid=int(np.count_nonzero(made)))

    def _round(self, plan: Rounding, exact: np.ndarray, raised: Flags | None = None) -> np.ndarray:
        rounded, flags = plan(exact, count_flags=self.want_flags, raised=raised)
        if flags is not None:
            self.flags += flags
        return rounded

    def add(self, total: np.ndarray, term: np.ndarray) -> np.ndarray:
        """One rounding of total + term (both exact float64 values) to the accumulate format."""
        exact = sum_to_odd(total, term, self.accumulate.mode)
        return self._round(self.accumulate, exact, self._invalid(exact, total, term))

    def product(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x·y, exact in float64 for inputs of at most 25 bits; 0·inf is counted as invalid."""
        product = x * y
        if self.counting:
            self.count(self._invalid(product, x, y))
        return product

    def term(self, product: np.ndarray) -> np.ndarray:
        return self._round(self.accumulate, product) if self.model.products == "rounded" else product

    def run(self, terms: Callable[[int, int], np.ndarray], length: int) -> np.ndarray:
        """Reduce the terms terms(start, stop) returns, shaped (..., stop - start), for 0 <= start < stop <= length."""
        if length == 0:
            raise ValueError("cannot reduce an empty axis: there is no first term")
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, as IEEE says: counted, not warned
            total = getattr(self, f"_{self.model.order}")(terms, length)
            total = self._round(self.out, total) if self.model.out != self.model.accumulate else total
        total[np.isnan(total)] = np.nan  # one NaN, +0x7ff8…: IEEE 754 leaves a NaN result's sign and payload open
        return total[..., 0]

    def _first(self, terms: Callable[[int, int], np.ndarray]) -> np.ndarray:
        return self._round(self.accumulate, self.term(terms(0, 1)))

    def _sequential(self, terms, length) -> np.ndarray:
        total, start = self._first(terms), 1
        if self.native is not None:
            total, start = self._native_sequential(total, start, terms, length)
        for k in range(start, length):
            total = self.add(total, self.term(terms(k, k + 1)))
        return total

    def _native_sequential(self, total, start, terms, length) -> tuple[np.ndarray, int]:
        running = total.astype(self.native)
        for stop, block in self._native_blocks(terms, start, length, total.size):
            # np.add.accumulate adds strictly in order, each partial sum rounded (np.add.reduce is pairwise)
            running = np.add.accumulate(np.concatenate([running, block], axis=-1), axis=-1)[..., -1:]
            start = stop
        return running.astype(np.float64), start

    def _kahan(self, terms, length) -> np.ndarray:
        total, start = self._first(terms), 1
        compensation = np.zeros_like(total)
        if self.native is not None:
            total, compensation, start = self._native_kahan(total, compensation, start, terms, length)
        for k in range(start, length):
            corrected = self.add(self.term(terms(k, k + 1)), -compensation)  # y = t - c
            new_total = self.add(total, corrected)  # t' = s + y
            compensation = self.add(self.add(new_total, -total), -corrected)  # c = (t' - s) - y
            total = new_total
        return total

    def _native_kahan(self, total, compensation, start, terms, length) -> tuple[np.ndarray, np.ndarray, int]:
        shape = total.shape
        total, compensation = self._native_state(total), self._native_state(compensation)
        for stop, block in self._native_blocks(terms, start, length, np.size(total)):
            for term in block.reshape(-1) if np.ndim(total) == 0 else np.moveaxis(block[..., None], -2, 0):
                corrected = term - compensation  # the recurrence of _kahan, each operation rounded by the dtype
                new_total = total + corrected
                compensation = (new_total - total) - corrected
                total = new_total
            start = stop
        return np.reshape(np.float64(total), shape), np.reshape(np.float64(compensation), shape), start

    def _native_state(self, values: np.ndarray) -> np.ndarray | np.generic:
        """A running value in the native dtype: a numpy scalar for a single sum (5x cheaper than a 1-element
        array, and rounded alike), else an array."""
        native = values.astype(self.native)
        return native.reshape(-1)[0] if native.size == 1 else native

    def _native_blocks(self, terms, start, length, batch) -> Iterator[tuple[int, np.ndarray]]:
        """(stop, terms[start:stop] in the native dtype) block by block, until a block holds a term it cannot."""
        step = max(1, _NATIVE_BLOCK // max(batch, 1))
        for first in range(start, length, step):
            stop = min(first + step, length)
            block = self.term(terms(first, stop))
            native = block.astype(self.native)  # bfloat16 rounds float64 via float32: checked below, not trusted
            if not np.array_equal(native.astype(np.float64), block, equal_nan=True):
                return
            yield stop, native

    def _pairwise(self, terms, length) -> np.ndarray:
        level = self.term(terms(0, length))
        if length == 1:
            return self._round(self.accumulate, level)
        while level.shape[-1] > 1:
            pairs = level.shape[-1] // 2
            summed = self.add(level[..., 0 : 2 * pairs : 2], level[..., 1 : 2 * pairs : 2])
            level = np.concatenate([summed, level[..., 2 * pairs :]], axis=-1)  # an odd term waits a level
        return level

    def _blocked(self, terms, length) -> np.ndarray:
        values = self.term(terms(0, length))
        block = self.model.block
        starts = np.arange(0, length, block)
        partial = self._round(self.accumulate, values[..., starts])  # every block at once
        for offset in range(1, block):
            active = starts + offset < length  # the last block may be short
            if not active.any():
                break
            partial[..., active] = self.add(partial[..., active], values[..., starts[active] + offset])
        total = partial[..., :1]
        for b in range(1, len(starts)):
            total = self.add(total, partial[..., b : b + 1])
        return total


def _finish(reduction: _Reduction, result: np.ndarray, scalar: bool):
    value = restore_scalar(result, scalar)
    return (value, reduction.flags) if reduction.want_flags else value


def sum(  # shadows the builtin on purpose: fpsim.sum mirrors numpy
    x: object,
    fmt: Format | str | None = None,
    accumulate: Format | str | None = None,
    *,
    axis: int | None = None,
    order: str | None = None,
    block: int | None = None,
    out: Format | str | None = None,
    model: str | AccumulationModel | None = None,
    rounding: str = "nearest_even",
    inputs: str = "round",
    rng: object = None,
    overflow: str | None = None,
    flags: bool = False,
):
    """Sum x (cast to fmt) with partial sums in `accumulate`, in `order`, the result rounded to `out`.

    axis=None sums everything. `model` names a preset (see MODELS) whose fields the other arguments override;
    `overflow` sets the policy of every rounding (the input cast, partial sums and result).
    """
    spec = resolve_model(fmt, accumulate, out=out, order=order, block=block, model=model)
    reduction = _Reduction(spec, rounding, rng, flags, overflow)
    cast = Rounding.resolve(spec.inputs, "nearest_even", overflow)
    (values,), shape, _, raised = operands((x,), cast, inputs, names="x", count_flags=reduction.counting)
    reduction.count(raised)
    values = values if axis is None else np.moveaxis(values.reshape(shape), _axis(axis, len(shape)), -1)
    result = reduction.run(lambda start, stop: values[..., start:stop], values.shape[-1])
    return _finish(reduction, result, result.ndim == 0)


def dot(a: object, b: object, fmt: Format | str | None = None, accumulate: Format | str | None = None, **options):
    """Σ a_k·b_k over the last axis (1-D vectors, or stacks that broadcast), under an accumulation model.

    Options as for `matmul`: out, products ('exact' fused or 'rounded'), order, block, model, rounding, flags;
    a matrix-unit model (1-D vectors) takes out, promote_every and inputs.
    """
    if _on_matrix_unit(options):
        return _unit_product(a, b, fmt, accumulate, options, vectors=True)
    reduction, (x, y) = _prepare(fmt, accumulate, (a, b), options)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("dot needs vectors (or stacks of them); use mul for scalars")
    if x.shape[-1:] != y.shape[-1:]:
        raise ValueError(f"a and b must have the same length along the last axis; got {x.shape} and {y.shape}")
    x, y = np.broadcast_arrays(x, y)
    result = reduction.run(lambda start, stop: reduction.product(x[..., start:stop], y[..., start:stop]), x.shape[-1])
    return _finish(reduction, result, result.ndim == 0)


def matmul(a: object, b: object, fmt: Format | str | None = None, accumulate: Format | str | None = None, **options):
    """a @ b under an accumulation model; 1-D and stacked operands follow numpy.matmul's rules.

    Options: out (result format), products ('exact' fused or 'rounded'), order, block, model (a preset
    such as 'fp16_fp32acc'), rounding, inputs ('round' or 'exact'), rng, flags. Orders other than
    'sequential' materialise all M·N·K products at once. A matrix-unit model (a MATRIX_UNITS name such as
    'h100_fp16', or a MatrixUnit) runs fpsim.matrix_unit.unit_matmul on 1-D or 2-D operands and takes out
    ('fp32', 'fp16', 'bf16'), promote_every and inputs; fmt picks one of the unit's input formats.
    """
    if _on_matrix_unit(options):
        return _unit_product(a, b, fmt, accumulate, options, vectors=False)
    reduction, (x, y) = _prepare(fmt, accumulate, (a, b), options)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("matmul needs arrays of at least one dimension; use mul for scalars")
    left, right = (x[None, :] if x.ndim == 1 else x), (y[:, None] if y.ndim == 1 else y)
    if left.shape[-1] != right.shape[-2]:
        raise ValueError(f"a's last axis ({left.shape[-1]}) must match b's second-to-last ({right.shape[-2]})")
    rows, columns = left[..., :, None, :], np.swapaxes(right, -1, -2)[..., None, :, :]  # (..., M, 1, K), (..., 1, N, K)
    result = reduction.run(
        lambda start, stop: reduction.product(rows[..., start:stop], columns[..., start:stop]), left.shape[-1]
    )
    if y.ndim == 1:
        result = result[..., 0]
    if x.ndim == 1:
        result = result[..., 0, :] if y.ndim > 1 else result[..., 0]
    return _finish(reduction, result, result.ndim == 0)


_UNIT_OPTIONS = {"model", "out", "promote_every", "inputs"}


def _on_matrix_unit(options: dict) -> bool:
    """Whether `model` names a matrix unit; promote_every is refused on any other model."""
    model = options.get("model")
    on_unit = isinstance(model, MatrixUnit) or (isinstance(model, str) and model in MATRIX_UNITS)
    if not on_unit and options.get("promote_every") is not None:
        raise ValueError(f"promote_every needs a matrix-unit model ({', '.join(MATRIX_UNITS)}); got model={model!r}")
    if not on_unit:
        options.pop("promote_every", None)  # None: the default, nothing to do
    return on_unit


def _unit_product(a, b, fmt, accumulate, options, vectors: bool):
    refused = sorted(set(options) - _UNIT_OPTIONS) + (["accumulate"] if accumulate is not None else [])
    if refused:
        raise TypeError(
            f"a matrix-unit model takes out, promote_every and inputs only; got {', '.join(refused)} "
            "(its accumulation and rounding are the unit's own)"
        )
    model, out = options.pop("model"), options.pop("out", None)
    out = "fp32" if out is None else out
    if vectors and (np.ndim(a) != 1 or np.ndim(b) != 1):
        raise ValueError(f"dot on a matrix unit takes 1-D vectors; got shapes {np.shape(a)} and {np.shape(b)}")
    if vectors and np.shape(a) != np.shape(b):
        raise ValueError(f"a and b must have the same length; got {np.shape(a)} and {np.shape(b)}")
    result = unit_matmul(a, b, model, out=out, fmt=fmt, **options)
    return restore_scalar(result, np.ndim(result) == 0)


def _prepare(fmt, accumulate, values, options) -> tuple[_Reduction, list[np.ndarray]]:
    keys = {"out", "products", "order", "block", "model"}
    unknown = set(options) - keys - {"rounding", "inputs", "rng", "flags", "overflow"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    spec = resolve_model(fmt, accumulate, **{k: v for k, v in options.items() if k in keys})
    overflow = options.get("overflow")
    reduction = _Reduction(
        spec, options.get("rounding", "nearest_even"), options.get("rng"), options.get("flags", False), overflow
    )
    cast = Rounding.resolve(spec.inputs, "nearest_even", overflow)
    arrays = []
    for name, value in zip("ab", values):
        (flat,), shape, _, raised = operands(
            (value,), cast, options.get("inputs", "round"), names=name, count_flags=reduction.counting
        )
        reduction.count(raised)
        arrays.append(flat.reshape(shape))
    return reduction, arrays


def _axis(axis: object, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an int in [{-ndim}, {ndim}), got {axis!r}")
    return int(axis)
