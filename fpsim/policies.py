"""Precision policies: which format each kind of tensor lives in during training, as plain data.

Invariant: a policy names formats, a block format and a scaler only; `Precision` applies it and counts what the
casts did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fpsim.blocks import BLOCK_FORMATS, BlockQuantized, get_block_format, quantize_blocks
from fpsim.codec import round as round_to
from fpsim.flags import Flags, suspended
from fpsim.formats import FP32, FP64, Format, get_format
from fpsim.matrix_unit import MATRIX_UNITS, MatrixUnit, unit_matmul
from fpsim.scaling import SCALERS, fp32_scale


@dataclass(frozen=True)
class Policy:
    """Formats for weights and activations as computed with (`compute`), the optimizer's copy of the weights
    and its state (`master`), backward gradients (`grads`), softmax/loss/norm internals (`reductions`) and
    matmul partial sums (`accumulate`: fp32 or fp64 BLAS, or a matrix unit of fpsim.matrix_unit such as
    "h100_fp16", taking compute and grads values); the loss scaler; per-tensor scaling into narrow formats; and
    `blocks`: "none", or a block format of fpsim.BLOCK_FORMATS (such as "mxfp8_e4m3") into which every matmul's
    two operands are quantized, in blocks along the reduction axis, just before the multiplication."""

    name: str
    compute: str
    master: str
    grads: str
    reductions: str
    accumulate: str = "fp32"
    scaler: str = "none"
    loss_scale: float = 2.0**16
    per_tensor_scaling: bool = False
    blocks: str = "none"
    description: str = ""

    def __post_init__(self) -> None:
        for field_name in ("compute", "master", "grads", "reductions"):
            get_format(getattr(self, field_name))  # unknown names fail here, with the list of valid ones
        if isinstance(self.accumulate, str) and self.accumulate in MATRIX_UNITS:
            self._check_unit(MATRIX_UNITS[self.accumulate])
        elif not isinstance(self.accumulate, str) or _format_or_none(self.accumulate) not in (FP32, FP64):
            raise ValueError(
                f"accumulate must be fp32 or fp64 (BLAS partial sums) or a matrix unit "
                f"({', '.join(MATRIX_UNITS)}); got {self.accumulate!r}"
            )
        if self.scaler not in SCALERS:
            raise ValueError(f"scaler must be one of {', '.join(SCALERS)}; got {self.scaler!r}")
        fp32_scale("loss_scale", self.loss_scale)  # must round to a finite, nonzero fp32
        if self.blocks != "none":
            self._check_blocks()

    def _check_blocks(self) -> None:
        """A block format by name (a policy is plain data), multiplied by fp32 or fp64 BLAS, scaled per block only."""
        if not isinstance(self.blocks, str) or self.blocks not in BLOCK_FORMATS:
            raise ValueError(f"blocks must be 'none' or a block format name ({', '.join(BLOCK_FORMATS)}); "
                             f"got {self.blocks!r}")  # fmt: skip
        if self.accumulate in MATRIX_UNITS:
            raise ValueError(
                f"blocks={self.blocks!r} with accumulate={self.accumulate!r} is not modelled (the unit would need the "
                "block scales): use accumulate='fp32'"
            )
        if self.per_tensor_scaling:
            raise ValueError(
                f"blocks={self.blocks!r} scales the matmul inputs per block; per_tensor_scaling would scale them "
                "again: use per_tensor_scaling=False"
            )

    def _check_unit(self, unit: MatrixUnit) -> None:
        """The unit multiplies what the policy's matmuls receive: compute values forward, grads values backward."""
        if self.per_tensor_scaling:
            raise ValueError(
                f"accumulate={unit.name!r} with per_tensor_scaling is not modelled (the unit would need the scale "
                "factors): use accumulate='fp32' or per_tensor_scaling=False"
            )
        for field_name in ("compute", "grads"):
            fmt = get_format(getattr(self, field_name)).name
            if fmt not in unit.inputs:
                raise ValueError(
                    f"accumulate={unit.name!r} takes {', '.join(unit.inputs)} inputs, but the policy's {field_name} "
                    f"format is {fmt}; the units for {fmt} are {', '.join(units_for(fmt)) or 'none'}"
                )

    def to_dict(self) -> dict:
        return asdict(self)


def units_for(fmt: str) -> list[str]:
    """The matrix units (names in fpsim.matrix_unit.MATRIX_UNITS) that take `fmt` inputs."""
    return [name for name, unit in MATRIX_UNITS.items() if fmt in unit.inputs]


