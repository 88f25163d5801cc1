"""FPArray: a NumPy-compatible array whose elements are values of one format, every result rounded back to it.

Invariant: `values` only ever holds values of `format`; each operation is one of fpsim's correctly rounded ones.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from fpsim import accumulation, arithmetic
from fpsim.codec import encode
from fpsim.codec import round as round_to
from fpsim.explanation import Explanation, explain
from fpsim.formats import BF16, FP16, FP32, Format, get_format
from fpsim.rounding import check_rounding

_ELEMENTWISE = {
    np.add: arithmetic.add,
    np.subtract: arithmetic.sub,
    np.multiply: arithmetic.mul,
    np.divide: arithmetic.div,
    np.sqrt: arithmetic.sqrt,
}
_EXACT = {np.negative: np.negative, np.absolute: np.absolute, np.positive: np.positive}
_FLOAT64_THEN_ROUNDED = {np.exp, np.log, np.exp2, np.log2, np.log10, np.tanh}  # not correctly rounded: see `array`
_COMPARISONS = {np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal, np.isnan, np.isinf,
                np.isfinite, np.signbit}  # fmt: skip
_PROMOTION_CANDIDATES = (FP16, BF16, FP32)


def contains(big: Format, small: Format) -> bool:
    """Whether every finite value of `small` is a value of `big`."""
    smallest = small.emin - small.nmant if small.subnormals else small.emin  # exponent of small's least quantum
    least_big = big.emin - big.nmant if big.subnormals else big.emin
    return big.nmant >= small.nmant and least_big <= smallest and big.max >= small.max


def promote(first: Format, second: Format) -> Format:
    """The format of a result with operands in two formats: the one that holds the other, else the narrowest
    of fp16, bf16 and fp32 that holds both (fp16 with bf16 gives fp32, as in torch)."""
    if contains(first, second):
        return first
    if contains(second, first):
        return second
    for candidate in _PROMOTION_CANDIDATES:
        if contains(candidate, first) and contains(candidate, second):
            return candidate
    raise ValueError(f"no format holds both {first.name} and {second.name}; convert one with .to(fmt) first")


class FPArray(np.lib.mixins.NDArrayOperatorsMixin):
    """Values of one format; arithmetic, ufuncs and reductions on it round every result to the format.

    Create with `fpsim.array`. Plain numbers and arrays that meet an FPArray are rounded to its format first.
    """

    __array_priority__ = 20

    def __init__(self, values: np.ndarray, fmt: Format, rounding: str, model: object = None) -> None:
        self._values = np.asarray(values, dtype=np.float64)
        self._values.flags.writeable = False
        self.format = fmt
        self.rounding = rounding
        self.model = model

    # ---- numpy protocol ---------------------------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.array(self._values, dtype=dtype)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if kwargs or method not in ("__call__", "reduce"):
            return NotImplemented  # out=, where=, accumulate, outer: numpy then raises TypeError
        if method == "reduce":
            return self.sum() if ufunc is np.add and len(inputs) == 1 else NotImplemented
        fmt = self._common_format(inputs)
        values = [x._values if isinstance(x, FPArray) else x for x in inputs]
        if ufunc in _COMPARISONS:  # plain operands are cast first, as numpy's float16 and torch's fp16 do
            cast = [v if isinstance(x, FPArray) else round_to(v, fmt) for x, v in zip(inputs, values)]
            return ufunc(*[np.asarray(v, dtype=np.float64) for v in cast])
        if ufunc in _ELEMENTWISE:
            return self._wrap(_ELEMENTWISE[ufunc](*values, fmt, self.rounding), fmt)
        if ufunc is np.square:
            return self._wrap(arithmetic.mul(values[0], values[0], fmt, self.rounding), fmt)
        if ufunc in _EXACT:
            return self._wrap(ufunc(np.asarray(values[0], dtype=np.float64)), fmt)
        if ufunc in _FLOAT64_THEN_ROUNDED:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # log(0) = -inf, exp(1e3) = inf
                return self._wrap(round_to(ufunc(np.asarray(values[0], dtype=np.float64)), fmt, self.rounding), fmt)
        if ufunc is np.matmul:
            return self._wrap(accumulation.matmul(*values, **self._model_options(fmt)), self._out_format(fmt))
        return NotImplemented

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        handlers = {np.sum: FPArray.sum, np.mean: FPArray.mean, np.dot: FPArray.dot, np.shape: lambda a: a.shape}
        if func not in handlers:
            return NotImplemented
        first = (
            args[0] if isinstance(args[0], FPArray) else array(args[0], self.format, self.rounding, model=self.model)
        )
        return handlers[func](first, *args[1:], **kwargs)

    # ---- reductions through accumulation models ------------------------------------------------
    def sum(self, axis: int | None = None) -> FPArray:
        total = accumulation.sum(self._values, axis=axis, **self._model_options(self.format))
        return self._wrap(total, self._out_format(self.format))

    def mean(self, axis: int | None = None) -> FPArray:
        """The sum divided exactly by the count, rounded once to the array's format."""
        total = self.sum(axis)
        count = self.size if axis is None else self.shape[axis]  # sum() has checked the axis
        quotients = [arithmetic.fraction_to_odd(Fraction(float(s)) / count) if np.isfinite(s) else s / count
                     for s in total._values.reshape(-1)]  # fmt: skip
        return self._wrap(round_to(np.reshape(quotients, total.shape), self.format, self.rounding), self.format)

    def dot(self, other: Any) -> FPArray:
        fmt = self._common_format((self, other))
        other_values = other._values if isinstance(other, FPArray) else other
        if self.ndim <= 1 and np.ndim(other_values) <= 1:
            result = accumulation.dot(self._values, other_values, **self._model_options(fmt))
        else:
            result = accumulation.matmul(self._values, other_values, **self._model_options(fmt))
        return self._wrap(result, self._out_format(fmt))

    # ---- element access --------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> FPArray:
        return self._wrap(self._values[index], self.format)

    def __setitem__(self, index: Any, value: Any) -> None:
        values = self._values.copy()
        values[index] = round_to(value._values if isinstance(value, FPArray) else value, self.format, self.rounding)
        values.flags.writeable = False
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __float__(self) -> float:
        return float(self._values)

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(
                "the truth value of an FPArray with more than one element is ambiguous; use .any() or .all()"
            )
        return bool(self._values.reshape(-1)[0])

    def any(self) -> bool:
        return bool(self._values.any())

    def all(self) -> bool:
        return bool(self._values.all())

    # ---- views of the stored values -------------------------------------------------------------
    @property
    def values(self) -> np.ndarray:
        """The stored values as a read-only float64 array."""
        return self._values

    @property
    def bits(self) -> np.ndarray:
        return encode(self._values, self.format)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._values.shape

    @property
    def ndim(self) -> int:
        return self._values.ndim

    @property
    def size(self) -> int:
        return self._values.size

    @property
    def T(self) -> FPArray:  # noqa: N802 - numpy's name
        return self._wrap(self._values.T, self.format)

    def reshape(self, *shape: Any) -> FPArray:
        return self._wrap(self._values.reshape(*shape), self.format)

    def to(self, fmt: Format | str, rounding: str | None = None) -> FPArray:
        """The same values rounded to another format."""
        fmt, rounding = get_format(fmt), rounding or self.rounding
        return FPArray(round_to(self._values, fmt, rounding), fmt, rounding, self.model)

    def explain(self, index: Any = ()) -> Explanation:
        value = self._values[index]
        if np.ndim(value):
            raise ValueError(f"index must select one element; {index!r} selects shape {np.shape(value)}")
        return explain(float(value), self.format, self.rounding)

    def tolist(self) -> Any:
        return self._values.tolist()

    def __repr__(self) -> str:
        body = np.array2string(self._values, separator=", ", prefix="FPArray(")
        return f"FPArray({body}, format={self.format.name!r})"

    # ---- helpers ----------------------------------------------------------------------------------
    def _wrap(self, values: Any, fmt: Format) -> FPArray:
        return FPArray(values, fmt, self.rounding, self.model)

    def _common_format(self, inputs: tuple) -> Format:
        fmt = self.format
        for x in inputs:
            if isinstance(x, FPArray):
                fmt = promote(fmt, x.format)
        return fmt

    def _model_options(self, fmt: Format) -> dict:
        """The model's inputs rounding and partial sums (the array's own format without one); results in fmt."""
        inputs = {} if self.model is not None else {"fmt": fmt}
        return {**inputs, "model": self.model, "out": fmt, "rounding": self.rounding}

    def _out_format(self, fmt: Format) -> Format:
        return fmt


def array(x: Any, fmt: Format | str, rounding: str = "nearest_even", *, model: object = None) -> FPArray:
    """x rounded to `fmt` as an FPArray: every operation on it rounds its results to the format.

    `rounding` is used for the initial rounding and every later result; `model` (a preset name such as
    'fp16_fp32acc' or an AccumulationModel) sets how sum, mean, dot and matmul round their inputs and
    accumulate (default: in `fmt` itself, sequentially); their results are always in `fmt`. exp, log, log2,
    log10, exp2 and tanh are computed in float64 and then rounded once, which is correctly rounded except in
    rare cases near midpoints.
    """
    fmt = get_format(fmt)
    check_rounding(rounding)
    if model is not None:
        accumulation.resolve_model(fmt, model=model)  # validate early, with the model's own error
    source = x._values if isinstance(x, FPArray) else x
    return FPArray(round_to(source, fmt, rounding), fmt, rounding, model)
