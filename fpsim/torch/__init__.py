"""fpsim on torch tensors: exact rounding to any Format on any device, matrix-unit and accumulation-model matmuls,
and fake quantization of torch models.

Invariant: every value, code and flag count equals the NumPy codec's (fpsim.round, fpsim.encode) bit for bit.
`import fpsim` never loads torch; importing this package without torch raises fpsim._extras.MissingExtraError (an
ImportError with name 'torch') naming the extra.
"""

from fpsim._extras import MissingExtraError

try:
    import torch as _torch  # noqa: F401 - fail here, once, with the install hint
except ImportError as err:
    raise MissingExtraError(
        "fpsim.torch needs PyTorch; install it with: pip install fpsim[torch]", name="torch"
    ) from err

import sys
import types

from fpsim.torch.blocks import quantize_blocks
from fpsim.torch.codec import CLASSES, classify, decode, encode, round
from fpsim.torch.matmul import matmul
from fpsim.torch.native import NATIVE_CASTS, native_overflow
from fpsim.torch.quantize import Quantize, block_matmul, fake_quantize, quantize

_LAZY = {"Audit": "audit", "audit": "audit", "BenchReport": "bench", "bench": "bench"}  # name -> its submodule


def __getattr__(name: str) -> object:
    """audit and bench load on first use (with the figures they import, ~140 ms), as the eager import gave them."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"fpsim.torch.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fpsim.torch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        if name in ("audit", "bench") and isinstance(value, types.ModuleType):
            value = getattr(value, name)  # importing the submodule binds its function here, not the module
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "CLASSES",
    "NATIVE_CASTS",
    "Audit",
    "BenchReport",
    "Quantize",
    "audit",
    "bench",
    "block_matmul",
    "classify",
    "decode",
    "encode",
    "fake_quantize",
    "matmul",
    "native_overflow",
    "quantize",
    "quantize_blocks",
    "round",
]
