"""The experiment runner: a JSON-serialisable Config in, a History of every step out, under a precision policy.

Invariant: `run(config)` is a pure function of the config (seeded data, initialisation and batches), and an
overflowing step leaves weights and optimizer state untouched (BatchNorm's running statistics still move,
as in torch, since the forward pass ran).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import numbers
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import IO

import numpy as np

from fpsim import data as datasets
from fpsim import kernels
from fpsim._files import atomic_write
from fpsim.formats import FP32, get_format
from fpsim.nn import ACTIVATIONS, MLP, NORMS
from fpsim.policies import KERNELS, Policy, Precision, get_policy
from fpsim.scaling import DynamicLossScaler, StaticLossScaler, apex_scaler, hysteresis_scaler, naive_scaler

OPTIMIZERS = ("sgd", "adam")
GRADIENT_SAMPLE = 4096  # gradient values kept from the last step, for `fpsim plot histogram --from`
DATASETS = ("digits", "teacher")
BACKENDS = ("numpy", "torch")
_DATA_SHAPES = {"digits": (64, 10, 1348), "teacher": (32, 10, 1500)}  # features, classes, training examples
MAX_STEPS = 1_000_000  # a History keeps every step (about 250 bytes each in memory, 150 in JSON)
MAX_TRAINING_BYTES = 4 * 2**30  # the simulator's estimated peak memory, refused above this
MAX_TRAINING_SECONDS = 7 * 86400  # an estimated run time above a week is refused
_BYTES_PER_PARAMETER = 128  # float64 copies per weight (master, compute cast, gradients, state): measured ~100
_SECONDS_PER_STEP = 2e-3  # a step's fixed cost on one core, measured with the 64-unit digits MLP
_SECONDS_PER_MAC = 3e-9  # and per batch example per weight, measured with 2048-unit layers


@dataclass
class Config:
    """Everything one run depends on. `lr` multiplies the optimizer step; `loss_multiplier` scales the loss
    (and so every gradient) to move gradients down the exponent range without changing the optimum."""

    policy: str = "fp32"
    data: str = "digits"
    hidden: list[int] = field(default_factory=lambda: [64])
    activation: str = "relu"
    norm: str = "batch"
    init_gain: float = 1.0
    loss_multiplier: float = 1.0
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    batch_size: int = 64
    steps: int = 300
    scaler: str | None = None
    loss_scale: float | None = None
    accumulate: str | None = None  # replaces the policy's: fp32, fp64 or a matrix unit such as "h100_fp16"
    clip_norm: float | None = None
    eval_every: int = 50
    seed: int = 0
    kernels: str = "exact"
    threads: int | None = None  # intra-op threads of kernels="torch" (None: torch.get_num_threads(), else 1)

    def validate(self) -> Policy:
        """Check every field before training starts; return the policy with the config's scaler and accumulate
        overrides."""
        policy = get_policy(self.policy)
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {', '.join(DATASETS)}; got {self.data!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        for name in ("lr", "loss_multiplier", "init_gain"):
            if not _is_number(getattr(self, name)) or not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be a number in [0, 1), got {self.momentum!r}")
        for name in ("batch_size", "steps", "eval_every"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if self.clip_norm is not None and (not _is_number(self.clip_norm) or not self.clip_norm > 0):
            raise ValueError(f"clip_norm must be a finite number > 0 or None, got {self.clip_norm!r}")
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}; got {self.kernels!r}")
        if self.threads is not None and not _is_positive_int(self.threads):
            raise ValueError(f"threads must be a positive int or None (torch's own count), got {self.threads!r}")
        self._validate_model()
        self._validate_size()
        overrides = {name: getattr(self, name) for name in ("scaler", "loss_scale", "accumulate")}
        return replace(policy, **{k: v for k, v in overrides.items() if v is not None})  # the policy re-validates

    def _validate_model(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {self.norm!r}")
        if not isinstance(self.hidden, list | tuple) or not all(_is_positive_int(n) for n in self.hidden):
            raise ValueError(f"hidden must be a list of positive ints (units per hidden layer), got {self.hidden!r}")

    def _validate_size(self) -> None:
        """Refuse, with the estimate, a run too large to finish: checked before any memory is taken."""
        if self.steps > MAX_STEPS:
            raise ValueError(
                f"steps={self.steps} is too many: it would take about {_duration(self.steps * self.seconds_per_step())}"
                f" and keep {_size(250 * self.steps)} of history; use at most {MAX_STEPS:,}"
            )
        examples = _DATA_SHAPES[self.data][2]
        if self.batch_size > examples:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {examples} training examples of {self.data}")
        if self.memory_bytes() > MAX_TRAINING_BYTES:
            raise ValueError(
                f"hidden={self.hidden} gives {self.parameter_count():,} parameters, about "
                f"{_size(self.memory_bytes())} of memory to train; the simulator allows {_size(MAX_TRAINING_BYTES)}:"
                " use smaller hidden layers"
            )
        seconds = self.steps * self.seconds_per_step()
        if seconds > MAX_TRAINING_SECONDS:
            raise ValueError(
                f"this run would take about {_duration(seconds)} ({self.steps:,} steps of about "
                f"{_duration(self.seconds_per_step())}); the limit is {_duration(MAX_TRAINING_SECONDS)}:"
                " use fewer steps, a smaller batch or smaller hidden layers"
            )

    def parameter_count(self) -> int:
        """Weights, biases and norm parameters of the config's MLP on its named data set."""
        features, classes, _ = _DATA_SHAPES[self.data]
        sizes = [features, *self.hidden, classes]
        norms = 2 * sum(self.hidden) if self.norm != "none" else 0
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(sizes)) + norms

    def memory_bytes(self) -> int:
        """Estimated peak memory of a run: float64 copies of every weight, and of every activation of a batch."""
        features, classes, _ = _DATA_SHAPES[self.data]
        activations = 8 * 8 * max(self.batch_size, 500) * (features + sum(self.hidden) + classes)  # or the test set
        return _BYTES_PER_PARAMETER * self.parameter_count() + activations

    def seconds_per_step(self) -> float:
        """Estimated time of one training step on one core (about; the machine and policy change it)."""
        return _SECONDS_PER_STEP + _SECONDS_PER_MAC * self.batch_size * self.parameter_count()

    def to_dict(self) -> dict:
        return asdict(self)  # a custom Policy becomes a dict, which get_policy accepts back

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**values)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _duration(seconds: float) -> str:
    for unit, length in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= length:
            return f"{seconds / length:.3g} {unit}"
    return f"{seconds:.3g} s"


