"""The torch experiment backend: a training Config run by real torch (autocast, GradScaler, `.half()`), recorded
in the simulator's History.

Invariant: the same initial weights, batches and hyperparameters as `fpsim.train.run`; torch's global flags are
restored after every run; no fused optimizer is ever built (torch 2.13's fused CPU SGD skips fp16/bf16 updates).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from fpsim import data as datasets
from fpsim import train as simulator
from fpsim.blocks import BlockFormat, get_block_format
from fpsim.codec import round as round_to
from fpsim.flags import Flags, suspended
from fpsim.formats import FP32, Format, get_format
from fpsim.matrix_unit import MATRIX_UNITS
from fpsim.nn import _EPS, MLP
from fpsim.policies import Policy, Precision
from fpsim.scaling import DynamicLossScaler
from fpsim.torch.codec import round as fpsim_round
from fpsim.torch.quantize import block_matmul

DEVICES = ("cpu", "cuda", "auto")
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---- devices and the policy's torch mechanism ------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """ "cpu", "cuda", "cuda:N" or "auto" (CUDA when there is a GPU, else the CPU) as a torch.device."""
    if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N); got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch {torch.__version__} sees no CUDA GPU here; "
                             "use the device cpu, or auto")  # fmt: skip
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"device={device!r}: this machine has CUDA devices 0 to {torch.cuda.device_count() - 1}")
    return torch.device(device)


@dataclass(frozen=True)
class Mechanism:
    """How torch runs a policy: `plain` fp32, `autocast` to a low dtype over fp32 weights, a `cast` model
    (`.half()`: weights, optimizer state and every op in the low dtype), `fp8` fake quantization, or `blocks`:
    an fp32 model whose Linear products quantize their operands to a block format (fpsim.torch.block_matmul)."""

    kind: str
    dtype: torch.dtype = torch.float32  # the compute dtype (autocast's or the cast model's)
    blocks: BlockFormat | None = None  # the block format of kind "blocks"

    @property
    def param_dtype(self) -> torch.dtype:
        return self.dtype if self.kind == "cast" else torch.float32

    def describe(self) -> str:
        low, blocks = _name(self.dtype), self.blocks.name if self.blocks else "none"
        return {
            "plain": "plain fp32 (TF32 off)",
            "autocast": f"torch.autocast({low}) over fp32 weights",
            "cast": f"model.to({low}): weights, optimizer state and ops in {low}",
            "fp8": "fp32 model, per-tensor-scaled e4m3 forward and e5m2 backward casts (fpsim.torch's codec)",
            "blocks": f"fp32 model, every Linear product's operands fake-quantized to {blocks} blocks along its "
            "reduction axis (fpsim.torch.block_matmul)",
        }[self.kind]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def mechanism(policy: Policy) -> Mechanism:
    """The torch mechanism of a policy, read from its formats; a policy torch cannot run raises ValueError."""
    formats = (policy.compute, policy.master, policy.grads, policy.reductions)
    if policy.blocks != "none":
        if formats == ("fp32",) * 4:
            return Mechanism("blocks", blocks=get_block_format(policy.blocks))
    elif policy.per_tensor_scaling:
        if (policy.compute, policy.grads, policy.master, policy.reductions) == ("fp8_e4m3", "fp8_e5m2", "fp32", "fp32"):
            return Mechanism("fp8")
    elif formats == ("fp32",) * 4:
        return Mechanism("plain")
    elif policy.compute in ("fp16", "bf16") and policy.grads == policy.compute and policy.master == "fp32":
        if policy.reductions == "fp32":
            return Mechanism("autocast", _TORCH_DTYPES[policy.compute])
    elif policy.compute in ("fp16", "bf16") and formats == (policy.compute,) * 4:
        return Mechanism("cast", _TORCH_DTYPES[policy.compute])
    raise ValueError(
        f"policy {policy.name!r} has no torch mechanism: the torch backend runs fp32, autocast (fp16/bf16 compute "
        "and grads over fp32 master and reductions), an all-fp16/bf16 model, fp8, or block formats over fp32"
    )


# ---- the model -------------------------------------------------------------------------------------------
class TorchMLP(torch.nn.Module):
    """fpsim.nn.MLP in torch modules: Linear → BatchNorm1d/LayerNorm → activation blocks, then a Linear.

    `observe` sees every tensor the simulator passes through `Precision.activation` (for max_activation);
    `quantize` wraps the same tensors and the layer weights (identity unless the policy is fp8).
    """

    def __init__(self, sizes: list[int], activation: str, norm: str) -> None:
        super().__init__()
        pairs = list(itertools.pairwise(sizes))
        self.linears = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in pairs)
        norms = {"batch": lambda n: torch.nn.BatchNorm1d(n, eps=_EPS, momentum=0.1),
                 "layer": lambda n: torch.nn.LayerNorm(n, eps=_EPS), "none": lambda n: torch.nn.Identity()}  # fmt: skip
        self.norms = torch.nn.ModuleList(norms[norm](b) for _, b in pairs[:-1])
        self.activation = {"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "gelu": torch.nn.GELU(approximate="tanh")}[
            activation
        ]  # fpsim.nn uses GELU's tanh form
        self.observe: Callable[[torch.Tensor], None] = lambda t: None
        self.quantize: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
        self.matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # x @ w.T, else F.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantize
        h = q(self._seen(x))
        for i, linear in enumerate(self.linears):
            z = q(self._seen(self._linear(h, q(linear.weight), q(linear.bias))))
            if i == len(self.norms):
                return z
            h = q(self._seen(self.activation(q(self._seen(self.norms[i](z))))))
        raise AssertionError("unreachable: the loop returns at the last layer")

    def _linear(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.matmul is None:
            return functional.linear(h, weight, bias)
        return self.matmul(h, weight) + bias

    def _seen(self, t: torch.Tensor) -> torch.Tensor:
        self.observe(t)
        return t

    def parameter_map(self) -> dict[str, torch.nn.Parameter]:
        """fpsim's parameter names → torch parameters (fpsim's W{i} is torch's weight transposed)."""
        named = {}
        for i, linear in enumerate(self.linears):
            named[f"W{i}"], named[f"b{i}"] = linear.weight, linear.bias
        for i, norm in enumerate(self.norms):
            if not isinstance(norm, torch.nn.Identity):
                named[f"gamma{i}"], named[f"beta{i}"] = norm.weight, norm.bias
        return named


