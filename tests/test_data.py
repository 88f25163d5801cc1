"""Data: the shipped digits, the teacher–student generator, seeded splits and batches."""

import numpy as np
import pytest

from fpsim import data


def test_digits_ship_with_the_package():
    d = data.digits()
    assert len(d.x_train) + len(d.x_test) == 1797 and d.n_features == 64 and d.n_classes == 10
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0  # pixels 0..16 scaled by 1/16
    assert len(d.x_test) == round(0.25 * 1797) and set(np.unique(d.y_train)) == set(range(10))


def test_splits_and_batches_are_functions_of_the_seed():
    a, b, c = data.digits(seed=1), data.digits(seed=1), data.digits(seed=2)
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)
    epoch = np.concatenate([data.batches(100, 10, seed=3, step=s) for s in range(10)])
    assert sorted(epoch) == list(range(100))  # one epoch visits every example once
    assert np.array_equal(data.batches(100, 10, 3, 12), data.batches(100, 10, 3, 12))
    assert not np.array_equal(data.batches(100, 10, 3, 2), data.batches(100, 10, 3, 12))  # a new epoch reshuffles


def test_teacher_student_is_learnable_and_seeded():
    d = data.teacher_student(n_samples=400, n_features=8, n_classes=3, seed=5)
    assert d.x_train.shape == (300, 8) and d.n_classes == 3
    assert np.array_equal(d.y_test, data.teacher_student(n_samples=400, n_features=8, n_classes=3, seed=5).y_test)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: data.digits(test_fraction=1.0), "test_fraction must be between 0 and 1"),
        (lambda: data.teacher_student(n_samples=1), "n_samples must be an int >= 2"),
        (lambda: data.batches(10, 0, 0, 0), "batch_size must be an int between 1 and the 10"),
        (lambda: data.batches(10, 11, 0, 0), "batch_size must be an int between 1 and the 10"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
