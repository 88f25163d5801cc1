"""Coercion of user input (scalars, array-likes, numpy, ml_dtypes and torch) to arrays that convert exactly to float64.

Invariant: nothing is rounded on the way in; input that float64 cannot hold exactly is refused.
"""

from __future__ import annotations

import numbers

import numpy as np

_EXACT_INT = 2**53  # every integer of magnitude <= 2^53 is a float64


def _from_torch(x: object, name: str) -> np.ndarray:
    import torch

    tensor = x.detach()
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got a torch tensor of {tensor.dtype}")
    wide = torch.float64 if tensor.is_floating_point() else torch.int64  # both widenings are exact
    return tensor.to(device="cpu", dtype=wide).numpy()


def _check_dtype(array: np.ndarray, name: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize <= 8:
        return array
    if array.dtype.type.__module__ == "ml_dtypes":  # bfloat16, float8/6/4: all widen exactly
        return array
    if kind in "iu":
        if array.size and np.abs(array.astype(np.float64)).max() > _EXACT_INT:
            raise ValueError(f"{name} holds integers beyond 2^53 that float64 cannot hold exactly; pass floats")
        return array.astype(np.float64)
    if kind == "f":
        raise TypeError(f"{name} has dtype {array.dtype}, wider than float64; convert it to float64 explicitly")
    raise TypeError(f"{name} must hold real numbers (int or float), got dtype {array.dtype}")


def as_real_array(x: object, name: str) -> tuple[np.ndarray, bool]:
    """Return (array whose dtype widens exactly to float64, whether x was a scalar)."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got bool")
    if isinstance(x, int) and abs(x) > _EXACT_INT:
        raise ValueError(f"{name}={x} is an integer beyond 2^53 that float64 cannot hold exactly; pass a float")
    if isinstance(x, (int, float, np.integer, np.floating)):
        return _check_dtype(np.asarray(x), name), True
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return _from_torch(x, name), False
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(x).__name__}")
    try:  # lists go through object arrays so that each item is checked: numpy would round 2^60 + 1 silently
        array = np.array(x, dtype=object) if isinstance(x, (list, tuple)) else np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or an array of numbers: {err}") from None
    if array.dtype == object:  # mixed Python objects: numpy would turn None into NaN, so check each one
        items = array.reshape(-1).tolist()
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
            raise TypeError(f"{name} must hold only real numbers (no None, str or bool)")
        if any(isinstance(v, int) and abs(v) > _EXACT_INT for v in items):
            raise ValueError(f"{name} holds integers beyond 2^53 that float64 cannot hold exactly; pass floats")
        return np.array(items, dtype=np.float64).reshape(array.shape), False
    return _check_dtype(array, name), False


def as_float64(x: object, name: str) -> tuple[np.ndarray, bool]:
    """Like `as_real_array`, widened to a float64 array (a copy when the dtype differs)."""
    array, scalar = as_real_array(x, name)
    return np.asarray(array, dtype=np.float64), scalar


def restore_scalar(array: np.ndarray, scalar: bool):
    """Give a numpy scalar back when the input was a scalar."""
    return array[()] if scalar else array
