"""Reductions under accumulation models: swamping, each order against a step-by-step reference built from
fpsim.add, matmul against torch, model presets and bad input."""

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracle import same_bits

import fpsim
from fpsim import strategies as fst
from fpsim.accumulation import MODELS, ORDERS, _Reduction, general_loop, resolve_model

NATIVE = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16, "fp32": np.float32}


def step_by_step_sum(terms, fmt):
    """The sequential model spelled out with fpsim.add, one call per term."""
    total = fpsim.round(terms[0], fmt)
    for term in terms[1:]:
        total = fpsim.add(total, term, fmt)
    return total


def pairwise_reference(terms, fmt):
    """A balanced tree of fpsim.add, written recursively: adjacent pairs first, an odd term carried up."""
    if len(terms) == 1:
        return fpsim.round(terms[0], fmt)
    level = [fpsim.add(terms[i], terms[i + 1], fmt) for i in range(0, len(terms) - 1, 2)]
    return pairwise_reference(level + list(terms[len(terms) - len(terms) % 2 :]), fmt)


def test_swamping_in_fp16_and_its_cures():
    x = np.full(100_000, 1e-4)  # each term is 1.0001659393310547e-4 once in fp16; the true sum is about 10
    assert fpsim.sum(x, "fp16") == 0.25  # past 0.25, 1e-4 is below half an ulp: every addition is lost
    assert fpsim.sum(x, "fp16", "fp32") == pytest.approx(10.0, rel=2e-3)
    kahan = fpsim.sum(x, "fp16", order="kahan")
    exact = 100_000 * float(fpsim.round(1e-4, "fp16"))
    assert kahan == pytest.approx(10.0, rel=1e-3) and abs(kahan - exact) <= fpsim.FP16.ulp(exact)  # one fp16 step
    assert fpsim.sum(x, "fp16", order="pairwise") == pytest.approx(10.0, rel=1e-3)


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8_e4m3"])
def test_sequential_and_pairwise_orders_match_step_by_step_references(fmt):
    terms = fpsim.round(np.random.default_rng(1).normal(0, 1, 37), fmt)
    assert fpsim.sum(terms, fmt) == step_by_step_sum(terms, fmt)
    assert fpsim.sum(terms, fmt, order="pairwise") == pairwise_reference(list(terms), fmt)


def test_blocked_order_sums_blocks_then_block_sums():
    terms = fpsim.round(np.random.default_rng(2).normal(0, 1, 70), "fp16")
    blocks = [step_by_step_sum(terms[i : i + 32], "fp16") for i in range(0, 70, 32)]
    assert fpsim.sum(terms, "fp16", order="blocked", block=32) == step_by_step_sum(blocks, "fp16")


def test_kahan_order_is_the_compensated_recurrence():
    terms = fpsim.round(np.random.default_rng(3).uniform(0, 1, 50), "fp16")
    total, compensation = float(terms[0]), 0.0
    for term in terms[1:]:
        corrected = fpsim.sub(term, compensation, "fp16")
        new_total = fpsim.add(total, corrected, "fp16")
        compensation = fpsim.sub(fpsim.sub(new_total, total, "fp16"), corrected, "fp16")
        total = new_total
    assert fpsim.sum(terms, "fp16", order="kahan") == total


def test_sum_along_an_axis_is_vectorized_over_the_others():
    x = fpsim.round(np.random.default_rng(4).normal(0, 1, (3, 40, 5)), "bf16")
    along = fpsim.sum(x, "bf16", axis=1)
    assert along.shape == (3, 5)
    assert along[2, 4] == step_by_step_sum(x[2, :, 4], "bf16")
    assert fpsim.sum(x, "bf16", axis=-1).shape == (3, 40) and np.ndim(fpsim.sum(x, "bf16")) == 0


def test_products_exact_or_rounded():
    a, b = np.array([1.0, 1 + 2.0**-10]), np.array([-1.0, 1 + 2.0**-9])
    # -1 + (1 + 2^-10)(1 + 2^-9) = 2^-9 + 2^-10 + 2^-19, an fp16 value: a fused step keeps the 2^-19,
    # while rounding the product first (to 1 + 2^-9 + 2^-10) loses it
    assert fpsim.dot(a, b, "fp16") == 2.0**-9 + 2.0**-10 + 2.0**-19
    assert fpsim.dot(a, b, "fp16", products="rounded") == 2.0**-9 + 2.0**-10


