"""Torch's process-wide fp32 math settings, held for a block: fp32 matmuls and convolutions in IEEE fp32 (or TF32).

Invariant: on leaving the block every fp32 precision flag reads as it did on entry, through whichever API the caller
used (torch.set_float32_matmul_precision, the legacy allow_tf32 flags, or the per-backend fp32_precision).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import reduce

import torch

__all__ = ["first_line", "fp32_matmul"]

# torch's per-backend fp32_precision settings (torch >= 2.9), parents before children: a parent's value is the
# default of its children, so restoring parents first and children last rebuilds the saved state exactly
_PARENTS = ("", "cuda", "cudnn", "mkldnn")
_OPERATIONS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _backend(path: str) -> object:
    return reduce(getattr, filter(None, path.split(".")), torch.backends)


def _settings() -> list[str]:
    return [path for path in (*_PARENTS, *_OPERATIONS) if hasattr(_backend(path), "fp32_precision")]


@contextmanager
def fp32_matmul(tf32: bool = False) -> Iterator[None]:
    """fp32 matmuls, convolutions and RNNs on every backend (cuBLAS, cuDNN, oneDNN) in IEEE fp32, or in TF32 with
    `tf32=True`, for the block; every flag is restored after it.

    Where torch has the per-backend fp32_precision API (2.9 and later) only it is written: the legacy allow_tf32
    flags and torch.set_float32_matmul_precision are views of the same state, and writing both kinds makes torch
    refuse to read them back ("mix of the legacy and new APIs"); inside the block those legacy readers may raise.
    """
    settings = _settings()
    with _per_backend(settings, tf32) if settings else _legacy(tf32):
        yield


@contextmanager
def _per_backend(settings: list[str], tf32: bool) -> Iterator[None]:
    saved = {path: _backend(path).fp32_precision for path in settings}
    try:
        for path in _OPERATIONS:
            if path in saved:
                _backend(path).fp32_precision = "tf32" if tf32 else "ieee"  # oneDNN's "bf16" (precision "medium") off
        yield
    finally:
        for path, value in saved.items():  # parents first: setting a parent resets its children
            _backend(path).fp32_precision = value


@contextmanager
def _legacy(tf32: bool) -> Iterator[None]:
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision()
    try:
        cuda.allow_tf32 = cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        yield
    finally:
        torch.set_float32_matmul_precision(saved[2])
        cuda.allow_tf32, cudnn.allow_tf32 = saved[:2]


def first_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (torch's messages run to pages)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
