"""Data for the experiments: the UCI handwritten digits shipped with fpsim, and a teacher–student generator.

Invariant: every split, draw and batch order is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Features (float64) and integer class labels, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def _check_fraction(test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Dataset:
    _check_fraction(test_fraction)
    if not np.isfinite(x).all():
        raise ValueError(f"the {name} data hold NaN or inf; clean them before training")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    return Dataset(name, x[train], y[train], x[test], y[test], int(y.max()) + 1)


def digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The 1797 8×8 UCI handwritten digits (CC BY 4.0; see DIGITS_LICENSE.txt), pixels scaled to [0, 1]."""
    with resources.files(__package__).joinpath("digits.npz").open("rb") as file, np.load(file) as archive:
        images, labels = archive["images"], archive["labels"]
    return _split("digits", images.astype(np.float64) / 16.0, labels.astype(np.int64), test_fraction, seed)


def teacher_student(
    n_samples: int = 2000, n_features: int = 32, n_classes: int = 10, hidden: int = 64, test_fraction: float = 0.25,
    seed: int = 0,
) -> Dataset:  # fmt: skip
    """Gaussian inputs labelled by a random two-layer tanh teacher network: a task a student MLP can learn exactly."""
    for name, value in (
        ("n_samples", n_samples),
        ("n_features", n_features),
        ("n_classes", n_classes),
        ("hidden", hidden),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an int >= 2, got {value!r}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_features))
    first = rng.standard_normal((n_features, hidden)) / np.sqrt(n_features)
    second = rng.standard_normal((hidden, n_classes)) / np.sqrt(hidden)
    labels = np.argmax(np.tanh(x @ first) @ second, axis=1)
    return _split("teacher", x, labels, test_fraction, seed)


def batches(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the batch for `step`: epochs are seeded permutations, drawn in order, batches never cross them."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be an int between 1 and the {n} training examples, got {batch_size!r}")
    per_epoch = n // batch_size
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[index * batch_size : (index + 1) * batch_size]