def _size(n_bytes: float) -> str:
    for unit, length in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= length:
            return f"{n_bytes / length:.3g} {unit}"
    return f"{n_bytes / 1e3:.3g} kB"


# Each scenario's settings were chosen from measured runs (README, "Mixed precision training"); the
# comment beside each gives the effect those measurements showed, which the tests check on fewer steps.
SCENARIOS: dict[str, tuple[str, dict]] = {
    "baseline": ("the digits MLP as it is: every policy trains", {}),
    "underflow": (
        "the loss 2^16 times smaller (lr 2^16 times larger): fp16 flushes ~28% of gradients and trains worse; "
        "loss scaling (2^24 here) recovers fp32's accuracy",
        {"loss_multiplier": 2.0**-16, "lr": 0.5 * 2.0**16, "momentum": 0.0, "loss_scale": 2.0**24},
    ),
    "overflow": (
        "the loss 2^20 times larger (lr 2^20 times smaller): fp16 gradients overflow and the loss turns NaN; "
        "amp's dynamic scale backs off from 2^16 in ~18 skipped steps and training recovers",
        {"loss_multiplier": 2.0**20, "lr": 0.1 * 2.0**-20},
    ),
    "lost-updates": (
        "large weights and a small lr: fp16 weights drop ~70% of updates (below half an ulp) and learn less; "
        "fp32 master weights lose only ~2% (momentum tails)",
        {"lr": 0.001, "init_gain": 4.0},
    ),
}