def to_torch_name(name: str, value: np.ndarray) -> np.ndarray:
    """A simulator parameter laid out as torch holds it (Linear weights are stored out × in)."""
    return value.T if name.startswith("W") else value


def load_simulator_state(
    module: TorchMLP, params: dict[str, np.ndarray], running: dict[str, np.ndarray] | None = None
) -> None:
    """Copy simulator values (float64 arrays holding values of the parameters' dtype) into the module, exactly."""
    targets = module.parameter_map()
    with torch.no_grad():
        for name, value in params.items():
            target = targets[name]
            source = torch.from_numpy(np.ascontiguousarray(to_torch_name(name, value)))
            converted = source.to(target.dtype)
            if not torch.allclose(
                converted.double(), source, rtol=0, atol=0, equal_nan=True
            ):  # float64 → fp16 goes through fp32: refuse, never round
                raise ValueError(f"{name} holds values that are not {_name(target.dtype)}; round them first")
            target.copy_(converted)
        for name, value in (running or {}).items():
            norm = module.norms[int(name.removeprefix("mean").removeprefix("var"))]
            buffer = norm.running_mean if name.startswith("mean") else norm.running_var
            buffer.copy_(torch.from_numpy(np.asarray(value, dtype=np.float64)).to(buffer.dtype))


# ---- gradient census: flushed and subnormal fractions on the real backward tensors ---------------------
_NOT_ROUNDING = {"detach", "t", "transpose", "view", "_unsafe_view", "expand", "clone", "alias", "reshape", "permute",
                 "squeeze", "unsqueeze", "select", "slice", "as_strided", "lift_fresh", "zeros_like", "ones_like",
                 "empty_like", "new_zeros", "new_empty", "new_empty_strided", "empty_strided", "zero", "fill",
                 "_to_copy_upcast"}  # fmt: skip


