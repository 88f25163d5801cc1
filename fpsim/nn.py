"""A small NumPy MLP with hand-written forward and backward passes, every tensor rounded by a precision policy.

Invariant: layers compute in float64 and round what they hand on (activations, gradients) to the policy's
formats; matmuls accumulate as the policy says. With the fp64 policy nothing rounds (the gradient check).
"""

from __future__ import annotations

import itertools

import numpy as np

from fpsim import kernels
from fpsim.formats import FP32
from fpsim.policies import Precision

ACTIVATIONS = ("relu", "tanh", "gelu")
NORMS = ("batch", "layer", "none")
_EPS = 1e-5  # variance epsilon of the norms, as in torch


def _gelu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU's tanh form and its derivative."""
    c = np.sqrt(2 / np.pi)
    inner = c * (x + 0.044715 * x**3)
    t = np.tanh(inner)
    value = 0.5 * x * (1 + t)
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
    return value, slope


def _activate(kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if kind == "relu":
        return np.maximum(x, 0.0), (x > 0).astype(np.float64)
    if kind == "tanh":
        t = np.tanh(x)
        return t, 1 - t**2
    return _gelu(x)


class MLP:
    """Linear → norm → activation blocks, then a Linear to the class logits; softmax cross-entropy loss."""

    def __init__(
        self, sizes: list[int], activation: str = "relu", norm: str = "batch", init_gain: float = 1.0, seed: int = 0
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least two positive ints (inputs ... classes), got {sizes!r}")
        rng = np.random.default_rng(seed)
        self.activation, self.norm, self.n_layers = activation, norm, len(sizes) - 1
        self.params: dict[str, np.ndarray] = {}
        self.running: dict[str, np.ndarray] = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            self.params[f"W{i}"] = rng.standard_normal((fan_in, fan_out)) * init_gain * np.sqrt(2.0 / fan_in)  # He
            self.params[f"b{i}"] = np.zeros(fan_out)
            if norm != "none" and i < self.n_layers - 1:
                self.params[f"gamma{i}"], self.params[f"beta{i}"] = np.ones(fan_out), np.zeros(fan_out)
                self.running[f"mean{i}"], self.running[f"var{i}"] = np.zeros(fan_out), np.ones(fan_out)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, weights: dict[str, np.ndarray], p: Precision, train: bool) -> tuple:
        """Logits (in the reductions format) and what backward needs. `weights` are already in compute format."""
        cache = []
        h = p.activation(x)
        for i in range(self.n_layers):
            z = p.activation(p.matmul(h, weights[f"W{i}"], p.accumulate) + weights[f"b{i}"])  # bias in the epilogue
            if i == self.n_layers - 1:
                cache.append((h, None, None))
                return p.cast(z, p.reductions), cache
            normed, norm_cache = self._norm_forward(i, z, weights, p, train)
            a, slope = _activate(self.activation, normed)
            cache.append((h, norm_cache, slope))
            h = p.activation(a)
        raise AssertionError("unreachable: the loop returns at the last layer")

    def _norm_forward(self, i: int, z: np.ndarray, w: dict, p: Precision, train: bool):
        if self.norm == "none":
            return z, None
        if self.norm == "batch" and train and p.kernels == "torch":
            return self._torch_batch_norm(i, z, w, p)
        x = p.cast(z, p.reductions)
        axis = 0 if self.norm == "batch" else 1
        if self.norm == "batch" and not train:
            mean, var = self.running[f"mean{i}"], self.running[f"var{i}"]
        else:
            mean = p.cast(x.mean(axis=axis, keepdims=True), p.reductions)
            var = p.cast(((x - mean) ** 2).mean(axis=axis, keepdims=True), p.reductions)
            if self.norm == "batch":
                self._update_running(i, mean[0], var[0], x.shape[0])
        inv_std = p.cast(1 / np.sqrt(var + _EPS), p.reductions)
        x_hat = p.cast((x - mean) * inv_std, p.reductions)
        out = p.activation(w[f"gamma{i}"] * x_hat + w[f"beta{i}"])
        return out, (x_hat, inv_std, axis)

    def _update_running(self, i: int, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        unbiased = var * n / max(n - 1, 1)  # torch keeps the unbiased variance for evaluation
        self.running[f"mean{i}"] = 0.9 * self.running[f"mean{i}"] + 0.1 * mean
        self.running[f"var{i}"] = 0.9 * self.running[f"var{i}"] + 0.1 * unbiased

    def _torch_batch_norm(self, i: int, z: np.ndarray, w: dict, p: Precision):
        """BatchNorm1d as torch's CPU kernel rounds it, on the compute-format batch torch receives; its
        statistics live in fp32, or in the compute format when the weights are too (a `.half()` model)."""
        wide = p.compute is FP32
        stats = p.compute if p.master is p.compute else FP32
        out, mean, inv_std = kernels.batch_norm_forward(z, w[f"gamma{i}"], w[f"beta{i}"], wide, stats, p.threads)
        self._update_running(i, mean, z.var(axis=0), z.shape[0])  # running statistics: as in the exact model
        return p.activation(out), ("torch", z, mean, inv_std, wide)

    def loss(self, logits: np.ndarray, labels: np.ndarray, p: Precision) -> tuple[float, np.ndarray]:
        """Mean softmax cross-entropy and its gradient with respect to the logits, in the reductions format."""
        with np.errstate(invalid="ignore", over="ignore"):  # inf logits give NaN: the loss then says so
            if p.kernels == "torch":
                log_probs = kernels.log_softmax(logits, p.reductions)
            else:
                shifted = logits - logits.max(axis=1, keepdims=True)
                log_probs = p.cast(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), p.reductions)
        n = len(labels)
        loss = float(p.cast(-log_probs[np.arange(n), labels].mean(), p.reductions))
        grad = np.exp(log_probs)
        grad[np.arange(n), labels] -= 1
        return loss, p.cast(grad / n, p.reductions)

    # ---- backward -----------------------------------------------------------------------------
    def backward(self, dlogits: np.ndarray, cache: list, weights: dict, p: Precision) -> dict[str, np.ndarray]:
        """Gradients of every parameter, each rounded to the grads format, from the (scaled) logit gradient."""
        grads = {}
        dz = p.gradient(dlogits)
        for i in reversed(range(self.n_layers)):
            h, norm_cache, slope = cache[i]
            if i < self.n_layers - 1:
                dz = p.gradient(dz * slope)  # through the activation (exact for ReLU)
                dz = self._norm_backward(i, dz, norm_cache, weights, grads, p)
            grads[f"W{i}"] = p.gradient(p.matmul(h.T, dz, p.accumulate))
            grads[f"b{i}"] = p.gradient(dz.sum(axis=0))
            if i > 0:
                dz = p.gradient(p.matmul(dz, weights[f"W{i}"].T, p.accumulate))
        return grads

    def _norm_backward(self, i: int, dy: np.ndarray, cache, w: dict, grads: dict, p: Precision) -> np.ndarray:
        if cache is None:
            return dy
        if isinstance(cache[0], str):  # ("torch", ...): the kernel model's cache
            _, x, mean, inv_std, wide = cache
            dx, dgamma, dbeta = kernels.batch_norm_backward(dy, x, mean, inv_std, w[f"gamma{i}"], wide, p.threads)
            grads[f"gamma{i}"], grads[f"beta{i}"] = p.cast(dgamma, p.reductions), p.cast(dbeta, p.reductions)
            return p.gradient(dx)
        x_hat, inv_std, axis = cache
        grads[f"gamma{i}"] = p.cast((dy * x_hat).sum(axis=0), p.reductions)  # norm parameters live in reductions
        grads[f"beta{i}"] = p.cast(dy.sum(axis=0), p.reductions)
        d_hat = p.cast(dy * w[f"gamma{i}"], p.reductions)
        mean_d = d_hat.mean(axis=axis, keepdims=True)
        mean_dx = (d_hat * x_hat).mean(axis=axis, keepdims=True)
        return p.gradient(inv_std * (d_hat - mean_d - x_hat * mean_dx))