def test_dot_matches_a_loop_of_fma():
    a, b = (fpsim.round(np.random.default_rng(s).normal(0, 1, 30), "bf16") for s in (5, 6))
    total = fpsim.mul(a[0], b[0], "fp32")
    for x, y in zip(a[1:], b[1:]):
        total = fpsim.fma(x, y, total, "fp32")
    assert fpsim.dot(a, b, "bf16", "fp32") == total


def test_fp16_matmul_with_fp32_accumulation_agrees_with_torch_within_the_error_bound():
    rng = np.random.default_rng(7)
    a, b = fpsim.round(rng.standard_normal((64, 96)), "fp16"), fpsim.round(rng.standard_normal((96, 48)), "fp16")
    ours = fpsim.matmul(a, b, model="fp16_fp32acc")
    theirs = (torch.from_numpy(a).half() @ torch.from_numpy(b).half()).double().numpy()
    # torch's summation order is unknown: both are fp32 sums of exact products, each off by at most
    # K·2^-24·Σ|a||b| before the final rounding to fp16, which adds at most one fp16 ulp between them.
    bound = 2 * 96 * 2.0**-24 * (np.abs(a) @ np.abs(b)) + fpsim.FP16.ulp(np.maximum(np.abs(ours), np.abs(theirs)))
    assert (np.abs(ours - theirs) <= bound).all()


@pytest.mark.parametrize("k", [1, 2])
def test_matmul_is_bit_identical_to_torch_where_order_cannot_matter(k):
    rng = np.random.default_rng(k)
    a, b = fpsim.round(rng.standard_normal((32, k)), "fp16"), fpsim.round(rng.standard_normal((k, 32)), "fp16")
    theirs = (torch.from_numpy(a).half() @ torch.from_numpy(b).half()).double().numpy()
    assert np.array_equal(fpsim.matmul(a, b, model="fp16_fp32acc"), theirs)


def test_matmul_shapes_follow_numpy():
    a, b = np.ones((2, 3, 4)), np.ones((4, 5))
    assert fpsim.matmul(a, b, "fp16").shape == (2, 3, 5)
    assert fpsim.matmul(np.ones(4), b, "fp16").shape == (5,) and fpsim.matmul(b.T, np.ones(4), "fp16").shape == (5,)
    assert np.ndim(fpsim.matmul(np.ones(4), np.ones(4), "fp16")) == 0
    assert np.array_equal(fpsim.matmul(a, b, "fp16"), np.full((2, 3, 5), 4.0))


@pytest.mark.parametrize("order", ORDERS)
def test_every_order_sums_small_integers_exactly(order):
    x = np.arange(1, 61, dtype=float)  # every partial sum stays below 2048, where fp16 holds all integers
    assert fpsim.sum(x, "fp16", order=order, block=7) == 1830.0
    assert fpsim.matmul(np.ones((2, 60)), x[:, None], "fp16", order=order, block=7)[0, 0] == 1830.0


def test_presets_and_overrides():
    assert set(MODELS) == {"fp16_fp32acc", "fp16_acc", "bf16_fp32acc", "tf32", "fp32"}
    model = fpsim.accumulation.resolve_model(model="fp16_fp32acc", order="blocked")
    assert (model.inputs, model.accumulate, model.out, model.order, model.name) == (
        fpsim.FP16, fpsim.FP32, fpsim.FP16, "blocked", "custom",
    )  # fmt: skip
    x = np.array([1.0, 2.0**-11])  # lost in fp16 accumulation, kept in fp32 and rounded away again in fp16 out
    assert fpsim.sum(x, model="fp16_acc") == 1.0 and fpsim.sum(x, model="fp16_fp32acc", out="fp32") == 1 + 2.0**-11
    assert fpsim.sum([1.0, 2.0**-11, 2.0**-11], model="tf32") == 1 + 2.0**-10  # fp32 partials hold 2^-11 steps