class GradientCensus(TorchDispatchMode):
    """Counts, for every backward op whose result is in the gradient dtype, what rounding its exact result
    (the op re-run in float64 on the same inputs) to the gradient format did: flushed to zero, subnormal.

    This is the simulator's definition (the flags of each gradient's rounding from its exact value), applied
    to every rounding op torch's backward runs; views and copies that cannot round are left out. `seconds` is
    the wall time of that extra work (the float64 re-runs and their rounding), which step times leave out.
    """

    def __init__(self, dtype: torch.dtype, fmt: Format, keep_values: bool, counting: bool = True) -> None:
        super().__init__()
        self.dtype, self.fmt, self.keep_values, self.counting = dtype, fmt, keep_values, counting
        self.flags = Flags()
        self.values: list[np.ndarray] = []
        self.seconds = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__.rstrip("_")
        if not self.counting or name in _NOT_ROUNDING or func._schema.is_mutable:
            return out
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        wanted = [i for i, t in enumerate(outputs) if isinstance(t, torch.Tensor) and t.dtype == self.dtype]
        if not wanted:
            return out
        began = time.perf_counter()
        self._count(func, args, kwargs, wanted)
        self.seconds += time.perf_counter() - began
        return out

    def _count(self, func, args, kwargs, wanted: list[int]) -> None:
        exact = func(*tree_map(_to_float64, args), **tree_map(_to_float64, kwargs))
        exact = exact if isinstance(exact, (tuple, list)) else (exact,)
        for i in wanted:
            values = exact[i].detach().cpu().numpy().reshape(-1)
            with suspended(), np.errstate(all="ignore"):
                _, flags = round_to(values, self.fmt, flags=True, on_nan="zero")
            self.flags += flags
            if self.keep_values:
                self.values.append(values)

    def start(self) -> None:
        """Count from here on: the loss's own backward (unscaled, in the loss's format) is not a gradient cast."""
        self.counting = True


