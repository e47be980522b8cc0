"""Config schemas (registered in Hydra's ConfigStore) and `validate(cfg)`.

The schemas make Hydra reject key typos and wrong types while composing; `validate` adds what
OmegaConf cannot check (ranges, choices, files, cross-key rules) and turns every problem into a
`ConfigError` whose message is one line naming the key and the fix.

Kept free of torch imports: `prunekit/__init__.py` imports it, and `--help` must stay fast.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

GRANULARITIES = ("unstructured", "filter", "channel", "column", "nm")
AUTOCOMPRESS_SCHEMES = ("filter+column", "filter", "column")  # what its search may choose
CRITERIA = ("l1", "l2", "random")
ACTIVATION_CRITERIA = ("mean_activation", "entropy")  # ice only: scored on data, not weights
SCOPES = ("layerwise", "global")
ITERATIVE_SCHEDULES = ("geometric", "linear", "blockwise")
AUGMENTS = ("none", "crop", "crop_flip")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("cosine", "constant")


class ConfigError(ValueError):
    """Bad user input. The message is one line: the key, what is wrong, how to fix it."""


def did_you_mean(word: str, candidates) -> str:
    """' (did you mean `x`?)' for a near miss of one of `candidates`, else ''."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def schema_keys(schema) -> List[str]:
    """The keys of a config schema (a dataclass), in declaration order."""
    return [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []


# --------------------------------------------------------------------------- schemas
@dataclass
class ModelConfig:
    name: str = MISSING
    in_channels: int = 3  # what the network's stem takes; datasets convert to it
    small_input: Optional[bool] = None  # None: a small-input stem when images are <= 64 px
    checkpoint: Optional[str] = None  # user weights for the dense model (a state dict)


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = "${oc.env:PRUNEKIT_DATA,'~/.cache/prunekit/data'}"  # where downloads go
    path: Optional[str] = None  # imagefolder: train/ and val/ class folders; mnist, fashion_mnist:
    # the four IDX files (found without it in Debian's package folder or under root too)
    download: bool = True
    image_size: Optional[int] = None  # None: the dataset's native size
    val_fraction: float = 0.1  # held out from train; every decision uses it
    test_fraction: float = 0.2  # only for datasets without an official test split
    subset: float = 1.0  # keep this fraction of every split (stratified), for quick runs
    split_seed: int = 0  # fixed across run seeds so every run of a sweep sees the same splits
    augment: str = "crop_flip"
    batch_size: int = 128  # training batch size that suits this dataset
    pretrain_epochs: int = 30  # dense training budget that suits this dataset
    in_memory: Optional[bool] = None  # None: decode into tensors when it fits (fast path)
    num_workers: int = 2  # DataLoader workers on the slow (streaming) path
    num_samples: int = 1000  # fake only: train size (test is a fifth of it)
    num_classes: int = 10  # fake only


@dataclass
class MethodConfig:
    name: str = MISSING
    granularity: str = "unstructured"
    criterion: str = "l1"
    scope: str = "layerwise"
    nm: List[int] = field(default_factory=lambda: [2, 4])  # N:M, used when granularity=nm
    prune_first_conv: bool = False
    prune_classifier: bool = False
    lr: float = 0.01  # learning rate of the method's own training / fine-tuning


@dataclass
class DenseMethodConfig(MethodConfig):
    epochs: int = 0  # extra dense training, to give the baseline the same budget as a method


@dataclass
class OneshotMethodConfig(MethodConfig):
    finetune_epochs: int = 3


@dataclass
class IterativeMethodConfig(MethodConfig):
    steps: int = 5
    schedule: str = "geometric"
    finetune_epochs: int = 1  # after every step


@dataclass
class GradualMethodConfig(MethodConfig):
    epochs: int = 10
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: Optional[int] = None  # None: 75% of the optimiser steps of the run
    frequency: int = 100  # Δt: optimiser steps between mask updates
    power: int = 3


@dataclass
class IceGrid:
    """The auto-tuning grid of the ICE-Pruning paper (ResNet settings); each key is a method key."""

    threshold: List[float] = field(default_factory=lambda: [0.5, 1.5])
    freeze_ratio: List[float] = field(default_factory=lambda: [0.3, 0.9])
    lr: List[float] = field(default_factory=lambda: [1e-3, 5e-3])
    lr_p: List[float] = field(default_factory=lambda: [0.1, 0.15, 0.2])
    lr_beta: List[float] = field(default_factory=lambda: [40.0, 50.0, 60.0])
    lr_delta: List[float] = field(default_factory=lambda: [6e-4, 7e-4, 8e-4])


@dataclass
class IceAutotuneConfig:
    enabled: bool = True
    trials: int = 6  # grid points tried (the paper: 6 for ResNet, 3 DenseNet, 7 WRN)
    train_fraction: float = 0.02  # of the train split, per trial (the paper: 2% of CIFAR-10)
    val_fraction: float = 0.04  # of the val split, per trial (the paper: 200 images)
    accuracy_weight: float = 0.5  # objective: w * drop + (1 - w) * time, each over its max
    grid: IceGrid = field(default_factory=IceGrid)
    reference_trial: bool = False  # also try the configured knobs, for reporting (not timed)


@dataclass
class IceMethodConfig(MethodConfig):
    granularity: str = "filter"
    lr: float = 1e-3  # the pruning-aware LR's base (and the constant lr without it)
    threshold: float = 1.5  # fine-tune when dense val top-1 - val top-1 >= this (points)
    freeze_ratio: float = 0.3  # fraction of the candidate conv+BN pairs frozen
    lr_p: float = 0.12  # the LR's knee sits at remaining fraction 1 - p
    lr_beta: float = 50.0  # steepness of the knee
    lr_delta: float = 7.5e-4  # the LR falls from base to base - delta
    probe_lr: float = 1e-3  # the freezing probe's fixed fine-tuning lr
    probe_data: str = "trials"  # trials: reuse the tuning stage's probe; train: probe again
    finetune_epochs: int = 1  # per fine-tune (the paper: one)
    use_threshold: bool = True  # ablation: false fine-tunes after every step
    use_freeze: bool = True  # ablation: false freezes nothing (and skips the probe)
    use_adaptive_lr: bool = True  # ablation: false fine-tunes at the constant `lr`
    distill: bool = False  # fine-tune with CE + KL to the dense model (the paper's ResNet runs)
    distill_temperature: float = 2.0
    val_fraction: float = 1.0  # of the val split used for the fine-tune decisions
    activation_batches: int = 4  # train batches that score mean_activation / entropy
    autotune: IceAutotuneConfig = field(default_factory=IceAutotuneConfig)


@dataclass
class AdmmSolverConfig(MethodConfig):
    """The ADMM solver's keys, shared by admm and autocompress (which runs it every round)."""

    criterion: str = "l2"  # the projections keep the largest-L2 structures: the exact Π
    rho: float = 0.1  # ρ of the penalty ρ/2‖W − Z + U‖²
    rho_growth: float = 1.0  # ρ ← min(ρ · growth, rho_max) after every ADMM iteration
    rho_max: float = 1.0
    iterations: int = 10  # ADMM iterations (Z/U updates)
    epochs_per_iteration: int = 1  # W-step epochs between Z/U updates


@dataclass
class AdmmMethodConfig(AdmmSolverConfig):
    retrain_epochs: int = 3  # masked retraining after the hard prune (fresh optimiser)
    retrain_lr: Optional[float] = None  # None: lr
    layer_rates: List[str] = field(default_factory=list)  # ["layer or glob:rate", ...]


@dataclass
class SlrMethodConfig(MethodConfig):
    """SLR's keys (Gurevin et al. 2020; defaults from the reference code)."""

    criterion: str = "l2"  # the projections keep the largest-L2 structures: the exact Π
    rho: float = 0.1  # ρ of the penalty ρ/2‖W − Z + Λ/ρ‖² (fixed)
    epochs: int = 10  # SLR training epochs, one multiplier update round after each
    M: float = 300.0  # α_k = 1 − 1/(M·k^(1 − 1/k^r))
    r: float = 0.1
    initial_step: float = 0.01  # s₀, the multipliers' first step size
    retrain_epochs: int = 3  # masked retraining after the hard prune (fresh optimiser)
    retrain_lr: Optional[float] = None  # None: lr
    layer_rates: List[str] = field(default_factory=list)  # ["layer or glob:rate", ...]


@dataclass
class AutocompressSearchConfig:
    evaluations: int = 40  # quick evaluations per round, the initial action included
    temperature: float = 2.0  # T0, in points of val top-1 (the energy's unit)
    final_temperature: float = 0.1
    cooling: float = 0.9  # T <- T * cooling per accepted move
    perturbation: float = 0.35  # rates move by U(-m, m), m = perturbation * T / T0
    scheme_flip: float = 0.2  # a unit flips its scheme with probability scheme_flip * T / T0
    max_rate: float = 0.99  # no unit loses more of its weights
    val_fraction: float = 0.2  # of the val split, for the quick evaluations


@dataclass
class PurifyConfig:
    enabled: bool = True
    thresholds: List[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    tolerance: float = 0.5  # points of val top-1 a threshold may cost


@dataclass
class AutocompressMethodConfig(AdmmSolverConfig):
    granularity: str = "filter+column"
    rounds: int = 3  # cumulative targets 1 - (1 - S)^(i / rounds)
    iterations: int = 3  # ADMM iterations per round
    finetune_epochs: int = 2  # after every round
    search: AutocompressSearchConfig = field(default_factory=AutocompressSearchConfig)
    purify: PurifyConfig = field(default_factory=PurifyConfig)


@dataclass
class LatencyConfig:
    enabled: bool = True
    batch_sizes: List[int] = field(default_factory=lambda: [1, 64])
    warmup: int = 5
    repeats: int = 20  # rounds of one timed forward per model, dense and pruned alternating
    max_seconds: float = 20.0  # the whole measurement's budget (rounds stop early, never below 3)
    max_spread: float = 1.5  # p95/median above this on either side: the machine was busy
    max_over_flops: float = 1.25  # a real speedup above this × the FLOPs ratio is not believed
    max_cpu_wait: float = 0.1  # CPU: waiting for a core longer than this share, others held them


@dataclass
class HardwareConfig:
    name: str = MISSING
    device: str = "auto"
    threads: int = 0  # 0: torch's default
    precision: str = "fp32"  # autocast dtype for training and evaluation on CUDA
    channels_last: bool = False
    cudnn_benchmark: bool = True
    compile: bool = False  # torch.compile both models for the latency measurement
    sparse_2of4: bool = False  # 2:4 results run PyTorch's semi-structured sparse kernels (CUDA)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass
class TrainConfig:
    batch_size: int = "${dataset.batch_size}"  # type: ignore[assignment]
    eval_batch_size: int = 512
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    lr_schedule: str = "cosine"
    val_max_batches: Optional[int] = None  # cap validation cost for decisions; None: whole split
    progress: bool = True


@dataclass
class PretrainConfig:
    """The dense model's own recipe, independent of train.* (the fine-tuning settings), so every
    method and preset of a sweep starts from the same dense model."""

    epochs: int = "${dataset.pretrain_epochs}"  # type: ignore[assignment]
    lr: float = 0.05
    lr_schedule: str = "cosine"
    weight_decay: float = 5e-4
    cache: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True  # after pruning steps and fine-tune epochs, for resume=true
    keep: int = 2  # the newest files kept
    min_interval_s: float = 60.0  # at most one per minute (0: after every step and epoch)


@dataclass
class Config:
    model: Any = MISSING
    dataset: Any = MISSING
    method: Any = MISSING
    hardware: Any = MISSING
    seed: int = 0
    sparsity: float = 0.5
    resume: bool = False
    deterministic: bool = True
    cache_dir: str = "${oc.env:PRUNEKIT_CACHE,'~/.cache/prunekit'}"
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


METHOD_SCHEMAS = {
    "dense": DenseMethodConfig,
    "oneshot": OneshotMethodConfig,
    "iterative": IterativeMethodConfig,
    "gradual": GradualMethodConfig,
    "ice": IceMethodConfig,
    "admm": AdmmMethodConfig,
    "autocompress": AutocompressMethodConfig,
    "slr": SlrMethodConfig,
}


GROUP_SCHEMAS = {"model": ModelConfig, "dataset": DatasetConfig, "hardware": HardwareConfig}


def known_key(cfg: DictConfig, key: str) -> bool:
    """Whether `key` (e.g. `method.retrain_epochs`) is in the schema of the option `cfg` chose
    for its group (method: the chosen method's); keys outside the typed groups count as known."""
    group, _, path = key.partition(".")
    schema = METHOD_SCHEMAS.get(cfg.method.name) if group == "method" else GROUP_SCHEMAS.get(group)
    if schema is None or not path:
        return True
    for part in path.split("."):
        hints = get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if part not in hints:
            return False
        schema = hints[part]
    return True


def register_configs() -> None:
    """Schemas live under schema/ so they never show up as `method=...` options."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/dataset", name="dataset", node=DatasetConfig)
    cs.store(group="schema/hardware", name="hardware", node=HardwareConfig)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="schema/method", name=name, node=schema)


# --------------------------------------------------------------------------- validation
def _choice(cfg: DictConfig, key: str, choices) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}={value} is not one of {', '.join(choices)}")


def _at_least(cfg: DictConfig, key: str, low, what: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and value < low:
        raise ConfigError(f"{key}={value} must be >= {low}{what}")


def _positive(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and not value > 0:
        raise ConfigError(f"{key}={value} must be > 0")


def _unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """`+key=value` force-adds keys even to structured configs; reject what no schema knows."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    known = schema_keys(schema)
    for key in node.keys():
        full = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"{full} is not a known key{did_you_mean(key, known)}: "
                              f"`prune-run --cfg job` lists the keys")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _unknown_keys(child, full + ".")


def validate(cfg: DictConfig) -> None:
    """Check everything that can be checked before any work starts. Raises ConfigError."""
    for group in ("model", "dataset", "method", "hardware"):
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{group} is not selected: pass {group}=<option>")
    _unknown_keys(cfg)
    for group in ("model", "dataset", "method", "hardware"):
        _unknown_keys(cfg[group], group + ".")

    _at_least(cfg, "checkpoint.keep", 1)
    _at_least(cfg, "checkpoint.min_interval_s", 0)
    s = cfg.sparsity
    if not 0.0 <= s < 1.0:
        raise ConfigError(f"sparsity={s} is out of range: it is the fraction removed, in [0, 1)")

    # training
    for key in ("train.batch_size", "train.eval_batch_size", "pretrain.lr", "method.lr"):
        _positive(cfg, key)
    for key in ("train.weight_decay", "train.momentum", "train.label_smoothing"):
        _at_least(cfg, key, 0)
    _choice(cfg, "train.lr_schedule", LR_SCHEDULES)
    _choice(cfg, "pretrain.lr_schedule", LR_SCHEDULES)
    _at_least(cfg, "pretrain.weight_decay", 0)
    _at_least(cfg, "train.val_max_batches", 1)
    _at_least(cfg, "pretrain.epochs", 0, " (epochs cannot be negative)")

    # dataset
    d = cfg.dataset
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"dataset.val_fraction={d.val_fraction} must be in (0, 1)")
    if not 0.0 < d.test_fraction < 1.0:
        raise ConfigError(f"dataset.test_fraction={d.test_fraction} must be in (0, 1)")
    if not 0.0 < d.subset <= 1.0:
        raise ConfigError(f"dataset.subset={d.subset} must be in (0, 1]: the fraction kept")
    _choice(cfg, "dataset.augment", AUGMENTS)
    _at_least(cfg, "dataset.image_size", 4)
    _at_least(cfg, "dataset.num_workers", 0)
    _at_least(cfg, "dataset.num_samples", 10)
    _at_least(cfg, "dataset.num_classes", 2)
    if d.name == "imagefolder":
        if not d.path:
            raise ConfigError("dataset.path is not set: imagefolder needs dataset.path=DIR "
                              "(a folder with train/ and val/ class folders)")
        path = os.path.expanduser(str(d.path))
        if not os.path.isdir(os.path.join(path, "train")):
            raise ConfigError(f"dataset.path={d.path} has no train/ folder: point it at a folder "
                              "with train/ and val/ class folders (ImageNet layout)")

    # model
    _at_least(cfg, "model.in_channels", 1)
    ckpt = cfg.model.checkpoint
    if ckpt is not None:
        path = os.path.expanduser(str(ckpt))
        if not os.path.isfile(path):
            raise ConfigError(f"model.checkpoint={ckpt} does not exist: give the path of a state "
                              "dict")
        check_torch_file(path, f"model.checkpoint={ckpt}")

    # method
    m = cfg.method
    _choice(cfg, "method.granularity",
            AUTOCOMPRESS_SCHEMES if m.name == "autocompress" else GRANULARITIES)
    _choice(cfg, "method.criterion",
            CRITERIA + ACTIVATION_CRITERIA if m.name == "ice" else CRITERIA)
    _choice(cfg, "method.scope", SCOPES)
    if len(m.nm) != 2 or not 0 < m.nm[0] < m.nm[1]:
        raise ConfigError(f"method.nm={list(m.nm)} must be [N, M] with 0 < N < M, e.g. [2, 4]")
    if m.granularity == "nm":
        implied = 1.0 - m.nm[0] / m.nm[1]
        if abs(implied - s) > 1e-9:
            raise ConfigError(f"sparsity={s} does not match method.nm={list(m.nm)}, which removes "
                              f"{implied:g}: set sparsity={implied:g}")
        if m.name not in ("oneshot", "admm", "slr"):
            raise ConfigError(f"method.granularity=nm needs one prune step: use method=oneshot, "
                              f"admm or slr, not method={m.name}")
    for key in ("epochs", "finetune_epochs"):
        _at_least(cfg, f"method.{key}", 0, " (epochs cannot be negative)")
    if m.name == "iterative":
        _at_least(cfg, "method.steps", 1)
        _choice(cfg, "method.schedule", ITERATIVE_SCHEDULES)
        if m.schedule == "blockwise" and m.granularity != "filter":
            raise ConfigError("method.schedule=blockwise prunes filters block by block: "
                              "set method.granularity=filter")
    if m.name == "ice":
        _validate_ice(cfg)
    if m.name in ("admm", "autocompress", "slr"):
        _validate_admm(cfg)
    if m.name == "gradual":
        _at_least(cfg, "method.frequency", 1)
        _at_least(cfg, "method.begin_step", 0)
        _at_least(cfg, "method.power", 1)
        _at_least(cfg, "method.epochs", 1, " (gradual pruning happens during training)")
        if not 0.0 <= m.initial_sparsity <= s:
            raise ConfigError(f"method.initial_sparsity={m.initial_sparsity} must be in "
                              f"[0, sparsity={s}]")
        if m.end_step is not None and m.end_step <= m.begin_step:
            raise ConfigError(f"method.end_step={m.end_step} must be greater than "
                              f"method.begin_step={m.begin_step}")

    # hardware
    h = cfg.hardware
    _choice(cfg, "hardware.device", DEVICES)
    _choice(cfg, "hardware.precision", PRECISIONS)
    _at_least(cfg, "hardware.threads", 0)
    _at_least(cfg, "hardware.latency.warmup", 0)
    _at_least(cfg, "hardware.latency.repeats", 1)
    _positive(cfg, "hardware.latency.max_seconds")
    _at_least(cfg, "hardware.latency.max_spread", 1.0, " (p95 / median is never below 1)")
    _at_least(cfg, "hardware.latency.max_over_flops", 1.0)
    _fraction(cfg, "hardware.latency.max_cpu_wait", low_open=False)
    if h.sparse_2of4 and h.precision == "fp32":
        raise ConfigError("hardware.sparse_2of4 needs hardware.precision=fp16 or bf16: PyTorch's "
                          "semi-structured sparse kernels take half-precision weights")
    if not h.latency.batch_sizes or min(h.latency.batch_sizes) < 1:
        raise ConfigError(f"hardware.latency.batch_sizes={list(h.latency.batch_sizes)} must be a "
                          "non-empty list of positive batch sizes")


