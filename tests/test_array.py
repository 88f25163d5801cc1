"""FPArray: every ufunc and reduction agrees with the functional API, formats promote, flags accumulate."""

import numpy as np
import pytest
from oracle import same_bits

import fpsim
from fpsim.array import contains, promote


@pytest.fixture
def x():
    return fpsim.array([0.1, -0.2, 0.3, 1e-6], "fp16")


def test_creation_rounds_once_and_keeps_values_read_only(x):
    assert same_bits(x.values, fpsim.round([0.1, -0.2, 0.3, 1e-6], "fp16")).all()
    assert x.format is fpsim.FP16 and x.shape == (4,) and x.ndim == 1 and x.size == 4 and len(x) == 4
    with pytest.raises(ValueError, match="read-only"):
        x.values[0] = 1.0
    assert np.array_equal(x.bits, fpsim.encode(x.values, "fp16"))


@pytest.mark.parametrize(
    ("expression", "reference"),
    [
        (lambda a, b: a + b, lambda a, b: fpsim.add(a, b, "fp16")),
        (lambda a, b: a - b, lambda a, b: fpsim.sub(a, b, "fp16")),
        (lambda a, b: a * b, lambda a, b: fpsim.mul(a, b, "fp16")),
        (lambda a, b: a / b, lambda a, b: fpsim.div(a, b, "fp16")),
        (lambda a, b: np.sqrt(np.abs(a)), lambda a, b: fpsim.sqrt(np.abs(a), "fp16")),
        (lambda a, b: np.square(a), lambda a, b: fpsim.mul(a, a, "fp16")),
        (lambda a, b: -a, lambda a, b: -a),
        (lambda a, b: abs(a), lambda a, b: np.abs(a)),
        (lambda a, b: a + 1000, lambda a, b: fpsim.add(a, 1000, "fp16")),
        (lambda a, b: 3 * a, lambda a, b: fpsim.mul(3, a, "fp16")),
        (lambda a, b: np.exp(a), lambda a, b: fpsim.round(np.exp(a), "fp16")),
        (lambda a, b: np.log(b * b), lambda a, b: fpsim.round(np.log(fpsim.mul(b, b, "fp16")), "fp16")),
    ],
)
def test_ufuncs_round_every_result_like_the_functional_api(x, expression, reference):
    y = fpsim.array([3.0, 7.0, -0.5, 2.0], "fp16")
    result = expression(x, y)
    assert isinstance(result, fpsim.FPArray) and result.format is fpsim.FP16
    assert same_bits(result.values, reference(x.values, y.values)).all()


def test_comparisons_and_indexing(x):
    assert (x > 0).tolist() == [True, False, True, True] and (x == x).all()
    assert (x == 0.1).tolist() == [True, False, False, False]  # 0.1 is cast to fp16 first, as numpy's float16 does
    assert not fpsim.array([0.0], "fp16") and fpsim.array([2.0], "fp16")
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x)
    assert isinstance(x[1:], fpsim.FPArray) and x[1:].tolist() == x.values[1:].tolist()
    assert float(x[0]) == 0.0999755859375
    x[0] = 0.1001
    assert x[0].tolist() == float(fpsim.round(0.1001, "fp16"))
    assert [float(v) for v in x] == x.tolist()


def test_reductions_go_through_the_accumulation_model():
    values = np.full(5000, 1e-3)
    plain = fpsim.array(values, "fp16")
    tensor_core = fpsim.array(values, "fp16", model="fp16_fp32acc")
    assert float(plain.sum()) == fpsim.sum(values, "fp16") and float(np.sum(plain)) == float(plain.sum())
    assert float(tensor_core.sum()) == fpsim.sum(values, model="fp16_fp32acc")
    assert float(tensor_core.sum()) > float(plain.sum())  # fp32 partial sums keep what fp16 swamps
    assert float(np.mean(tensor_core)) == fpsim.round(float(tensor_core.sum()) / 5000, "fp16")  # 5000 exact
    many = fpsim.array(np.full(70_000, 1e-3), "fp16", model="fp16_fp32acc")
    assert float(many.mean()) == pytest.approx(1e-3, rel=1e-3)  # the count is not rounded to fp16 (inf)
    m = fpsim.array(np.arange(6.0).reshape(2, 3), "bf16", model="bf16_fp32acc")
    assert np.array_equal((m @ m.T).values, fpsim.matmul(m.values, m.values.T, model="bf16_fp32acc"))
    assert np.array_equal(m.dot(m.T).values, (m @ m.T).values) and m.sum(axis=0).shape == (3,)
    v = fpsim.array([1.0, 2.0, 3.0], "fp16")
    assert float(v.dot(v)) == 14.0 and float(np.dot(v, v)) == 14.0 and float(np.dot(np.ones(3), v)) == 6.0
    single = fpsim.array([[1 + 2.0**-12]], "fp32", model="tf32")  # the model rounds inputs to tf32 ...
    assert (single @ np.ones((1, 1))).tolist() == [[1.0]] and (single @ np.ones((1, 1))).format is fpsim.FP32


def test_mixed_formats_promote_like_torch():
    half, brain, single = fpsim.array([1.5], "fp16"), fpsim.array([1.5], "bf16"), fpsim.array([1.5], "fp32")
    assert (half + brain).format is fpsim.FP32  # neither holds the other
    assert (half + single).format is fpsim.FP32 and (fpsim.array([1.0], "e4m3") * half).format is fpsim.FP16
    assert promote(fpsim.FP8_E5M2, fpsim.FP8_E4M3) is fpsim.FP16
    assert contains(fpsim.FP32, fpsim.BF16) and not contains(fpsim.BF16, fpsim.FP16)


def test_flags_accumulate_inside_track_flags(x):
    with fpsim.track_flags() as flags:
        y = x * 1e-4  # 1e-6·1e-4 underflows to zero; the scalar's own cast does not count
        y.sum()
    assert flags.underflow >= 1 and flags.total == 4 + 4  # four products, then a sum of four terms


def test_repr_explain_and_conversion(x):
    assert repr(x).startswith("FPArray([") and repr(x).endswith("format='fp16')")
    assert x.explain(0).code == 0x2E66 and x.to("bf16").format is fpsim.BF16
    assert x.to("bf16").tolist() == fpsim.round(x.values, "bf16").tolist()
    with pytest.raises(ValueError, match="index must select one element"):
        x.explain(slice(0, 2))


def test_exp_overflow_is_inf_without_a_warning():
    assert np.exp(fpsim.array([1000.0], "fp16")).tolist() == [np.inf]


def test_unsupported_operations_raise_type_errors(x):
    with pytest.raises(TypeError):
        np.sin(x)
    with pytest.raises(TypeError):
        np.add(x, x, out=np.empty(4))
    with pytest.raises(TypeError):
        np.concatenate([x, x])
    with pytest.raises(ValueError, match="unknown format"):
        fpsim.array([1.0], "fp12")
    with pytest.raises(ValueError, match="unknown accumulation model"):
        fpsim.array([1.0], "fp16", model="gpu")
