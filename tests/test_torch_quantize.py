"""Fake quantization: quantize's forward is fpsim.round (or fpsim.quantize_blocks along an axis) and its backward
straight-through or rounded; Quantize; fake_quantize on Linear and Conv layers, with a small model trained in fp8
and fp6 on the CPU; block_matmul, the three products of MX training."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the name torch code uses
from oracle import same_bits
from torch import nn

import fpsim
import fpsim.torch as ft
from fpsim.formats import FP64
from fpsim.policies import Policy, Precision


def rounded(x: torch.Tensor, fmt, mode: str = "nearest_even") -> torch.Tensor:
    """The NumPy codec's rounding, back as a tensor of x's dtype: the reference for every check here."""
    return torch.from_numpy(fpsim.round(x.detach().double().numpy(), fmt, mode)).to(x.dtype)


def assert_same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype
    assert same_bits(a.detach().double().numpy(), b.detach().double().numpy()).all()


@pytest.mark.parametrize(
    ("dtype", "fmt"), [(torch.float32, "fp8_e4m3"), (torch.bfloat16, "fp8_e4m3"), (torch.float16, "fp8_e5m2")]
)
def test_quantize_rounds_forward_and_keeps_the_dtype(dtype, fmt):
    x = (torch.randn(1000) * 100).to(dtype)
    assert_same_bits(ft.quantize(x, fmt, "toward_zero"), rounded(x, fmt, "toward_zero"))


def test_quantize_backward_is_straight_through_or_rounded_to_the_grad_format():
    x = torch.randn(500, requires_grad=True)
    upstream = torch.randn(500) * 1e-3
    ft.quantize(x, "fp6_e2m3").backward(upstream)
    assert torch.equal(x.grad, upstream)
    x.grad = None
    ft.quantize(x, "fp6_e2m3", grad_fmt="fp8_e5m2", grad_rounding="up").backward(upstream)
    assert_same_bits(x.grad, rounded(upstream, "fp8_e5m2", "up"))
    assert not torch.equal(x.grad, upstream)


def test_quantize_module_is_the_function_as_a_layer():
    layer = ft.Quantize("fp8_e4m3", grad_fmt="fp8_e5m2")
    x = torch.randn(300, requires_grad=True)
    out = layer(x)
    assert_same_bits(out, rounded(x, "fp8_e4m3"))
    out.backward(torch.full((300,), 0.3))
    assert torch.equal(x.grad, torch.full((300,), 0.3125))  # 0.3 in e5m2
    assert "fp8_e4m3 nearest_even, grad=fp8_e5m2 nearest_even" in repr(layer)


def test_stochastic_quantize_is_reproducible_with_its_generator():
    x = torch.randn(2000)
    first = ft.quantize(x, "fp8_e5m2", "stochastic", generator=torch.Generator().manual_seed(3))
    again = ft.quantize(x, "fp8_e5m2", "stochastic", generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert torch.equal(ft.round(first, "fp8_e5m2"), first)  # on the grid


class Net(nn.Module):
    """A small convolutional classifier: one Conv2d and two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.hidden = nn.Linear(4 * 4 * 4, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        return self.out(torch.relu(self.hidden(h)))


def toy_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """4x4 images whose class is which half is brighter: learnable in a few dozen steps."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = torch.rand(n, 1, 4, 4, generator=generator)
    images[labels == 1, :, :2] += 0.5
    images[labels == 0, :, 2:] += 0.5
    return images, labels


def reference_forward(model: Net, x: torch.Tensor, fmt: str) -> torch.Tensor:
    """The model's forward with every layer input, weight and output rounded by the NumPy codec."""
    weights = {name: rounded(layer.parametrizations.weight.original, fmt) for name, layer in model.named_children()}
    conv = rounded(F.conv2d(rounded(x, fmt), weights["conv"], model.conv.bias, padding=1), fmt)
    hidden = rounded(F.linear(rounded(torch.relu(conv).flatten(1), fmt), weights["hidden"], model.hidden.bias), fmt)
    return rounded(F.linear(rounded(torch.relu(hidden), fmt), weights["out"], model.out.bias), fmt)


@pytest.mark.parametrize(("fmt", "grad"), [("fp8_e4m3", "fp8_e5m2"), ("fp6_e3m2", None)])
def test_a_small_model_trains_fake_quantized_and_its_outputs_are_fpsim_rounded(fmt, grad):
    torch.manual_seed(0)
    model = ft.fake_quantize(Net(), weight=fmt, input=fmt, output=fmt, grad=grad)
    images, labels = toy_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        outputs = model(images)
        assert (outputs.argmax(1) == labels).float().mean() > 0.9
        assert_same_bits(outputs, reference_forward(model, images, fmt))
    if grad is not None:  # the gradients reaching the weights went through the grad format
        weight_grad = model.hidden.parametrizations.weight.original.grad
        assert_same_bits(weight_grad, rounded(weight_grad, grad))


def test_fake_quantize_returns_the_model_changed_in_place():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Conv1d(1, 1, 1))
    assert ft.fake_quantize(model, weight="bf16") is model
    assert model[0].fpsim_fake_quantized == {"weight": "bf16"} and model[2].fpsim_fake_quantized == {"weight": "bf16"}
    assert_same_bits(model[0].weight, rounded(model[0].weight, "bf16"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"weight": "fp9"}, ValueError, "unknown format"),
        ({"weight": "fp8_e4m3", "output": "fp16", "rounding": "sideways"}, ValueError, "rounding must be one of"),
        ({"weight": "fp8_e4m3", "grad": "e4m3x"}, ValueError, "unknown format"),
        ({"weight": "fp8_e4m3", "grad_rounding": "up"}, ValueError, "grad_rounding='up' is used only with"),
        ({"weight": "fp8_e4m3", "grad": "fp8_e5m2", "grad_rounding": "x"}, ValueError, "grad_rounding='x'.*one of"),
        ({}, ValueError, "give at least one of weight=, input=, output="),
        ({"input": "fp8_e4m3", "layers": (nn.LSTM,)}, ValueError, "model has no layer of the kinds LSTM"),
    ],
)
def test_fake_quantize_refuses_bad_arguments_before_touching_the_model(kwargs, error, message):
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(error, match=message):
        ft.fake_quantize(model, **kwargs)
    assert not hasattr(model[0], "fpsim_fake_quantized") and not model[0]._forward_pre_hooks
    assert "parametrizations" not in dict(model[0].named_children())