def _to_float64(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().double()
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return torch.float64  # a cast's target dtype: the exact value is the input itself
    return value


# ---- loss scaling ----------------------------------------------------------------------------------------
class _GradientFactor(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by a constant (the loss multiplier times the scale)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float, on_backward: Callable[[], None]) -> torch.Tensor:
        ctx.factor, ctx.on_backward = factor, on_backward
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.on_backward()  # the gradients the simulator counts start here, scaled
        return grad * ctx.factor, None, None  # one rounding of grad·factor to the gradient's dtype


class _Scaling:
    """The policy's loss scaler as torch runs it: torch.amp.GradScaler where it can (fp32 weights, torch's
    own state machine), else fpsim's scaler state machine on the host driving torch's unscale kernel."""

    def __init__(self, policy: Policy, mech: Mechanism, device: torch.device) -> None:
        self.host = simulator._make_scaler(policy)
        self.grad_scaler = None
        torch_rule = isinstance(self.host, DynamicLossScaler) and self.host.min_scale == 0 and self.host.hysteresis == 1
        if torch_rule and mech.param_dtype == torch.float32:
            self.grad_scaler = torch.amp.GradScaler(
                device.type, init_scale=self.host.scale, growth_factor=self.host.growth_factor,
                backoff_factor=self.host.backoff_factor, growth_interval=self.host.growth_interval,
            )  # fmt: skip
            self.host = None
        self.device = device

    @property
    def active(self) -> bool:
        return self.grad_scaler is not None or self.host is not None

    @property
    def scale(self) -> float:
        if self.grad_scaler is not None:
            return float(self.grad_scaler.get_scale())
        return self.host.scale if self.host is not None else 1.0

    def backward(self, loss: torch.Tensor, multiplier: float) -> None:
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss * multiplier).backward()
        else:
            (loss * (multiplier * self.scale)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> bool:
        """Unscale the gradients in place; return found_inf (False without a scaler: nobody checks)."""
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(optimizer)
            return sum(v.item() for v in self.grad_scaler._found_inf_per_device(optimizer).values()) > 0
        if self.host is None:
            return False
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        with np.errstate(divide="ignore", over="ignore"):  # a scale backed off to 0 gives inf, as in torch
            inverse = float(np.float32(np.divide(1.0, np.float32(self.host.scale))))  # GradScaler's inv_scale
        found = torch.zeros((), dtype=torch.float32, device=self.device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.tensor(inverse, device=self.device))
        return bool(found.item())

    def step_and_update(self, optimizer: torch.optim.Optimizer, found_inf: bool) -> None:
        if self.grad_scaler is not None:
            self.grad_scaler.step(optimizer)  # skips optimizer.step() on found_inf
            self.grad_scaler.update()
            return
        if not found_inf:
            optimizer.step()
        if self.host is not None:
            self.host.update(found_inf)


# ---- global flags ----------------------------------------------------------------------------------------
_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


@contextlib.contextmanager
def _torch_settings(device: torch.device, threads: int | None = None) -> Iterator[None]:
    """Deterministic algorithms on, TF32 off and `threads` intra-op threads (None: torch's own count) for the
    run; every global setting restored afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # fmt: skip
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    workspace = os.environ.get(_WORKSPACE)
    if device.type == "cuda" and workspace is None:
        os.environ[_WORKSPACE] = ":4096:8"  # cuBLAS is deterministic only with it
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[2], saved[3]
        if workspace is None:
            os.environ.pop(_WORKSPACE, None)
        torch.set_num_threads(saved_threads)


def environment(device: torch.device, mech: Mechanism, fp8_matmul: str = "emulated") -> dict:
    """What this run's numbers depend on: torch, the device, the matmul flags, determinism, autocast."""
    cuda = device.type == "cuda"
    matmul = torch.backends.cuda.matmul
    return {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
        "threads": torch.get_num_threads(),
        "allow_tf32": matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "allow_fp16_reduced_precision_reduction": matmul.allow_fp16_reduced_precision_reduction,
        "allow_bf16_reduced_precision_reduction": matmul.allow_bf16_reduced_precision_reduction,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "autocast_dtype": _name(mech.dtype) if mech.kind == "autocast" else None,
        "param_dtype": _name(mech.param_dtype),
        "mechanism": mech.describe(),
        "fp8_matmul": fp8_matmul if mech.kind == "fp8" else None,
    }


# ---- the run ---------------------------------------------------------------------------------------------
class Trainer:
    """One Config on one device: the torch module, optimizer and scaler, stepped one batch at a time."""

    def __init__(
        self, config: simulator.Config, device: torch.device, dataset: datasets.Dataset, fp8_matmul: str = "emulated"
    ) -> None:
        self.config, self.device, self.dataset = config, device, dataset
        self.policy = config.validate()
        self.mech = mechanism(self.policy)
        check_fp8_matmul(fp8_matmul, self.mech, device)
        self.precision = Precision(self.policy)
        sizes = [dataset.n_features, *config.hidden, dataset.n_classes]
        self.reference = MLP(sizes, config.activation, config.norm, config.init_gain, config.seed)
        self.master = {k: self.precision.cast(v, self.precision.master) for k, v in self.reference.params.items()}
        self.model = TorchMLP(sizes, config.activation, config.norm).to(device=device, dtype=self.mech.param_dtype)
        load_simulator_state(self.model, self.master)
        self.params = self.model.parameter_map()
        self.optimizer = make_optimizer(config, list(self.params.values()))
        self.scaling = _Scaling(self.policy, self.mech, device)
        self.grads_format = get_format(self.policy.grads)
        self.max_activation = 0.0
        self.model.observe = self._observe
        self.census: GradientCensus | Fp8Census | None = None
        if self.mech.kind == "fp8":
            self.model.quantize = lambda t: _ScaledFakeQuantize.apply(t, self)
            if fp8_matmul == "scaled_mm":
                self.model.matmul = _ScaledMM.apply
        if self.mech.kind == "blocks":
            self.model.matmul = lambda x, w: block_matmul(x, w, self.mech.blocks, gradient_flags=self._count_flags)

    def _count_flags(self, flags: Flags) -> None:
        """Counts a block product's gradient operand quantization (dy's, in the backward pass) in the census."""
        self.census.flags += flags

    def _observe(self, t: torch.Tensor) -> None:
        finite = t.detach().abs().float()
        finite = finite[torch.isfinite(finite)]
        if finite.numel():
            self.max_activation = max(self.max_activation, float(finite.max()))

    def inputs(self, x: np.ndarray) -> torch.Tensor:
        """Features as the model receives them: fp32 (autocast casts them itself), or the cast model's dtype,
        rounded once from float64 by fpsim (torch's float64 → fp16 cast goes through fp32)."""
        x = self.precision.cast(x, self.precision.compute if self.mech.kind == "cast" else FP32)
        return torch.from_numpy(x).to(device=self.device, dtype=self.mech.param_dtype)

    def autocast(self):
        if self.mech.kind != "autocast":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.mech.dtype)

    def step(self, x: np.ndarray, y: np.ndarray, keep_gradients: bool = False) -> dict:
        """One training step; returns the simulator's per-step records plus the census of gradient values."""
        cfg, model, optimizer = self.config, self.model, self.optimizer
        inputs, labels = self.inputs(x), torch.from_numpy(y).to(self.device)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        self.max_activation = 0.0
        scale = self.scaling.scale
        census = self.census = self._census(keep_gradients)
        with self.autocast():
            logits = model(inputs)
            if self.mech.kind == "cast":  # an fp16 loss times 2^16 is inf in fp16: scale the logits' gradient
                logits = _GradientFactor.apply(logits, cfg.loss_multiplier * scale, census.start)
            loss = functional.cross_entropy(logits, labels)
        with census:
            if self.mech.kind == "cast":
                loss.backward()
            else:
                self.scaling.backward(loss, cfg.loss_multiplier)
        found_inf = self.scaling.unscale(optimizer)
        if cfg.clip_norm is not None and not found_inf:  # after unscaling, as torch's recipe says
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.clip_norm, foreach=False)
        before = {k: p.detach().clone() for k, p in self.params.items()}
        self.scaling.step_and_update(optimizer, found_inf)
        lost = 0.0 if found_inf else self._lost_updates(before)
        flags = census.flags
        return {
            "loss": float(loss.detach().float()), "scale": scale, "skipped": found_inf,
            "flushed": flags.fraction("flushed_to_zero"), "subnormal": flags.fraction("subnormal"),
            "lost_updates": lost, "max_activation": self.max_activation, "gradient_values": census.values,
            "census_seconds": census.seconds,
        }  # fmt: skip

    def _census(self, keep_values: bool):
        if self.mech.kind == "fp8":
            return Fp8Census(keep_values)
        dtype = self.mech.dtype if self.mech.kind != "plain" else torch.float32
        return GradientCensus(dtype, self.grads_format, keep_values, counting=self.mech.kind != "cast")

    def _lost_updates(self, before: dict[str, torch.Tensor]) -> float:
        """The simulator's definition: elements whose update is nonzero but whose stored weight did not change.

        The update's direction is the optimizer's own: SGD's momentum buffer (the gradient without momentum),
        Adam's first moment.
        """
        lost = total = 0
        for name, param in self.params.items():
            state = self.optimizer.state[param]
            direction = state.get("exp_avg", state.get("momentum_buffer"))
            direction = param.grad if direction is None else direction
            lost += int(((direction != 0) & (param.detach() == before[name])).sum())
            total += param.numel()
        return lost / total

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            logits = self.model(self.inputs(x)).float()
        logits = torch.where(torch.isnan(logits), -math.inf, logits)  # NaN never wins, as in the simulator
        return float((logits.argmax(dim=1).cpu().numpy() == y).mean())