def scenario(name: str, **overrides: object) -> Config:
    """The Config of a named scenario, with any field overridden (policy, steps, seed, ...)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; the scenarios are {', '.join(SCENARIOS)}")
    return Config(**{**SCENARIOS[name][1], **overrides})


@dataclass
class History:
    """Per-step records of one run, plus test accuracy every `eval_every` steps and a sample of the last
    step's gradients (divided by that step's loss scale) for histograms."""

    config: dict
    policy: dict
    loss: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    skipped: list[bool] = field(default_factory=list)
    flushed: list[float] = field(default_factory=list)  # per step: nonzero gradients cast to zero (block policies:
    # with the gradient operands' block quantization in the backward products), over all gradient values cast
    subnormal: list[float] = field(default_factory=list)
    lost_updates: list[float] = field(default_factory=list)
    max_activation: list[float] = field(default_factory=list)
    activation_format_max: float = 0.0
    eval_steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    gradient_sample: list[float] = field(default_factory=list)
    seconds: float = 0.0
    backend: str = "numpy"
    step_seconds: list[float] = field(default_factory=list)  # torch backend: each step's training time, census out
    peak_memory_bytes: int | None = None  # torch backend on CUDA: torch.cuda.max_memory_allocated; else None
    environment: dict = field(default_factory=dict)  # torch backend: version, device, matmul flags, autocast

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1] if self.test_accuracy else math.nan

    def summary(self) -> dict:
        finite = [x for x in self.loss if math.isfinite(x)]
        return {
            "policy": self.policy["name"],
            "final loss": self.loss[-1] if self.loss else math.nan,
            "best loss": min(finite) if finite else math.nan,
            "test accuracy": self.final_accuracy,
            "skipped steps": sum(self.skipped),
            "flushed %": 100 * float(np.mean(self.flushed)) if self.flushed else 0.0,
            "lost updates %": 100 * float(np.mean(self.lost_updates)) if self.lost_updates else 0.0,
            "seconds": self.seconds,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self))


RESULTS_SUFFIXES = (".json",)
CSV_SUFFIXES = (".csv",)
_STEP_FIELDS = ("loss", "scale", "skipped", "flushed", "subnormal", "lost_updates", "max_activation")
_EVAL_FIELDS = ("eval_steps", "test_accuracy")


def save_results(histories: list[History], path: str | os.PathLike) -> None:
    """Write runs to one JSON file, atomically (fpsim._files): a crash or a full disk leaves the old file."""

    def write(file: IO[str]) -> None:
        json.dump({"runs": [asdict(h) for h in histories]}, file)  # NaN and inf as Python's JSON writes them

    atomic_write(path, write, suffixes=RESULTS_SUFFIXES, argument="results path")


def save_csv(histories: list[History], path: str | os.PathLike) -> None:
    """Write runs as CSV, one row per run per step; test accuracy only on the steps that evaluated it."""

    def write(file: IO[str]) -> None:
        rows = csv.writer(file, lineterminator="\n")
        rows.writerow(["run", "policy", "step", *_STEP_FIELDS, "test_accuracy"])
        for number, history in enumerate(histories, start=1):
            accuracy = dict(zip(history.eval_steps, history.test_accuracy))
            columns = [getattr(history, name) for name in _STEP_FIELDS]
            for step, values in enumerate(zip(*columns), start=1):
                cells = [int(v) if isinstance(v, bool) else v for v in values]  # skipped as 0/1
                rows.writerow([number, history.policy["name"], step, *cells, accuracy.get(step, "")])

    atomic_write(path, write, suffixes=CSV_SUFFIXES, argument="CSV path")


def load_results(path: str | os.PathLike) -> list[History]:
    """The runs of a results file of `save_results`; `ValueError` naming the file and the problem otherwise."""
    content = _read_json(path)
    runs = content.get("runs") if isinstance(content, dict) else None
    if not isinstance(runs, list) or not runs:
        raise _bad_results(path, "it has no 'runs' list with at least one run")
    histories = [_history(run, path, number) for number, run in enumerate(runs, start=1)]
    for number, history in enumerate(histories, start=1):
        try:  # the config as training would check it (its policy included), and the policy the run used
            Config.from_dict(history.config).validate()
            get_policy(history.policy)
        except ValueError as err:
            raise _bad_results(path, f"run {number}: {err}") from None
        except TypeError as err:  # a policy object with missing or unknown fields
            raise _bad_results(path, f"run {number}: its policy is not a whole Policy ({err})") from None
    return histories


def _bad_results(path: str | os.PathLike, problem: str) -> ValueError:
    return ValueError(f"results file {os.fspath(path)!r}: {problem}; write one with `fpsim train --out FILE.json`")


def _read_json(path: str | os.PathLike) -> object:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise _bad_results(path, "no such file") from None
    except OSError as err:
        raise _bad_results(path, f"cannot read it ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise _bad_results(path, "it is a folder, not a file")
    if not stat.S_ISREG(mode):  # reading a FIFO or a device would block or never end
        raise _bad_results(path, "it is not a regular file (a device, FIFO or socket)")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except UnicodeDecodeError:
        raise _bad_results(path, "it is not text (binary content)") from None
    except json.JSONDecodeError as err:
        raise _bad_results(path, f"it is not JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except OSError as err:
        raise _bad_results(path, f"cannot read it ({err.strerror})") from None


def _history(run: object, path: str | os.PathLike, number: int) -> History:
    """One run of a results file, checked field by field so that plots and tables can trust it."""
    if not isinstance(run, dict):
        raise _bad_results(path, f"run {number} is not an object of History fields")
    known = {f.name for f in fields(History)}
    missing, unknown = {"config", "policy", *_STEP_FIELDS} - set(run), set(run) - known
    if missing or unknown:
        problem = (
            f"lacks {', '.join(sorted(missing))}" if missing else f"has unknown fields {', '.join(sorted(unknown))}"
        )
        raise _bad_results(path, f"run {number} {problem}")
    if not isinstance(run["config"], dict) or not isinstance(run["policy"], dict):
        raise _bad_results(path, f"run {number}: config and policy must be objects")
    if not isinstance(run["policy"].get("name"), str):
        raise _bad_results(path, f"run {number}: the policy has no name")
    for name in set(run) & {*_STEP_FIELDS, *_EVAL_FIELDS, "gradient_sample"}:
        if not isinstance(run[name], list) or not all(isinstance(v, numbers.Real) for v in run[name]):
            raise _bad_results(path, f"run {number}: {name} must be a list of numbers")
    for name in set(run) & {"activation_format_max", "seconds"}:
        if not isinstance(run[name], numbers.Real):
            raise _bad_results(path, f"run {number}: {name} must be a number")
    for group in (_STEP_FIELDS, _EVAL_FIELDS):
        lengths = {name: len(run.get(name, [])) for name in group}
        if len(set(lengths.values())) > 1:
            raise _bad_results(path, f"run {number}: {', '.join(group)} must have one entry per step each")
    return History(**run)


def _make_scaler(policy: Policy):
    return {
        "none": lambda: None,
        "static": lambda: StaticLossScaler(policy.loss_scale),
        "dynamic": lambda: DynamicLossScaler(init_scale=policy.loss_scale),
        "apex": apex_scaler,
        "hysteresis": lambda: hysteresis_scaler(init_scale=policy.loss_scale),
        "naive": lambda: naive_scaler(policy.loss_scale),
    }[policy.scaler]()


class _Optimizer:
    """SGD with momentum or Adam on the master weights, as a fused optimizer kernel: the step is computed from
    the fp32 gradients in float64, and weights and state are stored rounded to the master format."""

    def __init__(self, config: Config, params: dict[str, np.ndarray], precision: Precision) -> None:
        self.config, self.p, self.t = config, precision, 0
        self.state = {k: [np.zeros_like(v), np.zeros_like(v)] for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> float:
        """Update params in place; return the fraction of weight updates lost to rounding."""
        cfg, p, master = self.config, self.p, self.p.master
        self.t += 1
        lost = total = 0
        for name, weight in params.items():
            g = grads[name]
            first, second = self.state[name]
            if cfg.optimizer == "sgd" and p.kernels == "torch":
                new, velocity = kernels.sgd_step(weight, kernels.to_format(g, master), first, cfg.lr, cfg.momentum,
                                                 master)  # fmt: skip
                first[...] = velocity if cfg.momentum else first
                lost += int(np.count_nonzero((velocity != 0) & (new == weight)))
                total += weight.size
                weight[...] = new
                continue
            if cfg.optimizer == "sgd":
                velocity = cfg.momentum * first + g
                update = cfg.lr * velocity
                first[...] = p.cast(velocity, master)
            else:
                m, v = 0.9 * first + 0.1 * g, 0.999 * second + 0.001 * g * g
                update = cfg.lr * (m / (1 - 0.9**self.t)) / (np.sqrt(v / (1 - 0.999**self.t)) + 1e-8)
                first[...], second[...] = p.cast(m, master), p.cast(v, master)
            new = p.cast(weight - update, master)
            lost += int(np.count_nonzero((update != 0) & (new == weight)))  # below half an ulp of the weight
            total += weight.size
            weight[...] = new
        return lost / total


def _load_data(config: Config):
    return datasets.digits(seed=config.seed) if config.data == "digits" else datasets.teacher_student(seed=config.seed)


def _checked(dataset: datasets.Dataset) -> datasets.Dataset:
    """Refuse, before training, data the model cannot train or evaluate on."""
    if not (np.isfinite(dataset.x_train).all() and np.isfinite(dataset.x_test).all()):
        raise ValueError("dataset holds NaN or inf; clean it before training")
    if len(dataset.x_test) == 0 or dataset.x_train.shape[1:] != dataset.x_test.shape[1:]:
        raise ValueError("dataset needs a non-empty test set with as many features as the training set")
    for labels in (dataset.y_train, dataset.y_test):
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= dataset.n_classes:
            raise ValueError(f"labels must be ints from 0 to n_classes - 1 = {dataset.n_classes - 1}")
    return dataset


def _accuracy(model: MLP, weights: dict, x: np.ndarray, y: np.ndarray, p: Precision) -> float:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        logits, _ = model.forward(x, weights, p, train=False)
    return float(np.mean(np.argmax(np.nan_to_num(logits, nan=-np.inf), axis=1) == y))


def run(
    config: Config,
    *,
    dataset: datasets.Dataset | None = None,
    on_step: Callable[[History], None] | None = None,
    backend: str = "numpy",
    device: str | None = None,
) -> History:
    """Train the MLP of `config` under its policy; call `on_step(history)` after every step (progress).

    `dataset` replaces the config's named data set (its name is then only a label). `backend="torch"` runs the
    same experiment with torch on `device` ("cpu", "cuda" or "auto", the default): fpsim.torch.training.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "torch":
        return _torch_training().run(config, device="auto" if device is None else device, dataset=dataset,
                                     on_step=on_step)  # fmt: skip
    if device is not None:
        raise ValueError(f"device={device!r} needs backend='torch'; the numpy simulator runs on the CPU only")
    return _train(config, dataset, on_step)[0]