def _format_or_none(name: str) -> Format | None:
    try:
        return get_format(name)
    except ValueError:
        return None


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("fp32", "fp32", "fp32", "fp32", "fp32", description="everything in fp32: the reference"),
        Policy("fp16", "fp16", "fp16", "fp16", "fp16", description="all fp16, fp16 weights, no scaling (Apex O3)"),
        Policy("fp16-static", "fp16", "fp16", "fp16", "fp16", scaler="static", loss_scale=2.0**10,
               description="fp16 everywhere plus a static loss scale"),
        Policy("fp16-dynamic", "fp16", "fp16", "fp16", "fp16", scaler="dynamic",
               description="fp16 weights plus dynamic loss scaling"),
        Policy("amp", "fp16", "fp32", "fp16", "fp32", scaler="dynamic",
               description="fp32 master weights, fp16 matmuls with fp32 accumulation, fp32 softmax/loss/norms, "
               "dynamic scaling: the paper's recipe, torch autocast + GradScaler"),
        Policy("bf16", "bf16", "fp32", "bf16", "fp32", description="bf16 compute, fp32 master weights, no scaling"),
        Policy("fp8", "fp8_e4m3", "fp32", "fp8_e5m2", "fp32", per_tensor_scaling=True,
               description="e4m3 forward, e5m2 gradients, per-tensor scaling, fp32 master weights"),
        Policy("mxfp8", "fp32", "fp32", "fp32", "fp32", blocks="mxfp8_e4m3",
               description="MX training: both operands of every matmul, forward and backward, in e4m3 blocks of 32 "
               "along the reduction axis with a shared power-of-two scale; fp32 accumulation, fp32 elsewhere"),
        Policy("mxfp4", "fp32", "fp32", "fp32", "fp32", blocks="mxfp4",
               description="as mxfp8, with e2m1 elements (max 6)"),
        Policy("nvfp4", "fp32", "fp32", "fp32", "fp32", blocks="nvfp4",
               description="as mxfp8, in NVFP4 blocks: e2m1 elements, an e4m3 scale per 16, an fp32 scale per tensor"),
    )
}  # fmt: skip


def get_policy(spec: str | Policy | dict) -> Policy:
    """A policy from its name, itself, or its dict (a custom policy read back from a JSON config)."""
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, dict):
        return Policy(**spec)
    if spec not in POLICIES:
        raise ValueError(f"unknown policy {spec!r}; the policies are {', '.join(POLICIES)}")
    return POLICIES[spec]


KERNELS = {
    "exact": "one correct rounding per fused op: the teaching ideal",
    "torch": "the rounding points of torch's own CPU kernels (BatchNorm, log-softmax, the optimizer's steps)",
}