def make_optimizer(config: simulator.Config, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The simulator's optimizer as torch's single-tensor implementation: never fused, never foreach."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, foreach=False, fused=False)
    return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, foreach=False, fused=False)


def run(
    config: simulator.Config,
    *,
    device: str = "auto",
    dataset: datasets.Dataset | None = None,
    on_step: Callable[[simulator.History], None] | None = None,
    fp8_matmul: str = "emulated",
) -> simulator.History:
    """Train `config` with torch on `device` ("cpu", "cuda", "auto"); the History the simulator's run returns,
    plus wall time per step, peak memory (CUDA only; None on the CPU) and the environment record.

    A step's time is its forward, backward, unscale and optimizer step, without the gradient census's own work
    (the float64 re-run of each backward op, which costs several times the step); `seconds` is the whole run,
    census and evaluations included."""
    policy = config.validate()
    if config.kernels != "exact":
        raise ValueError(f"kernels={config.kernels!r} sets the simulator's rounding points; torch runs its own "
                         "kernels: use kernels='exact' (the default) with backend='torch'")  # fmt: skip
    if policy.accumulate in MATRIX_UNITS:
        raise ValueError(f"accumulate={policy.accumulate!r} is a simulator matmul model; the torch backend runs the "
                         "device's own matmuls: drop accumulate with backend='torch'")  # fmt: skip
    target = resolve_device(device)
    check_fp8_matmul(fp8_matmul, mechanism(policy), target)  # an unsupported policy fails before any work
    dataset = simulator._load_data(config) if dataset is None else simulator._checked(dataset)
    if config.batch_size > len(dataset.x_train):
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(dataset.x_train)} training examples")
    with _torch_settings(target, config.threads):
        trainer = Trainer(config, target, dataset, fp8_matmul)
        history = simulator.History(config.to_dict(), policy.to_dict(), backend="torch",
                                    activation_format_max=get_format(policy.compute).max,
                                    environment=environment(target, trainer.mech, fp8_matmul))  # fmt: skip
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        start = time.perf_counter()
        for step in range(config.steps):
            batch = datasets.batches(len(dataset.x_train), config.batch_size, config.seed, step)
            began = time.perf_counter()
            record = trainer.step(
                dataset.x_train[batch], dataset.y_train[batch], keep_gradients=step + 1 == config.steps
            )
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            history.step_seconds.append(time.perf_counter() - began - record["census_seconds"])  # training only
            for name in ("loss", "scale", "skipped", "flushed", "subnormal", "lost_updates", "max_activation"):
                getattr(history, name).append(record[name])
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                history.eval_steps.append(step + 1)
                history.test_accuracy.append(trainer.accuracy(dataset.x_test, dataset.y_test))
            if on_step:
                on_step(history)
        history.gradient_sample = sample(record["gradient_values"], history.scale[-1])
        history.seconds = time.perf_counter() - start
        history.peak_memory_bytes = int(torch.cuda.max_memory_allocated(target)) if target.type == "cuda" else None
    return history