def test_overflow_policy_reaches_every_rounding_of_a_reduction():
    assert fpsim.sum([500.0, -100.0], "e4m3", "fp32", overflow="saturate") == 352.0  # torch's saturating cast


def test_flags_count_every_rounding_of_a_reduction():
    x = np.full(10, 30000.0)
    total, flags = fpsim.sum(x, "fp16", flags=True)
    assert total == math.inf and flags.overflow == 1 and flags.total == 10  # the first term, then 9 additions
    with fpsim.track_flags() as tracked:
        fpsim.sum(x, "fp16")
    assert tracked.as_dict() == flags.as_dict()


@pytest.mark.parametrize(
    ("call", "result", "counts"),
    [
        # ±1e5 overflow fp16 in the input cast (two roundings that overflow), then inf + -inf is invalid
        (
            lambda: fpsim.sum([1e5, -1e5], "fp16", flags=True),
            np.nan,
            {"total": 4, "inexact": 2, "overflow": 2, "nan": 1, "invalid": 1},
        ),
        (lambda: fpsim.sum([np.inf, -np.inf], "fp16", flags=True), np.nan, {"total": 2, "nan": 1, "invalid": 1}),
        # inf·0 is invalid once; the NaN it makes then only propagates
        (
            lambda: fpsim.dot([np.inf, 1.0], [0.0, 1.0], "fp16", flags=True),
            np.nan,
            {"total": 2, "nan": 2, "invalid": 1},
        ),
        # 500 saturates to 448 (an overflow); -100 is a tie between e4m3's -96 and -104, to even -96 (not counted)
        (
            lambda: fpsim.sum([500.0, -100.0], "e4m3", "fp32", overflow="saturate", flags=True),
            352.0,
            {"total": 3, "inexact": 1, "overflow": 1},
        ),
    ],
)
def test_flags_count_input_casts_that_overflow_and_invalid_steps(call, result, counts):
    value, flags = call()
    assert same_bits(value, result) and {k: v for k, v in flags.as_dict().items() if v} == counts
    with fpsim.track_flags() as tracked:
        call()
    assert tracked.as_dict() == flags.as_dict()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: fpsim.sum([1.0], "fp16", model="h100"), ValueError, "unknown accumulation model 'h100'.*fp16_fp32acc"),
        (lambda: fpsim.sum([1.0], "fp16", order="random"), ValueError, "order must be one of"),
        (lambda: fpsim.dot([1.0], [1.0], "fp16", products="fused"), ValueError, "products must be one of"),
        (lambda: fpsim.sum([1.0], "fp16", order="blocked", block=0), ValueError, "block must be a positive int"),
        (lambda: fpsim.sum([1.0]), ValueError, "give the input format"),
        (lambda: fpsim.sum([], "fp16"), ValueError, "cannot reduce an empty axis"),
        (lambda: fpsim.sum(np.ones((2, 2)), "fp16", axis=2), ValueError, "axis must be an int in"),
        (lambda: fpsim.dot([1.0, 2.0], [1.0], "fp16"), ValueError, "same length"),
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((2, 3)), "fp16"), ValueError, "must match"),
        (lambda: fpsim.matmul(np.ones(2), 3.0, "fp16"), ValueError, "at least one dimension"),
        (lambda: fpsim.matmul([["a"]], [[1.0]], "fp16"), TypeError, "a must hold only real numbers"),
        (lambda: fpsim.matmul([[1.0]], [[1.0]], "fp16", accumulate="fp64"), ValueError, "at most 25"),
        (lambda: fpsim.dot([1.0], [1.0], "fp16", orders="kahan"), TypeError, "unexpected keyword arguments: orders"),
        (lambda: fpsim.dot(2.0, 3.0, "fp16"), ValueError, "dot needs vectors"),
        (lambda: fpsim.sum(3.0, "fp16", axis=0), ValueError, "axis must be an int in"),
        (lambda: fpsim.sum([1.0, np.inf], "e4m3"), ValueError, "x holds inf, but fp8_e4m3 has no infinity"),
        (lambda: fpsim.matmul([[1.0]], [[-np.inf]], "fp4"), ValueError, "b holds -inf, but fp4_e2m1 has no infinity"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def identical(a, b):
    """Bit for bit, NaN included (a reduction's NaN is always the one canonical +NaN)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


# ---- the native fast paths: each equal to the general loop -------------------------------------------
@pytest.mark.parametrize("name", NATIVE)
def test_native_additions_are_fpsims_correctly_rounded_ones(name):
    """The step every fast path relies on: the dtype's + and − are fpsim.add and fpsim.sub (themselves checked
    against MPFR). Every fp16 and bf16 code (2^16 fp32 ones) meets 24 partners: random codes, its neighbour
    code, its negation, itself and its half."""
    dtype, codes, rng = NATIVE[name], np.uint32 if name == "fp32" else np.uint16, np.random.default_rng(8)
    bits = np.iinfo(codes).bits
    a = (rng.integers(0, 2**bits, 2**16) if name == "fp32" else np.arange(2**16)).astype(codes)
    random_partners = rng.integers(0, 2**bits, (20, 1)).astype(codes)
    with np.errstate(all="ignore"):  # signaling NaN codes and overflows, on purpose
        specific = [(a + codes(1)).view(dtype), -a.view(dtype), a.view(dtype), a.view(dtype) / 2]
        partners = np.concatenate([np.broadcast_to(random_partners, (20, a.size)).view(dtype), specific])
        a = a.view(dtype)
        wide, partners_wide = a.astype(np.float64), partners.astype(np.float64)
        for op, reference in ((np.add, fpsim.add), (np.subtract, fpsim.sub)):
            native = op(a, partners).astype(np.float64)
            expected = reference(wide, partners_wide, name)
            assert same_bits(native, expected).all(), f"{np.count_nonzero(~same_bits(native, expected))} differ"
        if name == "fp16":  # the sums are exact in float64 (fp16 spans 40 binades): count the ties among them
            exact = (wide + partners_wide)[np.abs(wide + partners_wide) <= 65504]
            below, above = fpsim.round(exact, "fp16", "down"), fpsim.round(exact, "fp16", "up")
            assert np.count_nonzero((below != above) & (exact == below / 2 + above / 2)) > 1000


@pytest.mark.parametrize(
    ("options", "dtype"),
    [
        ({"fmt": "fp16"}, np.float16),
        ({"fmt": "fp16", "order": "kahan"}, np.float16),
        ({"model": "fp16_fp32acc"}, np.float32),
        ({"model": "bf16_fp32acc", "products": "rounded"}, np.float32),
        ({"fmt": "bf16"}, ml_dtypes.bfloat16),
        ({"fmt": "fp32"}, np.float32),
        ({"fmt": "e4m3", "accumulate": "fp32"}, np.float32),
        ({"fmt": "fp16", "order": "pairwise"}, None),  # already vectorized
        ({"fmt": "fp16", "order": "blocked"}, None),
        ({"fmt": "fp16", "rounding": "up"}, None),  # other modes: the general loop
        ({"fmt": "fp16", "overflow": "saturate"}, None),  # other overflow policies too
        ({"fmt": "fp16", "flags": True}, None),  # flags are counted by the general loop
        ({"fmt": "tf32"}, None),  # no numpy dtype
        ({"fmt": "e4m3"}, None),
    ],
)
def test_fast_paths_are_taken_exactly_where_promised(options, dtype):
    options = dict(options)
    rounding, overflow, flags = (
        options.pop("rounding", "nearest_even"),
        options.pop("overflow", None),
        options.pop("flags", False),
    )
    model = resolve_model(**options)
    assert _Reduction(model, rounding, None, flags, overflow).native == (None if dtype is None else np.dtype(dtype))
    with fpsim.track_flags():  # a track_flags block needs the counts too
        assert _Reduction(model, rounding, None, False, overflow).native is None
    with general_loop():
        assert _Reduction(model, rounding, None, False, overflow).native is None


def ieee_cases(fmt):
    """(terms, their sequential sum) by IEEE 754's rules, from p, emin and emax alone."""
    p, emin, emax = fmt.precision, fmt.emin, fmt.emax
    largest, half_ulp_at_max = (2 - 2.0 ** (1 - p)) * 2.0**emax, 2.0 ** (emax - p)
    least = 2.0 ** (emin - p + 1)  # the smallest subnormal
    return [
        ([1.0, 2.0**-p], 1.0),  # a tie: 1 is even
        ([1 + 2.0 ** (1 - p), 2.0**-p], 1 + 2.0 ** (2 - p)),  # a tie: 1 + 2^(1-p) is odd, so up
        ([1.0, 2.0**-p, 2.0**-p], {"sequential": 1.0, "kahan": 1 + 2.0 ** (1 - p)}),  # Kahan keeps what ties lose
        ([largest, half_ulp_at_max], math.inf),  # the tie at max rounds to even: 2^(emax+1), past max
        ([largest, half_ulp_at_max / 2], largest),
        # inf absorbs what follows; Kahan's compensation (-inf + largest) - (-largest) is -inf, then inf - inf
        ([-largest, -largest, largest], {"sequential": -math.inf, "kahan": math.nan}),
        ([least, least], 2 * least),  # subnormals add exactly
        ([2.0**emin, -least], 2.0**emin - least),  # into the subnormal range, exactly
        ([1.0, math.nan], math.nan),
        ([math.inf, -math.inf, 1.0], math.nan),  # invalid
        ([-0.0, -0.0], -0.0),
        ([-0.0, 0.0], 0.0),
        ([1.0, -1.0], 0.0),  # an exact zero sum is +0 in nearest_even
        ([-0.0], -0.0),
    ]


