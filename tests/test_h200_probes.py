"""What an H200 did (benchmarks/results/gpu_check_h200.json, "tensor core probes"), checked against the
matrix-unit models of both backends: the NumPy `fpsim.dot` and `fpsim.torch.matmul`."""

from __future__ import annotations

import numpy as np
import pytest

import fpsim


def numpy_dot(a: np.ndarray, b: np.ndarray, preset: str, out: str) -> float:
    return float(fpsim.dot(a, b, model=preset, out=out))


def torch_dot(a: np.ndarray, b: np.ndarray, preset: str, out: str) -> float:
    torch = pytest.importorskip("torch")
    from fpsim.torch import matmul

    return float(matmul(torch.from_numpy(a), torch.from_numpy(b), preset, out=out))


BACKENDS = pytest.mark.parametrize("dot", [numpy_dot, torch_dot], ids=["numpy", "torch"])


def frac_probe(t: int, k: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """1·1 + 8 products of 2^-t, each 2^-(t//2) · 2^-(t - t//2) so that fp16 holds the factors."""
    a, b = np.zeros(k), np.zeros(k)
    a[0], b[0], a[1:9], b[1:9] = 1.0, 1.0, 2.0 ** -(t // 2), 2.0 ** -(t - t // 2)
    return a, b


@BACKENDS
@pytest.mark.parametrize(
    ("preset", "out", "last_kept"),
    [
        ("h200_fp16", "fp32", 25),
        ("h200_fp16", "fp16", 13),
        ("h200_bf16", "fp32", 25),
        ("h200_bf16", "bf16", 10),
        ("h200_fp8_e4m3", "fp32", 13),
    ],
)
def test_fraction_probe(dot, preset, out, last_kept):
    """The chip keeps 8·2^-t up to t = last_kept (25 for fp16 and bf16 into fp32, 13 into fp16, 10 into bf16,
    13 for fp8) and loses it beyond."""
    for t in range(8, 30):
        want = 1 + 2.0 ** (3 - t) if t <= last_kept else 1.0
        assert dot(*frac_probe(t), preset, out) == want, t


@BACKENDS
@pytest.mark.parametrize(("preset", "out"), [("h200_fp16", "fp32"), ("h200_fp16", "fp16"), ("h200_bf16", "fp32")])
def test_group_probe(dot, preset, out):
    """1 + 2^-24 − 1 with the −1 at position p keeps 2^-24 for p in 2..15 (one group of 16 holds all three) and
    loses it from 16 (the −1 joins the next group, after 1 + 2^-24 was normalized)."""
    for p in range(2, 64):
        a = np.zeros(64)
        a[0], a[1], a[p] = 1.0, 2.0**-24, -1.0
        assert dot(a, np.ones(64), preset, out) == (2.0**-24 if p < 16 else 0.0), p
