"""fpsim.torch's codec: bit for bit the NumPy codec (values, codes, flags) and torch's own casts, on wide-range
samples, every code and midpoint of the small formats, custom formats; stochastic rounding; bad input; no torch."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from below_float64 import exact_decode
from oracle import format_range_float64, fraction_round, same_bits

import fpsim
import fpsim.torch as ft
from fpsim.formats import PRESETS, Format

DETERMINISTIC = ["nearest_even", "nearest_away", "toward_zero", "up", "down", "odd"]
SMALL = [name for name, fmt in PRESETS.items() if fmt.bits <= 16]
CUSTOM = {  # each exercises a path of its own
    "flush-to-zero": Format("ftz_e5m4", 5, 4, subnormals=False),
    "negative bias": Format("negbias_e4m3", 4, 3, bias=-3),  # every quantum exceeds 1
    "no inf, all-ones NaN": Format("e3m4fn", 3, 4, has_inf=False, nan="all_ones"),
    "no NaN, no mantissa": Format("e4m0", 4, 0, has_inf=False, nan="none"),
    "normals below float32's": Format("e8m3_bias129", 8, 3, bias=129),  # two-step scaling in float32
    "wider than float32": Format("e5m30", 5, 30),  # float32 input, float64 work; its max is no float32
    "normals below float64's": Format("e11m10_bias1030", 11, 10, bias=1030),
}
# normals below float64's (its subnormals): two-step scaling in float64; checked against exact rationals and the
# NumPy codec alike
BELOW_FLOAT64 = CUSTOM["normals below float64's"]
N_WIDE = 100_000  # per case; the heavy marker runs 10^6
SPECIALS = [math.inf, -math.inf, math.nan, -math.nan, 0.0, -0.0]


def wide_values(fmt: Format, n: int, dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """Half spread over the format's range (below its least subnormal to past max), half over the whole range
    of the input dtype (its subnormals to its overflow), plus ±inf, NaN of both signs and ±0."""
    rng = np.random.default_rng(seed)
    low, high = (-152, 128) if dtype == np.float32 else (-1077, 1024)
    size = n - n // 2
    with np.errstate(over="ignore"):  # past the dtype's range the sample is ±inf, on purpose
        whole = rng.choice([-1.0, 1.0], size) * 2.0 ** rng.uniform(low, high, size) * (1 + rng.random(size))
        return np.concatenate([format_range_float64(fmt, n // 2, seed), whole, SPECIALS]).astype(dtype)


def assert_same_bits(ours: torch.Tensor, reference: np.ndarray) -> None:
    """Equal values, equal signs (-0 and the sign of NaN included)."""
    got = ours.cpu().double().numpy()
    assert same_bits(got, reference).all()
    assert np.array_equal(np.signbit(got), np.signbit(reference))


def check_round(x: np.ndarray, fmt, mode: str, **options) -> None:
    """fpsim.torch.round equals fpsim.round in values and flags, with the dtype policy."""
    ours, flags = ft.round(torch.from_numpy(x), fmt, mode, flags=True, **options)
    reference, reference_flags = fpsim.round(x, fmt, mode, flags=True, **options)
    assert ours.dtype == (torch.float64 if x.dtype == np.float64 else torch.float32)
    assert_same_bits(ours, reference)
    assert flags == reference_flags


# ---- against the NumPy codec --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("name", PRESETS)
def test_wide_range_values_round_like_the_numpy_codec(name, mode, dtype):
    check_round(wide_values(PRESETS[name], N_WIDE, dtype), name, mode, on_nan="zero")


@pytest.mark.heavy
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("name", PRESETS)
def test_a_million_wide_range_values_round_like_the_numpy_codec(name, mode, dtype):
    check_round(wide_values(PRESETS[name], 10**6, dtype, seed=1), name, mode, on_nan="zero")


def input_dtypes(fmt: Format) -> tuple:
    """float32 input gives float32 output: a format whose max float32 lacks is tested with float64 (and below)."""
    return (np.float32, np.float64) if fmt is not CUSTOM["wider than float32"] else (np.float64,)


def policies(fmt: Format) -> list[str]:
    """The overflow policies a format can honour: 'inf' needs an infinity, 'nan' a NaN."""
    return [p for p in ("inf", "saturate", "nan") if (p != "inf" or fmt.has_inf) and (p != "nan" or fmt.nan != "none")]


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("name", [*PRESETS, *CUSTOM])
def test_every_overflow_policy_and_nan_mapping_rounds_like_the_numpy_codec(name, mode):
    fmt = PRESETS.get(name) or CUSTOM[name]
    for dtype in input_dtypes(fmt):
        x = wide_values(fmt, 4000, dtype, seed=2)
        for policy in policies(fmt):
            for on_nan in ("zero", "ml_dtypes"):
                check_round(x, fmt, mode, overflow=policy, on_nan=on_nan)


def every_code_and_midpoint(fmt: Format) -> np.ndarray:
    """Every value of a small format (both signs, specials), every midpoint between neighbours and past max,
    and the float64 neighbours of each midpoint."""
    values = fpsim.decode(np.arange(2**fmt.bits, dtype=np.uint64), fmt)
    positive = np.unique(values[(values >= 0) & np.isfinite(values)])
    past_max = fmt.max + fmt.ulp(fmt.max)
    mids = (np.append(positive[1:], past_max) + positive) / 2  # exact: float64 has bits to spare
    around = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, 0)])
    return np.concatenate([values, around, -around])


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("name", [*SMALL, *(k for k, f in CUSTOM.items() if f.bits <= 16)])
def test_every_code_and_midpoint_rounds_like_the_numpy_codec(name, mode):
    fmt = PRESETS.get(name) or CUSTOM[name]
    x = every_code_and_midpoint(fmt)
    check_round(x, fmt, mode, on_nan="zero")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    check_round(x32, fmt, mode, on_nan="zero")  # float32 keeps codes and midpoints; its neighbours differ


@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom_formats_round_like_the_numpy_codec(name):
    fmt = CUSTOM[name]
    for mode in DETERMINISTIC:
        for dtype in input_dtypes(fmt):
            check_round(wide_values(fmt, 20_000, dtype, seed=3), fmt, mode, on_nan="zero")


def test_float32_input_to_a_format_wider_than_float32_is_exact_or_refused():
    fmt = CUSTOM["wider than float32"]
    x = wide_values(fmt, 20_000, np.float32, seed=3)
    check_round(x, fmt, "nearest_even")  # past max is inf: every result is a float32
    with pytest.raises(ValueError, match="float32 cannot hold"):
        ft.round(torch.from_numpy(x), fmt, overflow="saturate")  # max = 65536 - 2^-15 is no float32


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_normals_below_float64s_round_like_exact_rationals(mode):
    x = wide_values(BELOW_FLOAT64, 3000, np.float64, seed=10)
    expected = np.array([fraction_round(v, BELOW_FLOAT64, mode) for v in x])
    assert_same_bits(ft.round(torch.from_numpy(x), BELOW_FLOAT64, mode), expected)


def test_normals_below_float64s_decode_and_encode_exactly():
    rng = np.random.default_rng(11)
    codes = rng.integers(0, BELOW_FLOAT64.max_code + 1, 5000) | rng.integers(0, 2, 5000) << (BELOW_FLOAT64.bits - 1)
    values = ft.decode(torch.from_numpy(codes), BELOW_FLOAT64)
    assert_same_bits(values, np.array([exact_decode(int(c), BELOW_FLOAT64) for c in codes]))
    assert torch.equal(ft.encode(values, BELOW_FLOAT64).long(), torch.from_numpy(codes))


# ---- against torch's own casts --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ft.NATIVE_CASTS))
def test_round_equals_torchs_native_cast_under_its_own_overflow_policy(name):
    dtype = ft.NATIVE_CASTS[name]
    policy = ft.native_overflow(dtype)
    x = torch.from_numpy(
        np.concatenate(
            [wide_values(PRESETS[name], N_WIDE, np.float32), every_code_and_midpoint(PRESETS[name]).astype(np.float32)]
        )
    )
    ours = ft.round(x, name, overflow=policy)
    native = x.to(dtype).to(torch.float32)
    nan = torch.isnan(native)
    assert torch.equal(torch.isnan(ours), nan)  # torch's NaN bits differ from ours (0x7f for e5m2): values only
    assert torch.equal(ours[~nan].view(torch.int32), native[~nan].view(torch.int32))


def test_native_overflow_is_detected_not_assumed():
    past_max = torch.tensor([480.0, math.inf]).to(torch.float8_e4m3fn).float()
    expected = "nan" if torch.isnan(past_max).all() else "saturate"
    assert ft.native_overflow(torch.float8_e4m3fn) == expected
    assert ft.native_overflow(torch.float16) == "inf"
    with pytest.raises(ValueError, match="dtype must be one of"):
        ft.native_overflow(torch.float32)


# ---- dtypes, shapes, devices --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_narrow_inputs_come_back_as_float32_values_of_the_format(dtype):
    x = torch.linspace(-300, 300, 1001).to(dtype)
    ours = ft.round(x, "fp8_e5m2", "toward_zero")
    assert ours.dtype == torch.float32 and ours.shape == x.shape and ours.device == x.device
    assert_same_bits(ours, fpsim.round(x.double().numpy(), "fp8_e5m2", "toward_zero"))


def test_shape_strides_and_empty_tensors_are_kept():
    x = torch.randn(6, 8, dtype=torch.float64).t()  # not contiguous
    assert_same_bits(ft.round(x, "fp16"), fpsim.round(x.numpy(), "fp16"))
    assert ft.round(x, "fp16").shape == (8, 6)
    assert ft.round(torch.tensor(0.1), "bf16").shape == ()
    empty, flags = ft.round(torch.empty(0, 3), "fp16", flags=True)
    assert empty.shape == (0, 3) and flags.total == 0


def test_gradients_are_not_tracked_and_the_input_is_not_modified():
    x = torch.randn(100, requires_grad=True)
    before = x.detach().clone()
    assert not ft.round(x, "fp8_e4m3").requires_grad
    assert torch.equal(x.detach(), before)


def test_float32_results_beyond_float32_are_refused_not_rounded_again():
    x = torch.tensor([3.4e38], dtype=torch.float32)  # rounds up to 2^128 in e8m0, which float32 lacks
    with pytest.raises(ValueError, match="pass x as a float64 tensor"):
        ft.round(x, Format("e8m0", 8, 0, has_inf=False, nan="none"))
    assert ft.round(x.double(), Format("e8m0", 8, 0, has_inf=False, nan="none")).item() == 2.0**128


# ---- stochastic rounding ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "dtype"), [("fp16", torch.float32), ("bf16", torch.float32), ("fp8_e4m3", torch.float64)]
)
def test_stochastic_rounding_is_unbiased_within_the_binomial_bound(name, dtype):
    fmt = PRESETS[name]
    fractions = [1 / 8, 1 / 4, 1 / 2, 3 / 4, 15 / 16]
    lows = [1.0, 3 * fmt.smallest_subnormal, -1.5]  # a normal binade, the subnormals, negative values
    draws = 20_000
    for low in lows:
        step = fmt.ulp(low)
        x = torch.tensor([low + math.copysign(f * step, low) for f in fractions], dtype=dtype).repeat(draws)
        rounded = ft.round(x, name, "stochastic", generator=torch.Generator().manual_seed(1)).double()
        away = (rounded.view(draws, -1) != low).double().mean(0)  # the share rounded away from low
        bound = 5 * torch.sqrt(torch.tensor(fractions) * (1 - torch.tensor(fractions)) / draws)  # 5 sigma
        assert ((away - torch.tensor(fractions, dtype=torch.float64)).abs() <= bound).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stochastic_rounding_lands_on_a_neighbour(dtype):
    x = torch.from_numpy(wide_values(fpsim.FP16, 50_000, np.float64, seed=4)).to(dtype)
    x = x[torch.isfinite(x) & (x.abs() < 65504)]
    rounded = ft.round(x, "fp16", "stochastic", generator=3).double().numpy()
    down, up = (fpsim.round(x.numpy(), "fp16", mode) for mode in ("down", "up"))
    assert (same_bits(rounded, down) | same_bits(rounded, up)).all()
    assert (rounded != down).any() and (rounded != up).any()


def test_stochastic_rounding_is_reproducible_with_a_seeded_generator():
    x = torch.randn(10_000)
    first = ft.round(x, "fp8_e5m2", "stochastic", generator=torch.Generator().manual_seed(5))
    again = ft.round(x, "fp8_e5m2", "stochastic", generator=torch.Generator().manual_seed(5))
    other = ft.round(x, "fp8_e5m2", "stochastic", generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


# ---- flags ----------------------------------------------------------------------------------------------------------
def test_track_flags_blocks_count_torch_roundings_and_classify_does_not():
    x = wide_values(fpsim.FP16, 5000, np.float32, seed=5)
    with fpsim.track_flags() as tracked:
        _, flags = ft.round(torch.from_numpy(x), "fp16", flags=True)
        ft.round(torch.from_numpy(x), "fp16")
        ft.classify(torch.from_numpy(x), "fp16")
    assert tracked == flags + flags
    assert flags == fpsim.round(x, "fp16", flags=True)[1]
    assert flags.overflow and flags.underflow and flags.subnormal and flags.flushed_to_zero and flags.nan


# ---- encode, decode, classify ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*PRESETS, *CUSTOM])
def test_encode_gives_fpsims_codes_in_torchs_integer_dtypes(name):
    fmt = PRESETS.get(name) or CUSTOM[name]
    for dtype in input_dtypes(fmt):
        x = wide_values(fmt, 20_000, dtype, seed=6)
        codes = ft.encode(torch.from_numpy(x), fmt, on_nan="zero")
        reference = fpsim.encode(x, fmt, on_nan="zero")
        width = {8: torch.uint8, 16: torch.int16, 32: torch.int32, 64: torch.int64}
        assert codes.dtype == width[max(8, 2 ** math.ceil(math.log2(fmt.bits)))]
        assert np.array_equal(codes.numpy().view(reference.dtype), reference)


@pytest.mark.parametrize(
    ("name", "dtype", "view"),
    [
        ("fp16", torch.float32, torch.int16),
        ("fp32", torch.float32, torch.int32),
        ("fp64", torch.float64, torch.int64),
        ("bf16", torch.float32, torch.int16),
    ],
)
def test_codes_are_torchs_own_bit_patterns(name, dtype, view):
    x = torch.from_numpy(wide_values(PRESETS[name], 20_000, np.float64, seed=7)).to(dtype)
    x = x[~torch.isnan(x)]
    native = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name, dtype)
    assert torch.equal(ft.encode(x, name), x.to(native).view(view))


@pytest.mark.parametrize("name", [*SMALL, *(k for k, f in CUSTOM.items() if f.bits <= 16)])
def test_every_code_decodes_like_the_numpy_codec_and_reencodes_to_itself(name):
    fmt = PRESETS.get(name) or CUSTOM[name]
    codes = np.arange(2**fmt.bits, dtype=np.uint64)
    values = ft.decode(torch.from_numpy(codes.astype(np.int64)), fmt)
    assert values.dtype == torch.float32
    assert_same_bits(values, fpsim.decode(codes, fmt))
    if fmt.bits in (8, 16):  # the dtypes encode gives: uint8, and int16 whose negative codes carry the sign bit
        narrow = codes.astype(fmt.storage_dtype).view(np.uint8 if fmt.bits == 8 else np.int16)
        assert torch.equal(ft.decode(torch.from_numpy(narrow), fmt).view(torch.int32), values.view(torch.int32))
    again = ft.encode(values, fmt)
    assert np.array_equal(again.numpy().view(fmt.storage_dtype), fpsim.encode(fpsim.decode(codes, fmt), fmt))


@pytest.mark.parametrize("name", ["e11m51", "e10m52", "fp64"])
def test_63_and_64_bit_codes_round_trip_with_fpsims_bits(name):
    """63-bit codes fill an int64 but its sign bit; fp64's int64 codes hold fpsim.encode's uint64 bits."""
    x = wide_values(fpsim.get_format(name), 20_000, np.float64, seed=11)
    codes = ft.encode(torch.from_numpy(x), name)
    reference = fpsim.encode(x, name)
    assert codes.dtype == torch.int64
    assert np.array_equal(codes.numpy().view(np.uint64), reference)
    assert_same_bits(ft.decode(codes, name), fpsim.decode(reference, name))
    assert torch.equal(ft.encode(ft.decode(codes, name), name), codes)


@pytest.mark.parametrize("name", ["tf32", "fp32", "fp64", "wider than float32", "e11m51", "e10m52"])
def test_random_wide_codes_decode_like_the_numpy_codec(name):
    fmt = PRESETS.get(name) or CUSTOM.get(name) or fpsim.get_format(name)
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 2**63, 20_000, dtype=np.uint64) >> np.uint64(64 - fmt.bits) << np.uint64(1)
    codes |= rng.integers(0, 2, 20_000, dtype=np.uint64)  # the last bit too
    signed = np.int32 if fmt.bits <= 32 else np.int64  # the dtype encode gives; 32 and 64 bits wrap the sign
    values = ft.decode(torch.from_numpy(codes.astype(signed)), fmt)
    assert values.dtype == (torch.float32 if fmt.nmant <= 23 else torch.float64)
    assert_same_bits(values, fpsim.decode(codes, fmt))


def test_classify_names_the_class_of_each_rounded_value():
    x = wide_values(fpsim.FP8_E5M2, 5000, np.float32, seed=9)
    classes = ft.classify(torch.from_numpy(x), "fp8_e5m2")
    assert classes.dtype == torch.int8
    assert np.array_equal(np.array(ft.CLASSES)[classes.numpy()], fpsim.classify(x, "fp8_e5m2"))


# ---- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x", [torch.arange(5), torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.complex64)])
def test_non_floating_tensors_are_refused_naming_the_argument(x):
    with pytest.raises(TypeError, match=r"^x must be a floating tensor"):
        ft.round(x, "fp16")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ft.round(np.ones(3), "fp16"), TypeError, "x must be a torch tensor"),
        (lambda: ft.round(torch.ones(3), "fp17"), ValueError, "unknown format"),
        (lambda: ft.round(torch.ones(3), "fp16", "sideways"), ValueError, "rounding must be one of"),
        (lambda: ft.round(torch.ones(3), "e4m3", overflow="inf"), ValueError, "has no infinity"),
        (lambda: ft.round(torch.ones(3), "fp16", on_nan="drop"), ValueError, "on_nan must be one of"),
        (lambda: ft.round(torch.tensor([math.nan]), "fp6_e2m3"), ValueError, "has no NaN encoding"),
        (lambda: ft.round(torch.ones(3), "fp16", generator=1), ValueError, "only by rounding='stochastic'"),
        (lambda: ft.round(torch.ones(3), "fp16", "stochastic", generator="a"), TypeError, "generator must be"),
        (lambda: ft.round(torch.ones(3), "fp16", "stochastic", generator=-1), ValueError, "non-negative seed"),
        (lambda: ft.decode(torch.ones(3), "fp16"), TypeError, "codes must be an integer torch tensor"),
        (lambda: ft.decode(torch.tensor([64]), "fp6_e2m3"), ValueError, r"codes must be in \[0, 2\^6\)"),
        (lambda: ft.decode(torch.tensor([-1], dtype=torch.int16), "fp8_e5m2"), ValueError, "codes must be in"),
        (lambda: ft.decode(torch.tensor([-1]), "e11m51"), ValueError, r"codes must be in \[0, 2\^63\)"),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_without_torch_fpsim_works_and_torch_features_name_the_extra():
    script = """
import sys
sys.modules["torch"] = None  # every `import torch` now fails, as on a machine without it
import numpy as np
import fpsim
assert fpsim.round(0.1, "fp16") == np.float16(0.1)
assert fpsim.encode(1.0, "bf16") == 0x3F80 and fpsim.decode(0x3C00, "fp16") == 1.0
with fpsim.track_flags() as flags:
    fpsim.round(np.array([1e-8, 1e5]), "fp16")
assert flags.overflow == 1 and flags.underflow == 1
fpsim.explain(0.1, "bf16")
from fpsim._extras import MissingExtraError
try:
    import fpsim.torch
except MissingExtraError as err:  # an ImportError the CLI tells apart from a bug
    assert isinstance(err, ImportError) and err.name == "torch"
    print(err)
else:
    raise SystemExit("fpsim.torch imported without torch")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "pip install fpsim[torch]" in result.stdout
