"""What a matrix unit (Tensor Core) does inside one MMA: exact products, alignment to the largest exponent,
truncation, one normalization.

Invariant: every step is exact in float64 (products of inputs of at most 11 significant bits, power-of-two
scalings, truncation of the scaled addends to integers, their sum below 2^53) except the one rounding per group,
toward zero to fp32 (or to `accumulator_bits` fraction bits), and an fp16/bf16 output's one final rounding of the
fp32 result to nearest even; both done by fpsim's codec.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from fpsim.arithmetic import operands
from fpsim.codec import round as round_to
from fpsim.formats import BF16, FP16, FP32, Format, get_format
from fpsim.rounding import Rounding

_FASI = "Fasi, Higham, Mikaitis & Pranesh, 'Numerical behavior of NVIDIA tensor cores', PeerJ CS 7:e330 (2021)"
_KHATTAK = "Khattak & Mikaitis, 'Accurate models of NVIDIA tensor cores', arXiv 2512.07004"
_MMA_SIM = "Xie et al., 'MMA-Sim', arXiv 2511.10909"
_DEEPSEEK = "DeepSeek-AI, 'DeepSeek-V3 technical report', arXiv 2412.19437, §3.3.2 (about 14 bits kept)"
_ZERO_EXPONENT = -(1 << 13)  # a zero product has no exponent: this one never wins the maximum (2·emin >= -300)
_PRODUCTS_PER_CHUNK = 1 << 22  # float64 products held at once by unit_matmul (32 MiB per temporary)


@dataclass(frozen=True)
class MatrixUnit:
    """One matrix unit's arithmetic: `group` products (plus the accumulator) fused per normalization, each addend
    truncated to `fraction_bits` fraction bits below the group's largest exponent.

    `split`: the instruction's k runs as `split` pieces of `group` in sequence (A100's k16 as two k8 halves); the
    arithmetic depends on `group` alone. `accumulator_bits`: an fp32 result keeps only this many fraction bits
    (truncated), between groups too (fp8 on Hopper and Ada). `input_truncation`: inputs are truncated to the
    input format, not rounded (tf32 on A100: the low 13 bits of fp32 dropped).

    Outputs: the groups always chain in fp32 (toward zero); `out` is the precision of the final result only. An
    fp16/bf16 output is the fp32 result rounded once to nearest even: cuBLAS's fp32 accumulation with one final
    rounding, as measured on an H200 (benchmarks/results/gpu_check_h200.md). A chain with an fp16 accumulator
    (an MMA with fp16 C/D) is not modelled.
    """

    name: str
    inputs: tuple[str, ...]
    group: int
    fraction_bits: int
    input_truncation: bool = False
    split: int | None = None
    accumulator_bits: int | None = None
    citation: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.inputs or not all(isinstance(name, str) for name in self.inputs):
            raise ValueError(f"inputs must be a non-empty tuple of format names, got {self.inputs!r}")
        for name in self.inputs:
            if get_format(name).precision > 11:  # a product of two inputs must be exact in float64 (22 bits)
                raise ValueError(f"inputs: {name} has more than 11 significant bits; matrix units take fp16 or less")
        _check_count("group", self.group, 1, 1024)
        _check_count("fraction_bits", self.fraction_bits, 1, 40)  # 2^(40 + 2) · 1025 addends < 2^53: sums exact
        if self.split is not None:
            _check_count("split", self.split, 1, 64)
        if self.accumulator_bits is not None:
            _check_count("accumulator_bits", self.accumulator_bits, 1, 23)

    @property
    def accumulator(self) -> Format:
        """The format of an fp32 result: fp32 itself, or fp32's exponent range with accumulator_bits fraction bits."""
        if self.accumulator_bits is None:
            return FP32
        return Format(f"fp32_{self.accumulator_bits}bit_accumulator", nexp=8, nmant=self.accumulator_bits)