class Precision:
    """A policy at work: rounds tensors into its formats, multiplies under its accumulation, keeps the counts.

    `kernels` says where ops round: "exact" once per fused op, "torch" where torch's kernels do, with
    `threads` intra-op threads (torch.get_num_threads(): its reductions sum per thread, then combine).
    """

    def __init__(self, policy: Policy, kernels: str = "exact", threads: int = 1) -> None:
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}; got {kernels!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        self.policy, self.kernels, self.threads = policy, kernels, threads
        self.compute, self.master = get_format(policy.compute), get_format(policy.master)
        self.grads, self.reductions = get_format(policy.grads), get_format(policy.reductions)
        self.unit = MATRIX_UNITS.get(policy.accumulate)
        self.blocks = None if policy.blocks == "none" else get_block_format(policy.blocks)
        self.accumulate = FP32 if self.unit else get_format(policy.accumulate)  # a unit's results are fp32
        self.reset_counts()

    def reset_counts(self) -> None:
        self.gradient_flags = Flags()
        self.max_activation = 0.0
        self.gradients_seen: list[np.ndarray] = []  # the values each gradient cast received, for histograms
        self._gradient_casts: list[np.ndarray] = []  # what each gradient cast returned: the backward operands

    def cast(self, x: np.ndarray, fmt: Format) -> np.ndarray:
        """x rounded to fmt (nearest even); into narrow formats with per-tensor scaling when the policy says so."""
        if fmt is FP64:
            return x
        with suspended():  # the training loop keeps its own counts
            if self.policy.per_tensor_scaling and fmt.bits <= 8:
                return scaled_cast(x, fmt)
            return round_to(x, fmt, overflow="saturate" if not fmt.has_inf else None, on_nan="zero")

    def activation(self, x: np.ndarray) -> np.ndarray:
        """A forward tensor in the compute format; records the largest magnitude seen before rounding."""
        finite = np.abs(x[np.isfinite(x)])
        self.max_activation = max(self.max_activation, float(finite.max(initial=0.0)))
        return self.cast(x, self.compute)

    def gradient(self, g: np.ndarray) -> np.ndarray:
        """A backward tensor in the grads format; its flags (flushed, subnormal) are what the lesson counts."""
        self.gradients_seen.append(g)
        with suspended():
            if self.policy.per_tensor_scaling and self.grads.bits <= 8:
                rounded = scaled_cast(g, self.grads)
                flags = Flags(total=g.size, flushed_to_zero=int(np.count_nonzero((rounded == 0) & (g != 0))))
            else:
                rounded, flags = round_to(g, self.grads, flags=True, on_nan="zero")
        self.gradient_flags += flags
        if self.blocks is not None:  # only block products look the gradient operands up (_block_operand)
            self._gradient_casts.append(rounded)
        return rounded

    def matmul(self, a: np.ndarray, b: np.ndarray, out: Format) -> np.ndarray:
        """a @ b with partial sums in the accumulate format (the host BLAS's order), rounded to `out`; or, when
        the policy names a matrix unit, as that unit computes it (fp32 output), then rounded to `out`.

        With a block format, a's rows and b's columns (the reduced axis of each) are quantized in blocks first, as
        a block-scaled GEMM receives them, and NVFP4's two per-tensor scales multiply the result (the GEMM's alpha).
        Where an operand is a gradient (a backward product's dz), what its block quantization flushed counts in
        `gradient_flags`, as a gradient cast: so a run's flushed % shows what block scaling flushes.
        Products of fp16, bf16, tf32, fp8 or block-scaled values are exact in fp32, so float32 BLAS is fp32
        accumulation.
        """
        alpha = 1.0
        if self.blocks is not None:
            (a, scale_a), (b, scale_b) = self._block_operand(a, -1), self._block_operand(b, 0)
            alpha = np.float32(scale_a) * np.float32(scale_b)  # the GEMM's fp32 alpha, one rounding (1 for MX)
        with np.errstate(all="ignore"):  # inf and NaN propagate through the product, as on the hardware
            if self.unit is not None:  # operands are compute (or equal grads) values: "exact" refuses any other
                product = unit_matmul(a, b, self.unit, out="fp32", fmt=self.compute.name, inputs="exact")
            elif self.accumulate is FP32:
                product = (a.astype(np.float32) @ b.astype(np.float32) * np.float32(alpha)).astype(np.float64)
            else:
                product = a @ b * float(alpha)
        return self.cast(product, out)

    def _block_operand(self, x: np.ndarray, axis: int) -> tuple[np.ndarray, float]:
        """x as a block-scaled GEMM receives it (block_operand); a gradient operand's block flushes are counted."""
        quantized = quantize_blocks(x, self.blocks, axis=axis)
        if any(x is cast for cast in self._gradient_casts):  # the very array a gradient cast returned
            self.gradient_flags += Flags(total=x.size, flushed_to_zero=quantized.flags.total_flushed)
        return block_operand(quantized)


def scaled_cast(x: np.ndarray, fmt: Format) -> np.ndarray:
    """Per-tensor scaling: scale x by the power of two that brings amax just under fmt's max, round (saturating,
    NaN to zero), scale back (exact)."""
    amax = float(np.max(np.abs(x), initial=0.0))
    if not np.isfinite(amax) or amax == 0:
        return round_to(x, fmt, overflow="saturate", on_nan="zero")
    shift = int(np.floor(np.log2(fmt.max) - np.log2(amax)))  # a difference of logs: max / amax may overflow
    return np.ldexp(round_to(np.ldexp(x, shift), fmt, overflow="saturate", on_nan="zero"), -shift)


def block_operand(quantized: BlockQuantized) -> tuple[np.ndarray, float]:
    """A block-quantized operand as a block-scaled GEMM receives it: elements times their block scales (exact in
    fp32), and the per-tensor scale (NVFP4's; 1 for MX) that the GEMM applies to its result."""
    return quantized.values / quantized.tensor_scale, quantized.tensor_scale  # exact: values were formed exactly
