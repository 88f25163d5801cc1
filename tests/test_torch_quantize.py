"""Fake quantization: quantize's forward is fpsim.round and its backward straight-through or rounded; Quantize;
fake_quantize on Linear and Conv layers, with a small model trained in fp8 and fp6 on the CPU."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the name torch code uses
from oracle import same_bits
from torch import nn

import fpsim
import fpsim.torch as ft


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