def test_fake_quantize_refuses_a_model_twice_and_a_non_module():
    model = ft.fake_quantize(nn.Linear(2, 2), input="fp8_e4m3")
    with pytest.raises(ValueError, match="already fake-quantized"):
        ft.fake_quantize(model, weight="fp8_e4m3")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        ft.fake_quantize(lambda x: x, weight="fp8_e4m3")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ft.quantize(torch.ones(2, dtype=torch.float16), "bf16"), ValueError, "cannot hold every bf16"),
        (lambda: ft.quantize(torch.ones(2, dtype=torch.int32), "fp16"), TypeError, "needs a float16, bfloat16"),
        (lambda: ft.quantize(torch.ones(2), "fp16", grad_rounding="x"), ValueError, "used only with a gradient"),
        (lambda: ft.Quantize("fp16", grad_rounding="up"), ValueError, "grad_rounding='up' is used only with"),
        (lambda: ft.quantize(torch.ones(2), "fp16", grad_fmt="fp16", grad_rounding="x"), ValueError, "one of"),
        (lambda: ft.quantize(torch.ones(2), "fp16", grad_fmt="fp17"), ValueError, "grad_fmt='fp17'.*unknown"),
        (lambda: ft.Quantize("fp16", generator=torch.Generator()), ValueError, "only by rounding='stochastic'"),
        (lambda: ft.Quantize("fp16", "stochastic", generator=3), TypeError, "generator must be a torch.Generator"),
    ],
)
def test_quantize_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_gradient_format_the_dtype_cannot_hold_is_refused_in_the_forward_pass():
    """The gradient has x's dtype: fp16 cannot hold bf16's range, so the forward pass refuses, before backward."""
    x = torch.ones(2, dtype=torch.float16, requires_grad=True)
    with pytest.raises(ValueError, match="float16 cannot hold every grad_fmt bf16 value"):
        ft.quantize(x, "fp8_e4m3", grad_fmt="bf16")
    model = ft.fake_quantize(nn.Linear(2, 2).half(), input="fp8_e4m3", grad="bf16")
    with pytest.raises(ValueError, match="float16 cannot hold every grad_fmt bf16 value"):
        model(torch.ones(1, 2, dtype=torch.float16))


