"""torch's CPU kernels in NumPy, rounding where they round: BatchNorm1d, log-softmax with NLL, and the
single-tensor SGD step (torch 2.13 on x86-64; checked against it in tests/test_kernels.py).

Where it matches torch bit for bit, and where not (tested over N in 1, 2, 7, 64, 100, 128, 256 rows, C in 3,
10, 33, 64 columns, on 1 and 2 threads):
- SGD: every tensor. BatchNorm with fp32 input, and with fp16 input over fp32 parameters (autocast): every
  shape. bf16 input over fp32 parameters: all but dx at N = 2 with C of 33 or 64.
- BatchNorm of a `.half()` model (fp16 input and parameters): all but N = 1 (C ≥ 10), (2, 64), (256, 33).
  Of a `.bfloat16()` model: only N a power of two (N = 7 and 100 differ); the bf16 rounding points for
  other N are not modelled.
- log-softmax: fp16 and bf16 bit for bit; fp32 not: torch's vectorized exp and log (Sleef, within 1 ulp, not
  correctly rounded) and its lane-wise sum of the exponentials differ from this in-order, correctly rounded
  model by a few ulps of log-sum-exp (c·2^-22 at most for c classes, as tested).

Invariant: every value is a float64 array holding values of the format the kernel stores them in; fp32
arithmetic is one correct rounding per operation, fused multiply-adds one rounding for the pair.
"""

from __future__ import annotations

import numpy as np

from fpsim.codec import round as round_to
from fpsim.flags import suspended
from fpsim.formats import BF16, FP32, Format

_EPS = 1e-5  # BatchNorm's variance epsilon, as in torch
_LANES = 8  # fp32 lanes of the vectorized BatchNorm backward (measured on x86-64 torch 2.13, AVX2 and AVX512)


def fl32(x: np.ndarray | float) -> np.ndarray:
    """x rounded to fp32 (nearest even), kept as float64."""
    with np.errstate(over="ignore", invalid="ignore"):  # past fp32's range is inf, as the hardware gives
        return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fp32 fma(a, b, c) = a·b + c rounded once, for fp32 a, b, c.

    a·b is exact in float64 (48 bits); the sum is formed in float64 rounded to odd, which 53 > 24 + 1 bits
    make a correct first step before the rounding to fp32 (no double-rounding error).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        product = np.asarray(a, dtype=np.float64) * b
        total = product + c
        bv = total - product  # TwoSum: the exact error of the float64 sum
        error = (product - (total - bv)) + (c - bv)
        inexact = np.isfinite(total) & (error != 0)
        even = (total.view(np.int64) & 1) == 0
        odd = np.where(inexact & even, np.nextafter(total, np.copysign(np.inf, error)), total)  # round to odd
    return fl32(odd)


def to_format(x: np.ndarray, fmt: Format) -> np.ndarray:
    """An fp32 value stored into a tensor of `fmt` (torch's conversion: nearest even, overflow to inf)."""
    if fmt is FP32:
        return fl32(x)
    with suspended():
        return round_to(fl32(x), fmt, on_nan="zero")  # fp16 and bf16 keep NaN; "zero" is for formats without


