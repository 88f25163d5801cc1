"""Coercion of user input (scalars, array-likes, numpy, ml_dtypes and torch) to exact float64 values or integer codes.

Invariant: nothing is rounded on the way in; input that float64 (or a code width) cannot hold exactly is refused.
"""

from __future__ import annotations

import numbers

import numpy as np

_EXACT_INT = 2**53  # every integer of magnitude <= 2^53 is a float64


def _is_torch_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _from_torch(x: object, name: str) -> np.ndarray:
    import torch

    tensor = x.detach()
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got a torch tensor of {tensor.dtype}")
    wide = torch.float64 if tensor.is_floating_point() else torch.int64  # both widenings are exact
    return tensor.to(device="cpu", dtype=wide).numpy()


def _check_integers_fit(array: np.ndarray, name: str) -> None:
    # compare as integers: converting to float64 first would round 2^53 + 1 down to 2^53 and let it pass
    if array.size and (int(array.max()) > _EXACT_INT or int(array.min()) < -_EXACT_INT):
        raise ValueError(f"{name} holds integers beyond 2^53 that float64 cannot hold exactly; pass floats")


def _check_dtype(array: np.ndarray, name: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize <= 8:
        return array
    if array.dtype.type.__module__ == "ml_dtypes":  # bfloat16, float8/6/4: all widen exactly
        return array
    if kind in "iu":
        _check_integers_fit(array, name)
        return array.astype(np.float64)
    if kind == "f":
        raise TypeError(f"{name} has dtype {array.dtype}, wider than float64; convert it to float64 explicitly")
    raise TypeError(f"{name} must hold real numbers (int or float), got dtype {array.dtype}")


def _from_objects(items: list, shape: tuple, name: str) -> np.ndarray:
    """Python numbers of any kind (int, float, Fraction, numpy scalars), each checked for exactness."""
    for v in items:
        if not isinstance(v, numbers.Real) or isinstance(v, (bool, np.bool_)):
            kind = "a ragged nested list" if isinstance(v, (list, tuple)) else type(v).__name__
            raise TypeError(f"{name} must hold only real numbers (int, float, Fraction); got {kind}")
        if isinstance(v, (int, np.integer)):
            if abs(int(v)) > _EXACT_INT:
                raise ValueError(f"{name} holds the integer {v}, beyond 2^53: float64 cannot hold it exactly")
        elif float(v) != v and v == v:  # Fraction(1, 3), a long double: not a float64 (NaN is fine)
            raise ValueError(f"{name} holds {v!r}, which float64 cannot hold exactly; round it to a float first")
    return np.array([float(v) for v in items], dtype=np.float64).reshape(shape)


def _is_masked(x: object) -> bool:
    if isinstance(x, (list, tuple)):
        return any(map(_is_masked, x))
    return isinstance(x, np.ma.MaskedArray)


def _refuse_masked(x: object, name: str) -> None:
    # np.asarray(masked) returns the data under the mask as if it were valid: refuse rather than drop the mask
    if _is_masked(x):
        raise TypeError(
            f"{name} is or holds a numpy masked array, and fpsim keeps no masks: pass {name}.filled(value) to "
            f"choose what masked elements become, or {name}.compressed() to drop them"
        )


def as_real_array(x: object, name: str) -> tuple[np.ndarray, bool]:
    """Return (array whose dtype widens exactly to float64, whether x was a scalar)."""
    _refuse_masked(x, name)
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got bool")
    if isinstance(x, (np.floating, np.integer)):
        return _check_dtype(np.asarray(x), name), True
    if isinstance(x, numbers.Real):  # Python int and float, Fraction, Decimal: checked one by one
        return _from_objects([x], (), name), True
    if _is_torch_tensor(x):
        return _check_dtype(_from_torch(x, name), name), False
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(x).__name__}")
    try:  # lists go through object arrays so that each item is checked: numpy would round 2^60 + 1 silently
        array = np.array(x, dtype=object) if isinstance(x, (list, tuple)) else np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or a rectangular array of numbers: {err}") from None
    if array.dtype == object:
        return _from_objects(array.reshape(-1).tolist(), array.shape, name), False
    return _check_dtype(array, name), False


def as_float64(x: object, name: str) -> tuple[np.ndarray, bool]:
    """Like `as_real_array`, widened to a float64 array (a copy when the dtype differs)."""
    array, scalar = as_real_array(x, name)
    return np.asarray(array, dtype=np.float64), scalar


def as_codes(x: object, bits: int, name: str) -> tuple[np.ndarray, bool]:
    """Bit patterns as a uint64 array, each checked to lie in [0, 2^bits); and whether x was a scalar."""
    _refuse_masked(x, name)
    if isinstance(x, (bool, np.bool_, float, np.floating)):
        raise TypeError(f"{name} must be non-negative integers (bit patterns), got {type(x).__name__}")
    if _is_torch_tensor(x):
        x = x.detach().cpu().numpy()
    try:  # Python ints go through object arrays: numpy would turn [2**63 + 1, 1] into float64
        array = np.array(x, dtype=object) if isinstance(x, (list, tuple, int)) else np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an integer or a rectangular array of integers: {err}") from None
    if array.dtype == object:
        items = array.reshape(-1).tolist()
        if any(isinstance(v, (list, tuple)) for v in items):
            raise TypeError(f"{name} must be a rectangular array of integers, got a ragged nested list")
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
            raise TypeError(f"{name} must be non-negative integers (bit patterns)")
        array = np.array([int(v) for v in items], dtype=object).reshape(array.shape)
    elif array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be non-negative integers (bit patterns), got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= 2**bits):
        raise ValueError(f"{name} must be in [0, 2^{bits}); got values from {array.min()} to {array.max()}")
    return array.astype(np.uint64), isinstance(x, (int, np.integer))


def restore_scalar(array: np.ndarray, scalar: bool):
    """Give a numpy scalar back when the input was a scalar."""
    return array[()] if scalar else array
