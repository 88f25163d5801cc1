"""The bundled example models of `fpsim audit` and `fpsim bench`: a model, one batch, its target and its loss.

Invariant: `load(name, seed)` is a pure function of its arguments: the same weights, batch and target every time,
built on the CPU without touching torch's global random state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from fpsim import data as datasets
from fpsim import train as simulator
from fpsim.codec import round as round_to
from fpsim.nn import MLP

__all__ = ["MODELS", "Example", "load"]

MODELS = {
    "digits-mlp": "the experiment's MLP (64 → 64 → 10, BatchNorm, ReLU) on a batch of 64 UCI 8×8 digits",
    "digits-cnn": "a small ConvNet (two 3×3 convolutions, max-pool, Linear) on a batch of 64 8×8 digit images",
    "tiny-transformer": "a two-layer transformer encoder reversing a batch of 32 random 12-token sequences",
}

_EXPERIMENT = simulator.Config()  # fpsim.train's defaults: digits-mlp is its model on its first batch
BATCH_SIZE = _EXPERIMENT.batch_size
_VOCABULARY, _LENGTH, _SEQUENCES = 16, 12, 32  # the transformer's synthetic task


@dataclass(frozen=True)
class Example:
    """A bundled model in training mode, one input batch, its target, and the loss `loss_fn(model(batch), target)`."""

    name: str
    model: torch.nn.Module
    batch: torch.Tensor
    target: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @property
    def description(self) -> str:
        return MODELS[self.name]


def load(name: str, seed: int = 0) -> Example:
    """The bundled model `name` (a key of MODELS) with weights and batch drawn from `seed`."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        build, loss_fn = _BUILDERS[name]
        model, batch, target = build(seed)
    return Example(name, model.train(), batch, target, loss_fn)


def _digits_batch(seed: int, dataset: datasets.Dataset | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The experiment's first training batch (fpsim.train.run with this seed), pixels in [0, 1]."""
    dataset = datasets.digits(seed=seed) if dataset is None else dataset
    rows = datasets.batches(len(dataset.x_train), BATCH_SIZE, seed, step=0)
    images = torch.from_numpy(dataset.x_train[rows]).float()  # k/16: exact in float32
    return images, torch.from_numpy(dataset.y_train[rows])


class DigitsMLP(torch.nn.Module):
    """Linear(64 → 64) → BatchNorm1d → ReLU → Linear(64 → 10): fpsim.torch.training.TorchMLP's modules, each
    called as a module (TorchMLP applies its Linears through functional.linear, which forward hooks never see).
    The parameter names are TorchMLP's; the arithmetic is the same, operation for operation."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.linears, self.norms, self.activation = mlp.linears, mlp.norms, mlp.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):  # the hidden blocks; the last Linear has no norm
            x = self.activation(norm(linear(x)))
        return self.linears[-1](x)


def _digits_mlp(seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from fpsim.torch.training import TorchMLP, load_simulator_state

    config, dataset = _EXPERIMENT, datasets.digits(seed=seed)
    sizes = [dataset.n_features, *config.hidden, dataset.n_classes]
    initial = MLP(sizes, config.activation, config.norm, config.init_gain, seed)  # fpsim.train's initial weights
    mlp = TorchMLP(sizes, activation=config.activation, norm=config.norm)
    load_simulator_state(mlp, {k: round_to(v, "fp32") for k, v in initial.params.items()})  # the fp32 master
    return (DigitsMLP(mlp), *_digits_batch(seed, dataset))


class DigitsCNN(torch.nn.Module):
    """Conv(1→8, 3×3) → ReLU → Conv(8→16, 3×3) → ReLU → MaxPool(2) → Linear(256 → 10): the seed's MNIST ConvNet,
    scaled down to 8×8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(images)))))
        return self.fc(h.flatten(1))


def _digits_cnn(seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    images, labels = _digits_batch(seed)
    return DigitsCNN(), images.reshape(-1, 1, 8, 8), labels


class TinyTransformer(torch.nn.Module):
    """Token and position embeddings, two post-norm encoder layers (4 heads, width 32), a Linear to the tokens."""

    def __init__(self, vocabulary: int = _VOCABULARY, length: int = _LENGTH, width: int = 32) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocabulary, width)
        self.position = torch.nn.Parameter(torch.randn(length, width) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.position[: tokens.shape[1]]))


def _sequence_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every position: logits (batch, length, vocabulary), target (batch, length)."""
    return functional.cross_entropy(logits.flatten(0, 1), target.flatten())


def _tiny_transformer(seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    tokens = np.random.default_rng(seed).integers(0, _VOCABULARY, size=(_SEQUENCES, _LENGTH))
    batch = torch.from_numpy(tokens)
    return TinyTransformer(), batch, batch.flip(1)  # the task: output the sequence reversed


_BUILDERS = {
    "digits-mlp": (_digits_mlp, functional.cross_entropy),
    "digits-cnn": (_digits_cnn, functional.cross_entropy),
    "tiny-transformer": (_tiny_transformer, _sequence_loss),
}