def test_fp8_fake_quantization_agrees_with_numpys_fake_quantized_matmul():
    """Independent of torch's conv and autograd: a fake-quantized Linear equals NumPy on fpsim-rounded operands."""
    torch.manual_seed(1)
    layer = ft.fake_quantize(nn.Linear(8, 4, bias=False).double(), weight="fp8_e4m3", input="fp8_e4m3")
    x = torch.randn(16, 8, dtype=torch.float64)
    w = fpsim.round(layer.parametrizations.weight.original.detach().numpy(), "fp8_e4m3")
    expected = fpsim.round(x.numpy(), "fp8_e4m3") @ w.T  # products of 4-bit significands: exact in float64
    assert np.array_equal(layer(x).detach().numpy(), expected)


# ---- block formats: blocks along the reduction axis -----------------------------------------------------------------
def blocked(x: torch.Tensor, fmt: str, axis: int = -1) -> torch.Tensor:
    """The NumPy fpsim.quantize_blocks, back as a tensor of x's dtype: the reference for block formats."""
    return torch.from_numpy(fpsim.quantize_blocks(x.detach().double().numpy(), fmt, axis=axis).values).to(x.dtype)


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("mxfp8_e4m3", torch.float32), ("mxfp4", torch.float32), ("nvfp4", torch.float64)]
)  # nvfp4 values (e2m1 · e4m3 · an fp32 tensor scale) need float64
@pytest.mark.parametrize(("axis", "other"), [(-1, 0), (0, 1)])
def test_quantize_to_a_block_format_runs_its_blocks_along_the_axis(fmt, dtype, axis, other):
    torch.manual_seed(5)
    x = torch.randn(48, 40, dtype=dtype) * torch.exp2(torch.randint(-6, 7, (48, 40))).to(dtype)
    x.requires_grad_(True)
    out = ft.quantize(x, fmt, axis=axis)
    assert_same_bits(out, blocked(x, fmt, axis))
    assert not torch.equal(out, blocked(x, fmt, other))  # the axis matters: the other one gives other values
    upstream = torch.randn(48, 40, dtype=dtype)
    out.backward(upstream)
    assert torch.equal(x.grad, upstream)  # straight-through


@pytest.mark.parametrize(("name", "preset"), [("mxfp8", "mxfp8_e4m3"), ("MXFP4", "mxfp4"), ("mxfp6", "mxfp6_e2m3")])
def test_block_formats_are_named_as_get_block_format_names_them(name, preset):
    """Aliases and any case, in quantize, Quantize, grad_fmt and block_matmul alike."""
    torch.manual_seed(6)
    x = torch.randn(8, 64, requires_grad=True)
    assert_same_bits(ft.quantize(x, name), blocked(x, preset))
    ft.quantize(x, "fp32", grad_fmt=name, axis=0).backward(x.detach())
    assert_same_bits(x.grad, blocked(x, preset, 0))
    w = torch.randn(4, 64)
    assert torch.equal(ft.block_matmul(x, w, name), ft.block_matmul(x, w, preset))


def test_a_block_format_rounds_the_gradient_along_the_same_axis():
    torch.manual_seed(6)
    x, upstream = torch.randn(8, 64, requires_grad=True), torch.randn(8, 64)
    layer = ft.Quantize("fp8_e4m3", grad_fmt="mxfp4")
    layer(x).backward(upstream)
    assert_same_bits(x.grad, blocked(upstream, "mxfp4", -1))
    assert "grad=mxfp4 blocks along axis -1 nearest_even" in repr(layer)
    y = torch.randn(64, 8, requires_grad=True)
    ft.quantize(y, "mxfp8_e4m3", axis=0, grad_fmt="mxfp4").backward(upstream.T)
    assert_same_bits(y.grad, blocked(upstream.T, "mxfp4", 0))


def test_a_fake_quantized_linear_takes_block_operands_along_its_features():
    torch.manual_seed(2)
    layer = ft.fake_quantize(nn.Linear(40, 6, bias=False).double(), weight="mxfp8_e4m3", input="mxfp8_e4m3")
    x = torch.randn(16, 40, dtype=torch.float64)
    w = layer.parametrizations.weight.original.detach()
    expected = blocked(x, "mxfp8_e4m3").numpy() @ blocked(w, "mxfp8_e4m3").numpy().T  # 8-bit products: exact sums
    assert np.array_equal(layer(x).detach().numpy(), expected)
    assert layer.fpsim_fake_quantized == {"weight": "mxfp8_e4m3", "input": "mxfp8_e4m3"}