def last_gradients(config: Config, *, dataset: datasets.Dataset | None = None) -> list[np.ndarray]:
    """Train `config` in the simulator and return every gradient tensor its last step cast to the grads format,
    whole and in its shape (exact values before the cast, divided by the loss scale), in backward order: the
    tensors whose every k-th value History.gradient_sample keeps."""
    history, p = _train(config, dataset, None)
    return [g / history.scale[-1] for g in p.gradients_seen]


def _train(
    config: Config, dataset: datasets.Dataset | None, on_step: Callable[[History], None] | None
) -> tuple[History, Precision]:
    """The simulator's run: the History, and the Precision that still holds the last step's gradients."""
    policy = config.validate()
    dataset = _load_data(config) if dataset is None else _checked(dataset)
    if config.batch_size > len(dataset.x_train):
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(dataset.x_train)} training examples")
    threads = kernel_threads(config)
    p = Precision(policy, kernels=config.kernels, threads=threads)
    model = MLP([dataset.n_features, *config.hidden, dataset.n_classes], config.activation, config.norm,
                config.init_gain, config.seed)  # fmt: skip
    master = {k: p.cast(v, p.master) for k, v in model.params.items()}
    optimizer, scaler = _Optimizer(config, master, p), _make_scaler(policy)
    recorded = replace(config, threads=threads) if config.kernels == "torch" else config  # the count it modelled
    history = History(recorded.to_dict(), policy.to_dict(), activation_format_max=get_format(policy.compute).max)
    start = time.perf_counter()
    for step in range(config.steps):
        batch = datasets.batches(len(dataset.x_train), config.batch_size, config.seed, step)
        _train_step(
            model, master, optimizer, scaler, p, config, dataset.x_train[batch], dataset.y_train[batch], history
        )
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            weights = _compute_weights(master, p)
            history.eval_steps.append(step + 1)
            history.test_accuracy.append(_accuracy(model, weights, dataset.x_test, dataset.y_test, p))
        if on_step:
            on_step(history)
    history.gradient_sample = _gradient_sample(p, history.scale[-1])  # p still holds the last step's gradients
    history.seconds = time.perf_counter() - start
    return history, p


