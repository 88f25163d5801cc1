"""fpsim.torch.models: each bundled example is a pure function of its seed, trains one step, and digits-mlp is the
experiment's MLP (fpsim.train's initial weights and first batch)."""

import numpy as np
import pytest
import torch

from fpsim import data as datasets
from fpsim.nn import MLP
from fpsim.torch import models


@pytest.mark.parametrize("name", list(models.MODELS))
def test_each_model_is_a_pure_function_of_its_seed(name):
    state = torch.get_rng_state()
    first, again, other = models.load(name), models.load(name), models.load(name, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(first.batch, again.batch) and torch.equal(first.target, again.target)
    assert not torch.equal(first.batch, other.batch)
    loss = first.loss_fn(first.model(first.batch), first.target)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in first.model.parameters())


def test_digits_mlp_is_the_experiments_mlp_and_first_batch():
    example = models.load("digits-mlp", seed=2)
    simulator = MLP([64, 64, 10], "relu", "batch", seed=2)
    weight = example.model.linears[0].weight.detach().double().numpy()
    np.testing.assert_array_equal(weight, simulator.params["W0"].T.astype(np.float32))
    dataset = datasets.digits(seed=2)
    rows = datasets.batches(len(dataset.x_train), 64, 2, step=0)
    np.testing.assert_array_equal(example.batch.numpy(), dataset.x_train[rows])
    np.testing.assert_array_equal(example.target.numpy(), dataset.y_train[rows])


def test_tiny_transformer_task_is_reversal():
    example = models.load("tiny-transformer")
    assert example.batch.dtype == torch.int64 and torch.equal(example.target, example.batch.flip(1))


@pytest.mark.parametrize(
    ("arguments", "message"), [(("resnet",), "model must be one of"), (("digits-mlp", -1), "seed")]
)
def test_bad_names_and_seeds(arguments, message):
    with pytest.raises(ValueError, match=message):
        models.load(*arguments)


def test_digits_mlp_computes_exactly_what_torch_mlp_computes():
    from fpsim.codec import round as round_to
    from fpsim.torch.training import TorchMLP, load_simulator_state

    example = models.load("digits-mlp", seed=1)
    reference = TorchMLP([64, 64, 10], activation="relu", norm="batch")  # fpsim train's torch model, as it runs
    simulator = MLP([64, 64, 10], "relu", "batch", seed=1)
    load_simulator_state(reference, {k: round_to(v, "fp32") for k, v in simulator.params.items()})
    outputs = []
    for model in (example.model, reference):
        output = model(example.batch)
        example.loss_fn(output, example.target).backward()
        outputs.append((output.detach(), [p.grad for p in model.parameters()]))
    (ours, our_grads), (theirs, their_grads) = outputs
    assert torch.equal(ours, theirs)
    assert len(our_grads) == len(their_grads) and all(map(torch.equal, our_grads, their_grads))
    assert dict(example.model.named_parameters()).keys() == dict(reference.named_parameters()).keys()


# MultiheadAttention applies out_proj's weights with functional calls: the audit names it instead of a row
FUNCTIONAL = {"tiny-transformer": ("encoder.layers.0.self_attn.out_proj", "encoder.layers.1.self_attn.out_proj")}


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_linear_and_convolution_of_a_bundled_model_has_an_activation_row(name):
    from fpsim.torch import audit

    example = models.load(name)
    result = audit(example.model, example.batch, example.loss_fn, "fp16", target=example.target)
    layers = {path for path, m in example.model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    rows = {(t.module, t.kind) for t in result.tensors}
    missing = {path for path in layers if {(path, "activation"), (path, "activation gradient")} - rows}
    assert missing == set(FUNCTIONAL.get(name, ())) == set(result.unaudited)