def test_a_fake_quantized_conv_runs_its_blocks_along_the_channels():
    torch.manual_seed(3)
    conv = ft.fake_quantize(nn.Conv2d(40, 3, 2, bias=False).double(), weight="mxfp4", input="mxfp4")
    x = torch.randn(2, 40, 4, 4, dtype=torch.float64)
    w = conv.parametrizations.weight.original.detach()
    expected = F.conv2d(blocked(x, "mxfp4", 1), blocked(w, "mxfp4", 1))  # N C H W and O C kh kw: channels are axis 1
    assert torch.equal(conv(x), expected)


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_block_matmul_is_the_simulators_three_products(fmt):
    """y = x·wᵀ, dx = dy·w and dw = dyᵀ·x, each with both operands in blocks along the axis it reduces: the
    matmuls of fpsim.nn under a block policy (here accumulating in fp64, where these sums are exact)."""
    torch.manual_seed(4)
    x = torch.randn(40, 36, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 36, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(40, 6, dtype=torch.float64)
    y = ft.block_matmul(x, w, fmt)
    y.backward(dy)
    p = Precision(Policy("blocks-fp64", "fp64", "fp64", "fp64", "fp64", accumulate="fp64", blocks=fmt))
    xs, ws, dys = (t.detach().numpy() for t in (x, w, dy))
    assert np.array_equal(y.detach().numpy(), p.matmul(xs, ws.T, FP64))  # forward: h @ W
    assert np.array_equal(x.grad.numpy(), p.matmul(dys, ws, FP64))  # dz @ W.T
    assert np.array_equal(w.grad.numpy().T, p.matmul(xs.T, dys, FP64))  # h.T @ dz
    assert not np.array_equal(y.detach().numpy(), xs @ ws.T)


def test_block_matmul_reports_what_quantizing_the_gradient_flushed():
    """dy is 2^-10 but for one 1.0: mxfp4's block of that 1.0 gets scale 2^(0-2), its smallest element 0.5·2^-2 =
    2^-3, so the other 31 values of that block flush; dy's row 0 (along -1, for dx) and column 0 (along 0, for dw)."""
    x = torch.ones(32, 32, requires_grad=True)
    w = torch.ones(32, 32, requires_grad=True)
    dy = torch.full((32, 32), 2.0**-10)
    dy[0, 0] = 1.0
    reported = []
    ft.block_matmul(x, w, "mxfp4", gradient_flags=reported.append).backward(dy)
    assert [(f.total, f.flushed_to_zero) for f in reported] == [(1024, 31), (1024, 31)]
    with pytest.raises(TypeError, match="gradient_flags must be callable or None, got int"):
        ft.block_matmul(x, w, "mxfp4", gradient_flags=1)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ft.quantize(torch.ones(2), "fp8_e4m3", axis=0), ValueError, "axis=0 applies only to block formats"),
        (lambda: ft.quantize(torch.ones(2), "mxfp4", axis=1.5), TypeError, "axis must be an int"),
        (lambda: ft.quantize(torch.ones(2), "mxfp4", overflow="saturate"), ValueError,
         "overflow= does not apply to the block format 'mxfp4'"),
        (lambda: ft.Quantize("mxfp4", on_nan="zero"), ValueError, "on_nan= does not apply"),
        (lambda: ft.quantize(torch.ones(2, dtype=torch.float16), "mxfp4"), TypeError,
         "block format mxfp4 needs a float32 or float64 tensor, got torch.float16"),
        (lambda: ft.quantize(torch.ones(2), "nvfp4"), TypeError, "block format nvfp4 needs a float64 tensor"),
        (lambda: ft.block_matmul(torch.ones(2, 2), torch.ones(2, 2), "fp8_e4m3"), ValueError,
         "fmt must be a block format"),
        (lambda: ft.block_matmul(torch.ones(2), torch.ones(2, 2), "mxfp4"), ValueError, "x must be a 2-D"),
        (lambda: ft.block_matmul(torch.ones(2, 2), torch.ones(2, 2).half(), "mxfp4"), TypeError,
         "x and w must both be float32 or both float64 tensors, got torch.float32 and torch.float16"),
    ],
)  # fmt: skip
def test_block_quantization_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()