def kernel_threads(config: Config) -> int:
    """The intra-op thread count kernels="torch" models (its reductions sum per thread, then combine):
    `config.threads`, else torch's own torch.get_num_threads() where torch is installed, else 1. torch is
    imported only for kernels="torch"."""
    if config.threads is not None:
        return config.threads
    if config.kernels != "torch":
        return 1
    try:
        import torch
    except ImportError:
        return 1
    return torch.get_num_threads()


def _torch_training():
    from fpsim.torch import training  # torch is optional: imported only here (ImportError names fpsim[torch])

    return training


def _compute_weights(master: dict[str, np.ndarray], p: Precision) -> dict[str, np.ndarray]:
    """The weights layers compute with: matmul weights in the compute format, norm parameters in the
    reductions format (autocast keeps norms, and so their parameters, in fp32)."""
    norm = ("gamma", "beta")
    return {k: p.cast(v, p.reductions if k.startswith(norm) else p.compute) for k, v in master.items()}


def _train_step(model, master, optimizer, scaler, p: Precision, config: Config, x, y, history: History) -> None:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inf and NaN are outcomes we record
        _step(model, master, optimizer, scaler, p, config, x, y, history)


def _step(model, master, optimizer, scaler, p: Precision, config: Config, x, y, history: History) -> None:
    p.reset_counts()
    weights = _compute_weights(master, p)
    logits, cache = model.forward(x, weights, p, train=True)
    loss, dlogits = model.loss(logits, y, p)
    scale = scaler.scale if scaler else 1.0
    grads = model.backward(dlogits * (config.loss_multiplier * scale), cache, weights, p)
    names = list(grads)
    if scaler:
        unscaled, found_inf = scaler.unscale([grads[k] for k in names])
    else:
        unscaled = [grads[k] for k in names]
        found_inf = False  # without a scaler nobody checks: inf and NaN flow into the weights, as in plain fp16
    master_grads = dict(zip(names, unscaled))  # fp32 after unscaling (GradScaler's fp32 kernel), else grads format
    if config.clip_norm is not None and not found_inf:  # after unscaling, as torch does
        with np.errstate(over="ignore", invalid="ignore"):  # an inf gradient makes the norm inf: nothing is clipped
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in master_grads.values()))
        factor = np.float32(min(1.0, config.clip_norm / (norm + 1e-6)))  # torch's clip_coef, an fp32 tensor
        master_grads = {k: p.cast(g * factor, FP32) for k, g in master_grads.items()}
    lost = 0.0 if found_inf else optimizer.step(master, master_grads)  # an overflow step changes no weight
    if scaler:
        scaler.update(found_inf)
    flags = p.gradient_flags
    history.loss.append(loss)
    history.scale.append(scale)
    history.skipped.append(found_inf)
    history.flushed.append(flags.fraction("flushed_to_zero"))
    history.subnormal.append(flags.fraction("subnormal"))
    history.lost_updates.append(lost)
    history.max_activation.append(p.max_activation)


def _gradient_sample(p: Precision, scale: float) -> list[float]:
    """Every k-th gradient value the last step's casts received (deterministic), divided by its loss scale."""
    seen = np.concatenate([g.reshape(-1) for g in p.gradients_seen])
    stride = max(1, seen.size // GRADIENT_SAMPLE)
    return (seen[::stride][:GRADIENT_SAMPLE] / scale).tolist()
