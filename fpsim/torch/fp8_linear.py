"""Linear layers on FP8 GEMMs (torch._scaled_mm): e4m3 inputs and weights forward, e5m2 gradients backward, each
tensor scaled by its own amax (current scaling), as fp8 training recipes run them; for `fpsim bench`'s fp8 policy.

Invariant: every GEMM is (a·sa)(b·sb) of the fp8 codes a, b of x/sa and w/sb, that is the product of the dequantized
operands; dimensions are zero-padded to multiples of 16 (zeros add nothing to a product) and the padding cut off.
"""

from __future__ import annotations

import torch
from torch.nn import functional
from torch.overrides import TorchFunctionMode

from fpsim.torch.training import _pad

__all__ = ["Fp8Linears", "fp8_linear", "to_fp8"]

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
_TILE = 16  # _scaled_mm on CUDA takes dimensions in multiples of 16


def to_fp8(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scale) with codes = fp8(t / scale) and scale = amax / max, computed on t's device (no host sync)."""
    amax = t.detach().abs().amax().float().clamp(min=torch.finfo(torch.float32).tiny)  # all zeros: keep scale > 0
    scale = amax / torch.finfo(dtype).max
    return (t.float() / scale).to(dtype), scale  # |t / scale| <= max: nothing overflows


def _column_major(t: torch.Tensor) -> torch.Tensor:
    return t.t().contiguous().t()  # the same values, stored column by column, as _scaled_mm's second operand must be


class _Fp8Matmul(torch.autograd.Function):
    """x @ w.T with x (N, K) and w (M, K): forward e4m3 × e4m3 → bf16; backward e5m2 gradients × e4m3 codes saved
    from the forward, → the dtypes of x and w."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        (x8, sx), (w8, sw) = to_fp8(_pad(x, _TILE, _TILE), E4M3), to_fp8(_pad(weight, _TILE, _TILE), E4M3)
        ctx.save_for_backward(x8, sx, w8, sw)
        ctx.shape, ctx.x_dtype, ctx.w_dtype = (x.shape[0], x.shape[1], weight.shape[0]), x.dtype, weight.dtype
        out = torch._scaled_mm(x8, w8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)
        return out[: x.shape[0], : weight.shape[0]]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x8, sx, w8, sw = ctx.saved_tensors
        n, k, m = ctx.shape
        g8, sg = to_fp8(_pad(grad, _TILE, _TILE), E5M2)
        grad_x = torch._scaled_mm(g8, _column_major(w8), scale_a=sg, scale_b=sw, out_dtype=ctx.x_dtype)
        grad_w = torch._scaled_mm(
            g8.t().contiguous(), _column_major(x8), scale_a=sg, scale_b=sx, out_dtype=torch.float32
        )
        return grad_x[:n, :k], grad_w[:m, :k].to(ctx.w_dtype)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """functional.linear through FP8 GEMMs: x (..., K), weight (M, K), bias (M,); bf16 out, as autocast's linear."""
    out = _Fp8Matmul.apply(x.reshape(-1, x.shape[-1]), weight).reshape(*x.shape[:-1], weight.shape[0])
    return out if bias is None else out + bias.to(out.dtype)  # an fp32 bias would promote the sum to fp32


class Fp8Linears(TorchFunctionMode):
    """While active, every top-level call of functional.linear (nn.Linear's forward, or a direct call) runs
    fp8_linear; linears inside other functions (nn.MultiheadAttention's projections) keep their own kernels."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is functional.linear:
            return fp8_linear(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