@pytest.mark.parametrize("order", ["sequential", "kahan"])
@pytest.mark.parametrize("name", NATIVE)
def test_fast_paths_follow_ieee_rules_on_ties_overflow_subnormals_nan_and_zeros(name, order):
    fmt = fpsim.get_format(name)
    for terms, expected in ieee_cases(fmt):
        expected = expected[order] if isinstance(expected, dict) else expected
        fast = fpsim.sum(terms, fmt, order=order)
        assert identical(fast, np.nan if math.isnan(expected) else expected), (terms, fast, expected)
        assert identical(fpsim.sum(terms, fmt, order=order, flags=True)[0], fast)  # the general loop agrees


@st.composite
def reductions(draw):
    """A native accumulate format, inputs it holds (specials included), a shape, an order and a product policy."""
    accumulate = draw(st.sampled_from(list(NATIVE)))
    inputs = draw(
        st.sampled_from({"fp16": ["fp16", "e5m2"], "bf16": ["bf16", "e4m3"], "fp32": list(NATIVE)}[accumulate])
    )
    rows, length = draw(st.integers(1, 2)), draw(st.integers(1, 16))
    terms = st.one_of(fst.values(inputs, allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, -1.0]))
    values = draw(st.lists(terms, min_size=rows * length, max_size=rows * length))
    order = draw(st.sampled_from(["sequential", "kahan"]))
    return inputs, accumulate, np.reshape(values, (rows, length)), order