def _check_count(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an int between {low} and {high}, got {value!r}")


def check_promote_every(promote_every: object) -> None:
    """None, or a number of terms between promotions: an int in [1, 2^40]. One that is not a multiple of the
    unit's group splits groups, which hardware cannot do: a hypothetical, allowed for experiments."""
    if promote_every is not None:
        _check_count("promote_every", promote_every, 1, 1 << 40)


def _unit(name, inputs, group, fraction_bits, citation, description, **options) -> MatrixUnit:
    return MatrixUnit(name, inputs, group, fraction_bits, citation=citation, description=description, **options)


MATRIX_UNITS: dict[str, MatrixUnit] = {
    unit.name: unit
    for unit in (
        _unit("v100_fp16", ("fp16",), 4, 23, _FASI, "V100 (Volta): 4 fp16 products per normalization"),
        _unit("a100_fp16", ("fp16",), 8, 24, _KHATTAK, "A100: k16 as two k8 halves, 24 bits", split=2),
        _unit("a100_bf16", ("bf16",), 8, 24, _KHATTAK, "A100: k16 as two k8 halves, 24 bits", split=2),
        _unit("a100_tf32", ("tf32",), 4, 24, _KHATTAK, "A100: fp32 inputs truncated to tf32", input_truncation=True),
        _unit("h100_fp16", ("fp16",), 16, 25, _KHATTAK, "H100/H200 (Hopper): 16 products, 25 bits"),
        _unit("h100_bf16", ("bf16",), 16, 25, _KHATTAK, "H100/H200 (Hopper): 16 products, 25 bits"),
        _unit("h100_tf32", ("tf32",), 8, 25, _KHATTAK, "H100/H200 (Hopper): 8 tf32 products, 25 bits"),
        _unit("h100_fp8_e4m3", ("fp8_e4m3",), 32, 13, f"{_KHATTAK}; {_DEEPSEEK}", "Hopper fp8", accumulator_bits=13),
        _unit("h100_fp8_e5m2", ("fp8_e5m2",), 32, 13, f"{_KHATTAK}; {_DEEPSEEK}", "Hopper fp8", accumulator_bits=13),
        _unit("ada_fp8_e4m3", ("fp8_e4m3",), 16, 13, _MMA_SIM, "Ada: 16 fp8 products, 13 bits", accumulator_bits=13),
        _unit("ada_fp8_e5m2", ("fp8_e5m2",), 16, 13, _MMA_SIM, "Ada: 16 fp8 products, 13 bits", accumulator_bits=13),
        _unit("b200_fp16", ("fp16",), 16, 25, _KHATTAK, "B200 (Blackwell): 16 products, 25 bits"),
        _unit("b200_bf16", ("bf16",), 16, 25, _KHATTAK, "B200 (Blackwell): 16 products, 25 bits"),
        _unit("b200_tf32", ("tf32",), 8, 25, _KHATTAK, "B200 (Blackwell): 8 tf32 products, 25 bits"),
        _unit("b200_fp8_e4m3", ("fp8_e4m3",), 32, 25, _KHATTAK, "B200 (Blackwell): fp8 with a full fp32 accumulator"),
    )
}
MATRIX_UNITS.update(  # the H200 is an H100 chip with more memory: the same units
    {name.replace("h100", "h200"): unit for name, unit in MATRIX_UNITS.items() if name.startswith("h100")}
)
OUTPUTS = (FP32, FP16, BF16)


def get_unit(unit: str | MatrixUnit) -> MatrixUnit:
    """A preset by name, or the MatrixUnit itself; an unknown name lists the presets."""
    if isinstance(unit, MatrixUnit):
        return unit
    if isinstance(unit, str) and unit in MATRIX_UNITS:
        return MATRIX_UNITS[unit]
    if isinstance(unit, str):
        raise ValueError(f"unknown matrix unit {unit!r}; the presets are {', '.join(MATRIX_UNITS)}")
    raise TypeError(f"unit must be a preset name or a MatrixUnit, got {type(unit).__name__}")


def mma(a_rows: object, b_cols: object, c: object, unit: str | MatrixUnit, out: str = "fp32", **options) -> np.ndarray:
    """One fused group: Σ a·b + c along the last axis (at most unit.group products), rounded toward zero to fp32
    (the unit's accumulator); an fp16/bf16 `out` then rounds that fp32 result once to nearest even.

    a_rows and b_cols broadcast against each other, c against their result. Options: fmt (the input format, one
    of unit.inputs) and inputs ('round' casts other values to it, 'exact' refuses them). c must be a value of
    the unit's accumulator (fp32, or fp32 with accumulator_bits fraction bits), whatever `out` is.
    """
    unit, out_format, (x, y), fmt = _prepare(unit, out, (a_rows, b_cols), **options)
    if x.shape[-1] > unit.group:
        raise ValueError(f"mma fuses at most {unit.group} products ({unit.name}); got {x.shape[-1]}: use unit_matmul")
    x, y = np.broadcast_arrays(x, y)
    accumulator = np.asarray(c, dtype=np.float64)
    if not np.array_equal(round_to(accumulator, unit.accumulator, "toward_zero"), accumulator, equal_nan=True):
        raise ValueError(f"c must hold values of {unit.accumulator.name}, the unit's accumulator; round it first")
    accumulator = np.broadcast_to(accumulator, x.shape[:-1])
    return _to_out(_fused(x * y, _exponent(x, fmt) + _exponent(y, fmt), accumulator, unit), out_format)


def unit_matmul(
    a: object,
    b: object,
    unit: str | MatrixUnit,
    *,
    out: str = "fp32",
    promote_every: int | None = None,
    fmt: str | None = None,
    inputs: str = "round",
) -> np.ndarray:
    """a @ b (1-D or 2-D) on a matrix unit: K in groups of unit.group, each group's fp32 result (toward zero) the
    next one's c; an fp16/bf16 `out` rounds the final fp32 result once to nearest even.

    With promote_every=N the unit restarts from 0 every N terms and its fp32 result is added into an fp32
    accumulator, rounded to nearest even ("CUDA cores", DeepSeek-V3 §3.3.2); `out` then rounds that sum once.
    """
    unit, out_format, (x, y), fmt = _prepare(unit, out, (a, b), fmt=fmt, inputs=inputs)
    check_promote_every(promote_every)
    if x.ndim not in (1, 2) or y.ndim not in (1, 2):
        raise ValueError(f"a and b must be 1-D or 2-D on a matrix unit; got shapes {x.shape} and {y.shape}")
    left, right = np.atleast_2d(x), (y[:, None] if y.ndim == 1 else y)
    if left.shape[1] != right.shape[0]:
        raise ValueError(f"a's last axis ({left.shape[1]}) must match b's first ({right.shape[0]})")
    if left.shape[1] == 0:
        raise ValueError("a and b have K = 0: a matrix unit needs at least one product")
    columns = np.ascontiguousarray(right.T)
    if left.shape[0] == 0:  # no rows: an empty result of the right shape, as numpy's matmul gives
        return np.zeros((0, columns.shape[0]))
    rows_per_chunk = max(1, _PRODUCTS_PER_CHUNK // max(1, columns.shape[0] * unit.group))
    result = np.concatenate(
        [
            _chunk_product(left[start : start + rows_per_chunk], columns, unit, fmt, promote_every)
            for start in range(0, left.shape[0], rows_per_chunk)
        ]
    )
    result = _to_out(result, out_format)
    if y.ndim == 1:
        result = result[:, 0]
    return result[0] if x.ndim == 1 else result


def _chunk_product(left, columns, unit, fmt, promote_every) -> np.ndarray:
    """The fp32 result (toward zero, or the accumulator's) of a chunk of rows, before `out`'s final rounding."""
    rows, cols = left[:, None, :], columns[None, :, :]  # (M, 1, K) and (1, N, K): products broadcast to (M, N, K)
    row_exponents, column_exponents = _exponent(rows, fmt), _exponent(cols, fmt)
    length = left.shape[1]

    def chain(start: int, stop: int) -> np.ndarray:
        total = np.zeros((left.shape[0], columns.shape[0]))
        for first in range(start, stop, unit.group):
            last = min(first + unit.group, stop)
            with np.errstate(invalid="ignore"):  # 0·inf is NaN, as IEEE says; _fused passes it on
                products = rows[..., first:last] * cols[..., first:last]  # exact: at most 11 + 11 bits
            exponents = row_exponents[..., first:last] + column_exponents[..., first:last]
            total = _fused(products, exponents, total, unit)
        return total

    if promote_every is None:
        return chain(0, length)
    promoted = np.zeros((left.shape[0], columns.shape[0]), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # an fp32 sum past max is inf, as IEEE says
        for start in range(0, length, promote_every):
            partial = chain(start, min(start + promote_every, length))
            promoted = promoted + partial.astype(np.float32)  # exact cast (an fp32 value); IEEE fp32 add, RNE
    return promoted.astype(np.float64)


def _to_out(result: np.ndarray, out_format: Format) -> np.ndarray:
    """The final fp32 result in `out`: fp32 as it is, fp16/bf16 rounded once to nearest even (cuBLAS's epilogue)."""
    return result if out_format == FP32 else round_to(result, out_format, "nearest_even")


def _fused(products: np.ndarray, exponents: np.ndarray, c: np.ndarray, unit: MatrixUnit) -> np.ndarray:
    """The three-step rule on products (..., g) with their exponents ea + eb and accumulators c (...), rounded
    toward zero to the unit's accumulator (fp32, or accumulator_bits fraction bits)."""
    finite = np.isfinite(products).all(axis=-1) & np.isfinite(c)
    if not finite.all():  # inf or NaN anywhere: the IEEE result of the plain sum (inf, or NaN for inf - inf)
        with np.errstate(invalid="ignore"):
            special = products.sum(axis=-1) + c
        products, c = np.where(np.isfinite(products), products, 0.0), np.where(np.isfinite(c), c, 0.0)
    product_units, c_units, shift = _aligned(products, exponents, c, unit.fraction_bits)
    # each |unit count| < 2^(fraction_bits + 2) and at most 1025 of them: the float64 sum is an exact integer
    units = product_units.sum(axis=-1) + c_units
    exact = np.ldexp(units + 0.0, -shift)  # + 0.0: an exact zero sum is +0; scaling back is exact
    rounded = round_to(exact, unit.accumulator, "toward_zero")
    if not finite.all():
        rounded = np.where(finite, rounded, special)
        rounded[np.isnan(rounded)] = np.nan  # the canonical NaN
    return rounded


def _aligned(products, exponents, c, fraction_bits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The addends truncated toward zero to whole units of 2^(E - fraction_bits), as unit counts, and -log2(unit)."""
    largest = np.maximum(exponents.max(axis=-1), _c_exponent(c))  # E: products' ea + eb and c's own exponent
    shift = fraction_bits - largest
    # exact: power-of-two scalings of float64 values far from under/overflow; trunc drops the bits below the unit
    return np.trunc(np.ldexp(products, shift[..., None])), np.trunc(np.ldexp(c, shift)), shift


def explain_dot(a: object, b: object, unit: str | MatrixUnit, out: str = "fp32") -> str:
    """A plain-text table of one small dot product on the unit: per group, each product's exact value, its
    exponent ea + eb, what survives alignment to 2^(E - fraction_bits) and what is truncated; then the result
    (an fp16/bf16 `out` rounds the final fp32 result once) against the exact sum and an fp32 sequential sum (one
    fused multiply-add per term)."""
    from fpsim._terminal import console, table
    from fpsim.accumulation import dot  # fpsim.accumulation imports this module: a call-time import

    unit, out_format, (x, y), fmt = _prepare(unit, out, (a, b))
    if x.ndim != 1 or x.shape != y.shape or not 1 <= x.size <= 4 * unit.group:
        raise ValueError(
            f"explain_dot takes two 1-D vectors of equal length 1..{4 * unit.group}; got {x.shape}, {y.shape}"
        )
    rows, c = [], np.float64(0.0)
    for first in range(0, x.size, unit.group):
        xs, ys = x[first : first + unit.group], y[first : first + unit.group]
        products, exponents = xs * ys, _exponent(xs, fmt) + _exponent(ys, fmt)  # exact products
        kept, c_kept, shift = _aligned(products, exponents, c, unit.fraction_bits)
        quantum = 2.0 ** -int(shift)
        group_name = f"group {first // unit.group + 1}"
        rows.append(_row(f"c ({group_name})", c, "", c_kept * quantum, c - c_kept * quantum))
        for k, (p, e, q) in enumerate(zip(products, exponents, kept), start=first):  # one row per exact product
            rows.append(_row(f"a[{k}]·b[{k}]", p, str(int(e)) if p else "none", q * quantum, p - q * quantum))
        c = _fused(products, exponents, c, unit)
        rows.append(_row(f"result of {group_name}", "", f"E = {unit.fraction_bits - int(shift)}", c, ""))
    if out_format != FP32:  # the chain is fp32; only its final result is rounded to `out`
        rows.append(_row(f"result in {out_format.name} (nearest even)", "", "", _to_out(c, out_format), ""))
    exact = math.fsum(map(float, x * y))  # correctly rounded to float64 (exact for small dot products)
    sequential = dot(x, y, "fp32")
    rows += [
        ["exact sum (float64)", repr(exact), "", "", ""],
        ["fp32 sequential", repr(float(sequential)), "", "", ""],
    ]
    columns = ["term", "exact value a·b", "exponent", "kept after alignment", "truncated"]
    view = console(io.StringIO())
    view.print(
        f"{unit.name}: {unit.group} products per group, {unit.fraction_bits} fraction bits, out {out_format.name}"
    )
    view.print(table(columns, rows))
    return view.file.getvalue()


def _row(*cells: object) -> list[str]:
    return [repr(float(cell)) if isinstance(cell, (float, np.floating)) else str(cell) for cell in cells]


def _exponent(values: np.ndarray, fmt: Format) -> np.ndarray:
    """floor(log2|x|), subnormals at the format's emin, zeros (and inf/NaN) at a value that never wins a max."""
    _, binary_exponent = np.frexp(values)  # x = m·2^k with m in [0.5, 1): floor(log2|x|) = k - 1
    exponents = np.maximum(binary_exponent - 1, fmt.emin)
    return np.where((values == 0) | ~np.isfinite(values), _ZERO_EXPONENT, exponents).astype(np.int32)


def _c_exponent(c: np.ndarray) -> np.ndarray:
    return _exponent(c, FP32)  # the accumulator has fp32's exponent range (with or without accumulator_bits)


def _prepare(unit, out, values, fmt=None, inputs="round") -> tuple[MatrixUnit, Format, list[np.ndarray], Format]:
    unit = get_unit(unit)
    out_format = get_format(out)
    if out_format not in OUTPUTS:
        raise ValueError(f"out must be one of {', '.join(f.name for f in OUTPUTS)} on a matrix unit; got {out!r}")
    input_format = get_format(fmt if fmt is not None else unit.inputs[0])
    if input_format.name not in unit.inputs:
        raise ValueError(f"{unit.name} takes {', '.join(unit.inputs)} inputs, not {input_format.name}")
    if inputs not in ("round", "exact"):
        raise ValueError(f"inputs must be 'round' or 'exact'; got {inputs!r}")
    return unit, out_format, [_cast(v, name, unit, input_format, inputs) for v, name in zip(values, "ab")], input_format


def _cast(value: object, name: str, unit: MatrixUnit, fmt: Format, policy: str) -> np.ndarray:
    """The operand as values of the input format: rounded (truncated for input_truncation), or refused."""
    truncating = unit.input_truncation and policy == "round"
    source = FP32 if truncating else fmt  # tf32 truncation: the value as fp32 first, then its low 13 bits dropped
    (flat,), shape, _, _ = operands((value,), Rounding.resolve(source, "nearest_even"), policy, names=name)
    array = flat.reshape(shape)
    return round_to(array, fmt, "toward_zero") if truncating else array