def sample(values: list[np.ndarray], scale: float) -> list[float]:
    """Every k-th exact gradient value of the last step (deterministic), divided by its loss scale."""
    if not values:
        return []
    seen = np.concatenate(values)
    stride = max(1, seen.size // simulator.GRADIENT_SAMPLE)
    with np.errstate(all="ignore"):
        return (seen[::stride][: simulator.GRADIENT_SAMPLE] / scale).tolist()


# ---- fp8: per-tensor-scaled fake quantization, and real FP8 GEMMs where the GPU has them --------------------
FP8_MATMULS = ("emulated", "scaled_mm")


def scaled_round(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """The simulator's per-tensor scaled cast (fpsim.policies.scaled_cast): scale by the power of two that brings
    amax just under fmt's max, round with fpsim.torch's codec (saturating, NaN to 0), scale back; exact in float64."""
    wide = x.detach().double()
    amax = float(wide.abs().max()) if wide.numel() else 0.0
    if not math.isfinite(amax) or amax == 0:
        return fpsim_round(wide, fmt, overflow="saturate", on_nan="zero").to(x.dtype)
    shift = math.floor(math.log2(fmt.max) - math.log2(amax))  # a difference of logs: max / amax may overflow
    rounded = fpsim_round(wide * 2.0**shift, fmt, overflow="saturate", on_nan="zero")
    return (rounded * 2.0**-shift).to(x.dtype)  # powers of two in float64: exact


class Fp8Census:
    """The fp8 policy's gradient counts, taken where its backward casts round (the simulator's definition for
    scaled casts: a nonzero gradient that became zero is flushed; subnormals are not counted)."""

    def __init__(self, keep_values: bool) -> None:
        self.keep_values, self.flags, self.values, self.seconds = keep_values, Flags(), [], 0.0

    def __enter__(self) -> Fp8Census:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def count(self, g: torch.Tensor, rounded: torch.Tensor) -> None:
        began = time.perf_counter()
        flushed = int(((rounded == 0) & (g != 0)).sum())
        self.flags += Flags(total=g.numel(), flushed_to_zero=flushed)
        if self.keep_values:
            self.values.append(g.detach().double().cpu().numpy().reshape(-1))
        self.seconds += time.perf_counter() - began


class _ScaledFakeQuantize(torch.autograd.Function):
    """Forward: the scaled cast to the compute format (e4m3); backward: the scaled cast of the gradient to
    the grads format (e5m2), counted. fpsim.torch.quantize rounds without per-tensor scaling, so fp8 uses this."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, trainer: Trainer) -> torch.Tensor:
        ctx.trainer = trainer
        return scaled_round(x, trainer.precision.compute)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rounded = scaled_round(grad, ctx.trainer.precision.grads)
        ctx.trainer.census.count(grad, rounded)
        return rounded, None


class _ScaledMM(torch.autograd.Function):
    """x @ w.T of two fake-quantized fp32 tensors on FP8 Tensor Cores (torch._scaled_mm, e4m3 × e4m3 → fp32);
    the backward pass is the emulated one (fp32 products of the same quantized values)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        (a, scale_a), (b, scale_b) = _as_fp8(x), _as_fp8(w)
        a, b = _pad(a, 16, 16), _pad(b, 16, 16)  # _scaled_mm needs every dimension a multiple of 16
        out = torch._scaled_mm(a, b.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.float32)
        return out[: x.shape[0], : w.shape[0]]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        return grad @ w, grad.t() @ x


def _as_fp8(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fake-quantized tensor (e4m3 values times a power of two) as float8_e4m3fn codes and its fp32 scale."""
    amax = float(t.abs().max())
    shift = 0 if amax == 0 else math.floor(math.log2(448.0) - math.log2(amax))  # exact: scaling up stays on grid
    codes = (t.double() * 2.0**shift).to(torch.float8_e4m3fn)
    return codes, torch.tensor(2.0**-shift, dtype=torch.float32, device=t.device)


def _pad(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    pad_rows, pad_cols = -t.shape[0] % rows, -t.shape[1] % cols
    if not (pad_rows or pad_cols):
        return t.contiguous()
    out = torch.zeros(t.shape[0] + pad_rows, t.shape[1] + pad_cols, dtype=t.dtype, device=t.device)
    out[: t.shape[0], : t.shape[1]] = t
    return out


def check_fp8_matmul(fp8_matmul: str, mech: Mechanism, device: torch.device) -> None:
    """`scaled_mm` needs the fp8 policy, a CUDA device of compute capability ≥ 8.9 and torch._scaled_mm."""
    if fp8_matmul not in FP8_MATMULS:
        raise ValueError(f"fp8_matmul must be one of {', '.join(FP8_MATMULS)}; got {fp8_matmul!r}")
    if fp8_matmul == "emulated":
        return
    if mech.kind != "fp8":
        raise ValueError("fp8_matmul='scaled_mm' needs policy fp8")
    capable = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    if not capable or not hasattr(torch, "_scaled_mm"):
        raise ValueError("fp8_matmul='scaled_mm' needs torch._scaled_mm on a CUDA GPU of compute capability "
                         "8.9 or newer (Ada, Hopper); use fp8_matmul='emulated'")  # fmt: skip


# ---- synced comparison: torch starts every step from the simulator's exact state ------------------------------
@dataclass
class SyncedStep:
    """One synced step: the fraction of weight elements bit-identical and finite after it, per tensor and overall;
    the fraction that is NaN or inf on either side (`non_finite`: never counted as identical, even where both
    sides hold NaN); and the first tensor (in backward order, where a divergence starts) whose values differ,
    with its largest ulp distance (elements NaN on both sides do not differ)."""

    step: int
    identical: float
    per_tensor: dict[str, float]
    first_different: str | None
    max_ulps: int
    loss_relative_difference: float
    non_finite: float = 0.0


def synced_step_agreement(
    config: simulator.Config, steps: int | None = None, *, device: str = "cpu"
) -> list[SyncedStep]:
    """Run the simulator for `steps` steps (the config's by default); before each, load its exact state
    (weights, optimizer state, BatchNorm statistics, loss scale) into torch, let both take the step on the
    same batch, and compare the weights after it bit for bit."""
    steps = config.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    target = resolve_device(device)
    dataset = simulator._load_data(config)
    with _torch_settings(target, config.threads):
        trainer = Trainer(config, target, dataset)
        sim = _Simulator(config, trainer)
        results = []
        for step in range(steps):
            batch = datasets.batches(len(dataset.x_train), config.batch_size, config.seed, step)
            x, y = dataset.x_train[batch], dataset.y_train[batch]
            sim.load_into(trainer)
            real = trainer.step(x, y)
            expected = sim.step(x, y)
            results.append(_compare(step + 1, sim.master, trainer, expected["loss"], real["loss"]))
    return results


class _Simulator:
    """The simulator's training state, stepped one batch at a time (the loop of fpsim.train.run)."""

    def __init__(self, config: simulator.Config, trainer: Trainer) -> None:
        self.config = config
        self.p = Precision(trainer.policy, kernels=config.kernels, threads=torch.get_num_threads())  # the run's
        self.model, self.master = trainer.reference, {k: v.copy() for k, v in trainer.master.items()}
        self.optimizer = simulator._Optimizer(config, self.master, self.p)
        self.scaler = simulator._make_scaler(trainer.policy)

    def step(self, x: np.ndarray, y: np.ndarray) -> dict:
        history = simulator.History({}, {})
        simulator._train_step(self.model, self.master, self.optimizer, self.scaler, self.p, self.config, x, y, history)
        return {"loss": history.loss[0]}

    def load_into(self, trainer: Trainer) -> None:
        load_simulator_state(trainer.model, self.master, self.model.running)
        for name, param in trainer.params.items():
            first, second = (_like(param, to_torch_name(name, s)) for s in self.optimizer.state[name])
            state = trainer.optimizer.state[param]
            state.clear()
            if self.config.optimizer == "sgd" and self.config.momentum > 0:
                state["momentum_buffer"] = first
            elif self.config.optimizer == "adam" and self.optimizer.t > 0:
                state.update(step=torch.tensor(float(self.optimizer.t)), exp_avg=first, exp_avg_sq=second)
        scaling = trainer.scaling
        if scaling.grad_scaler is not None:
            scaling.grad_scaler.load_state_dict(self.scaler.state_dict())
        elif scaling.host is not None:
            scaling.host.scale, scaling.host.growth_tracker = (
                self.scaler.scale,
                getattr(self.scaler, "growth_tracker", 0),
            )


def _like(param: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    """Optimizer state for `param`, contiguous as torch's own: a strided buffer sends add_ down another kernel
    (for fp16 its scalar path keeps alpha in fp32 where the vectorized one rounds it to fp16)."""
    return torch.from_numpy(np.ascontiguousarray(values)).to(param)


def _compare(step: int, master: dict[str, np.ndarray], trainer: Trainer, loss: float, real_loss: float) -> SyncedStep:
    dtype = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: None}[trainer.mech.param_dtype]
    per_tensor, first, max_ulps, same_total, bad_total, total = {}, None, 0, 0, 0, 0
    backward_order = sorted(master, key=lambda k: (-int(k.lstrip(string.ascii_letters)), k))  # last layer first
    for name in backward_order:
        real = to_torch_name(name, trainer.params[name].detach().double().cpu().numpy())
        expected = master[name]
        finite = np.isfinite(real) & np.isfinite(expected)  # NaN == NaN would hide a diverged run: counted apart
        same = (real == expected) | (np.isnan(real) & np.isnan(expected))
        per_tensor[name] = float((same & finite).mean())
        same_total, bad_total = same_total + int((same & finite).sum()), bad_total + int((~finite).sum())
        total += same.size
        if first is None and not same.all():
            first, max_ulps = name, _max_ulps(real[~same], expected[~same], dtype)
    with np.errstate(all="ignore"):
        relative = abs(real_loss - loss) / abs(loss) if loss else abs(real_loss)
    return SyncedStep(step, same_total / total, per_tensor, first, max_ulps, float(relative), bad_total / total)


def _max_ulps(a: np.ndarray, b: np.ndarray, dtype) -> int:
    """The largest distance in representable values of the weights' format (fp32 or fp16) between a and b."""
    if dtype is None:  # bf16 weights: the top half of the fp32 pattern orders them
        return _max_ulps(a, b, np.float32) >> 16
    bits = {np.float32: np.int32, np.float16: np.int16}[dtype]
    ia, ib = (np.asarray(v, dtype=dtype).view(bits).astype(np.int64) for v in (a, b))
    ia, ib = (np.where(i < 0, np.iinfo(bits).min - i, i) for i in (ia, ib))  # sign-magnitude to ordered ints
    return int(np.max(np.abs(ia - ib)))