def _chunks(n: int, threads: int) -> list[slice]:
    """The row ranges at::parallel_for(0, n, 1) hands to `threads` threads: ceil(n / threads) rows each."""
    size = -(-n // max(1, min(threads, n)))
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def _column_sums(rows: np.ndarray, threads: int, step) -> list[np.ndarray]:
    """Per thread, a running fp32 vector updated row by row by `step(acc, row_index)`."""
    partials = []
    for part in _chunks(rows.shape[0], threads):
        acc = np.zeros(rows.shape[1])
        for index in range(part.start, part.stop):
            acc = step(acc, index)
        partials.append(acc)
    return partials


def _combine(partials: list[np.ndarray], wide: bool) -> np.ndarray:
    """The threads' partial sums added in order: in float64 (fp32 input) or in fp32 (fp16/bf16 input)."""
    total = np.zeros_like(partials[0])
    for part in partials:
        total = total + part if wide else fl32(total + part)
    return total


def batch_norm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, wide: bool, stats: Format, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode BatchNorm1d on an (N, C) batch as torch's CPU kernel computes it.

    Statistics: per-thread fp32 column sums, combined in float64 for an fp32 input (`wide`; fp32 for fp16 and
    bf16 inputs); mean and
    1/sqrt(var + eps) stored in `stats` (fp32, or the input's format for a `.half()` model). Output in fp32
    before its rounding to the input's format: fma(x, α, β') with α = invstd·γ and β' = fma(-mean, α, β).
    Returns (output, mean, invstd).
    """
    n = x.shape[0]
    mean = to_format(_combine(_column_sums(x, threads, lambda acc, i: fl32(acc + x[i])), wide) / n, stats)
    var_sum = _combine(_column_sums(x, threads, lambda acc, i: fma32(fl32(x[i] - mean), fl32(x[i] - mean), acc)),
                       wide)  # fmt: skip
    var_sum = to_format(var_sum, BF16 if stats is BF16 else FP32)  # a .bfloat16() model rounds it; .half() not
    var = fl32(var_sum / n)  # the fp32 variance sum divided in fp32, then widened for InvStd
    inv_std = to_format(1 / np.sqrt(var + _EPS), stats)  # torch's InvStd adds the double eps: float64 arithmetic
    alpha = fl32(inv_std * gamma)
    shift = fma32(-mean, alpha, beta)
    return fma32(x, alpha, shift), mean, inv_std


def batch_norm_backward(
    dy: np.ndarray, x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray, wide: bool, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's CPU BatchNorm1d backward (training mode): (dx in fp32 before its rounding, dgamma, dbeta)."""
    n = x.shape[0]
    centred = fl32(x - mean)
    total = _combine(_column_sums(dy, threads, lambda acc, i: fl32(acc + dy[i])), wide)
    dot = _combine(_column_sums(dy, threads, lambda acc, i: fma32(centred[i], dy[i], acc)), wide)
    total, dot = fl32(total), fl32(dot)  # stored in an fp32 buffer
    k = fl32(fl32(fl32(dot * inv_std) * inv_std) / n)
    grad_mean = fl32(total / n)
    dx = fma32(-centred, k, fl32(dy - grad_mean))  # the compiler fuses (dy - mean_dy) - (x - mean)·k
    if wide:  # fp32's vectorized loop runs whole 8-lane vectors fused; its tail (the last C mod 8 columns) is not
        tail = np.arange(x.shape[1]) >= x.shape[1] - x.shape[1] % _LANES
        dx = np.where(tail, fl32(fl32(dy - grad_mean) - fl32(centred * k)), dx)
    return fl32(fl32(dx * inv_std) * gamma), fl32(dot * inv_std), total


def scalar_in(value: float, fmt: Format) -> float:
    """add_'s `alpha` as the kernel sees it: rounded to the tensor's format (fp32, or fp16/bf16 itself)."""
    return float(to_format(np.float64(value), fmt))


def add_scaled(a: np.ndarray, b: np.ndarray, alpha: float, fmt: Format) -> np.ndarray:
    """torch's `a.add_(b, alpha=alpha)` on `fmt` tensors: fma(b, alpha, a) in fp32, stored in fmt."""
    return to_format(fma32(b, scalar_in(alpha, fmt), a), fmt)


def sgd_step(
    weight: np.ndarray, grad: np.ndarray, buffer: np.ndarray | None, lr: float, momentum: float, fmt: Format
) -> tuple[np.ndarray, np.ndarray | None]:
    """torch.optim.SGD's single-tensor step (no dampening, weight decay or Nesterov): buf.mul_(momentum)
    .add_(grad), then weight.add_(buf, alpha=-lr); each op rounds to the parameter's format.

    `buffer` None is the first step (torch clones the gradient). Returns (new weight, new buffer).
    """
    if momentum:
        decayed = None if buffer is None else to_format(buffer * fl32(momentum), fmt)  # mul_'s scalar stays fp32
        buffer = grad.copy() if decayed is None else add_scaled(decayed, grad, 1.0, fmt)
        grad = buffer
    return add_scaled(weight, grad, -lr, fmt), buffer


def log_softmax(z: np.ndarray, fmt: Format) -> np.ndarray:
    """torch's CPU log_softmax over the last axis of an (N, C) tensor of `fmt` (fp32, or fp16/bf16 computed in
    fp32): exp(z - max) summed in order in fp32; for fp16/bf16 that sum and its log are stored in `fmt`.

    exp and log are correctly rounded here; torch's vectorized ones (Sleef) are within an ulp of them, and torch
    sums lane-wise: fp32 results differ by a few ulps of log-sum-exp (see the module docstring).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # inf logits give NaN, as in torch
        shifted = fl32(z - z.max(axis=1, keepdims=True))
        terms = fl32(np.exp(shifted))
        total = np.zeros((z.shape[0], 1))
        for column in range(z.shape[1]):
            total = fl32(total + terms[:, column : column + 1])
        if fmt is FP32:
            return fl32(shifted - fl32(np.log(total)))
        return to_format(shifted - to_format(np.log(to_format(total, fmt)), fmt), fmt)