@given(reductions(), st.sampled_from(["sum", "dot", "dot rounded"]))
def test_fast_paths_equal_the_general_loop(case, reduction):
    inputs, accumulate, x, order = case
    with np.errstate(over="ignore", invalid="ignore"):  # x * x of the test's own inputs
        call = {
            "sum": lambda: fpsim.sum(x, inputs, accumulate, axis=1, order=order),
            "dot": lambda: fpsim.dot(x, x[::-1], inputs, accumulate, order=order),
            "dot rounded": lambda: fpsim.dot(x, x, inputs, accumulate, order=order, products="rounded"),
        }[reduction]
        fast = call()
        with general_loop():
            assert identical(fast, call())


@pytest.mark.parametrize(
    ("model", "products"), [("bf16_fp32acc", "exact"), ("fp16_acc", "exact"), ("fp16_acc", "rounded")]
)
def test_fast_matmul_equals_the_general_loop_across_blocks_and_fallbacks(model, products):
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((300, 8)), rng.standard_normal((8, 300))  # 90000 products a term: one k a block
    a[0, 5], b[5, 0] = 2.0**-133, 2.0**-20  # in bf16, a product of 2^-153: below fp32, so the general loop takes k >= 5
    fast = fpsim.matmul(a, b, model=model, products=products)  # exact fp16 products are rarely fp16: fallback at k=1
    with general_loop():
        assert identical(fast, fpsim.matmul(a, b, model=model, products=products))