STATE_DICT_FIX = "save one with torch.save(model.state_dict(), path)"


def check_torch_file(path: str, what: str) -> None:
    """A ConfigError naming `what` (e.g. `model.checkpoint=x`) when `path` is no torch file."""
    problem = torch_file_problem(path)
    if problem:
        raise ConfigError(f"{what} is not a PyTorch file ({problem}): {STATE_DICT_FIX}")


def torch_file_problem(path: str) -> Optional[str]:
    """None if the file starts as torch.save writes (a zip archive, or a legacy pickle); else
    what it is instead, read from its first bytes: a check that costs no torch import."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return None
    if not head:
        return "it is empty"
    if head.startswith(b"\x1f\x8b"):
        return "it is a gzip archive: unpack it first"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:4].hex(' ')}"
    if text.lstrip().startswith(("{", "[")):
        return "it is a JSON or text file"
    return "it is a text file"


def _fraction(cfg: DictConfig, key: str, low_open: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    if not ((0.0 < value) if low_open else (0.0 <= value)) or not value <= 1.0:
        raise ConfigError(f"{key}={value} must be in {'(' if low_open else '['}0, 1]")


def parse_layer_rates(items) -> Dict[str, float]:
    """["pattern:rate", ...] -> {pattern: rate}, or a ConfigError naming the bad item."""
    out: Dict[str, float] = {}
    for item in items:
        pattern, _, rate = str(item).rpartition(":")
        try:
            value = float(rate)
        except ValueError:
            value = None
        if not pattern or value is None or not 0.0 <= value < 1.0:
            raise ConfigError(f"method.layer_rates: '{item}' is not 'layer:rate' with a rate in "
                              "[0, 1) (the fraction removed), e.g. method.layer_rates=[layer4.*:0.95]")
        out[pattern] = value
    return out


def _validate_admm(cfg: DictConfig) -> None:
    """admm, autocompress and slr: the projection-based methods."""
    m = cfg.method
    if m.criterion != "l2":
        raise ConfigError(f"method.criterion={m.criterion}: {m.name} projects onto the sparse set by "
                          "keeping the largest-L2 structures (the exact Euclidean projection); "
                          "use method.criterion=l2")
    if m.scope != "layerwise":
        raise ConfigError(f"method.scope={m.scope}: {m.name} constrains every layer (or channel "
                          "group) at its own rate; use method.scope=layerwise")
    _positive(cfg, "method.rho")
    if m.name in ("admm", "slr"):
        _at_least(cfg, "method.retrain_epochs", 0, " (epochs cannot be negative)")
        _positive(cfg, "method.retrain_lr")
        parse_layer_rates(m.layer_rates)
    if m.name == "slr":
        _at_least(cfg, "method.epochs", 1, " (SLR prunes by training)")
        for key in ("M", "initial_step"):
            _positive(cfg, f"method.{key}")
        _at_least(cfg, "method.r", 0)
        return
    _positive(cfg, "method.rho_max")
    _at_least(cfg, "method.rho_growth", 1.0, " (ρ may only grow)")
    if m.rho_max < m.rho:
        raise ConfigError(f"method.rho_max={m.rho_max} must be >= method.rho={m.rho}")
    _at_least(cfg, "method.iterations", 1)
    _at_least(cfg, "method.epochs_per_iteration", 1)
    if m.name == "admm":
        return
    s = m.search
    _at_least(cfg, "method.rounds", 1)
    _at_least(cfg, "method.finetune_epochs", 0, " (epochs cannot be negative)")
    _at_least(cfg, "method.search.evaluations", 1)
    for key in ("temperature", "final_temperature"):
        _positive(cfg, f"method.search.{key}")
    if s.final_temperature > s.temperature:
        raise ConfigError(f"method.search.final_temperature={s.final_temperature} must not exceed "
                          f"method.search.temperature={s.temperature}")
    if not 0.0 < s.cooling < 1.0:
        raise ConfigError(f"method.search.cooling={s.cooling} must be in (0, 1)")
    _at_least(cfg, "method.search.perturbation", 0)
    _fraction(cfg, "method.search.scheme_flip", low_open=False)
    _fraction(cfg, "method.search.val_fraction")
    if not cfg.sparsity < s.max_rate < 1.0:
        raise ConfigError(f"method.search.max_rate={s.max_rate} must be in (sparsity={cfg.sparsity}"
                          ", 1): no layer may lose more, and the target must be reachable")
    t = list(m.purify.thresholds)
    if any(v < 0 for v in t) or t != sorted(t):
        raise ConfigError(f"method.purify.thresholds={t} must be non-negative and ascending")
    _at_least(cfg, "method.purify.tolerance", 0)


def _validate_ice(cfg: DictConfig) -> None:
    m = cfg.method
    if m.granularity != "filter":
        raise ConfigError(f"method.granularity={m.granularity}: ICE-Pruning removes filters "
                          "block by block; use method.granularity=filter")
    for key in ("probe_lr", "lr_beta", "distill_temperature"):
        _positive(cfg, f"method.{key}")
    _choice(cfg, "method.probe_data", ("trials", "train"))
    for key in ("threshold", "lr_delta"):
        _at_least(cfg, f"method.{key}", 0)
    _at_least(cfg, "method.finetune_epochs", 1, " (set method.use_threshold to fine-tune less)")
    _at_least(cfg, "method.activation_batches", 1)
    _at_least(cfg, "method.autotune.trials", 1)
    for key in ("val_fraction", "autotune.train_fraction", "autotune.val_fraction"):
        value = OmegaConf.select(m, key)
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"method.{key}={value} must be in (0, 1]: the fraction used")
    if not 0.0 <= m.autotune.accuracy_weight <= 1.0:
        raise ConfigError(f"method.autotune.accuracy_weight={m.autotune.accuracy_weight} must be "
                          "in [0, 1]")
    grid = m.autotune.grid
    for key in grid:
        if len(grid[key]) == 0:
            raise ConfigError(f"method.autotune.grid.{key} is empty: give at least one value")
    # every value the run can use: the given ones, and the grid's when tuning
    values = {k: [m[k]] + (list(grid[k]) if m.autotune.enabled else []) for k in grid}
    if min(values["threshold"]) < 0:
        raise ConfigError("method.threshold values must be >= 0 (points of val top-1)")
    if not all(0.0 <= v <= 1.0 for v in values["freeze_ratio"]):
        raise ConfigError("method.freeze_ratio values must be in [0, 1]")
    if not all(0.0 <= v < 0.5 for v in values["lr_p"]):
        raise ConfigError("method.lr_p values must be in [0, 0.5): the LR's knee is at remaining "
                          "fraction 1 - p, and x / (2(1 - p) - x) needs 2(1 - p) > 1")
    if min(values["lr_beta"]) <= 0 or min(values["lr"]) <= 0 or min(values["lr_delta"]) < 0:
        raise ConfigError("method.lr and method.lr_beta values must be > 0, method.lr_delta >= 0")
    if max(values["lr_delta"]) >= min(values["lr"]):
        raise ConfigError(f"method.lr_delta={max(values['lr_delta'])} must be below method.lr="
                          f"{min(values['lr'])}: the pruning-aware LR falls to lr - delta")
