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

from prunekit.errors import ConfigError, did_you_mean
from prunekit.registry import Registry

GRANULARITIES = ("unstructured", "filter", "channel", "column", "nm")
SCOPES = ("layerwise", "global")
AUGMENTS = ("none", "crop", "crop_flip")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("cosine", "constant")


def flat_keys(d: dict, prefix: str = "") -> Dict[str, Any]:
    """A nested dict as one level of dotted keys: {"a.b": 1}."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# How this process runs, not what it computes: left out of a checkpoint's identity and of the
# params a tracker records (a resumed run may change them)
RUN_CONTROL_KEYS = ("resume", "logger")


def experiment_settings(cfg: DictConfig) -> Dict[str, Any]:
    """The resolved config less RUN_CONTROL_KEYS, as flat dotted keys."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in RUN_CONTROL_KEYS:
        data.pop(key, None)
    return flat_keys(data)


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
    arch: Optional[str] = None  # model=torchvision, timm: the architecture's name
    weights: Optional[str] = None  # model=torchvision: null (random), DEFAULT or a weights name
    pretrained: bool = False  # model=timm: timm's pretrained weights
    target: Optional[str] = None  # model=custom: package.module:factory
    kwargs: Dict[str, Any] = field(default_factory=dict)  # model=custom: the factory's arguments


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
    criterion_batches: int = 4  # train batches a data-driven criterion reads per decision


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
    distributed: str = "auto"  # auto: one run over the processes torchrun / SLURM started; off
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


TARGET_KINDS = ("sparsity", "flops", "params", "latency")  # what `target.kind` may count


@dataclass
class TargetConfig:
    """What pruning aims at (sparsity.cost, README "Targets"): `sparsity` (the top-level key) or
    a reduction factor of the FLOPs, the non-zero parameters or the measured latency."""

    kind: str = "sparsity"
    value: Optional[float] = None  # flops, params, latency: the factor, e.g. 2.0 (= half)
    batch_size: Optional[int] = None  # latency: the batch measured (None: the first of
    # hardware.latency.batch_sizes)
    tolerance: float = 0.02  # latency: the solve stops within this relative error of the value;
    # AutoCompress's purification may pass a counted target by at most this much
    max_measurements: int = 8  # latency: the most measurements one solve takes


LOGGERS = ("tensorboard", "mlflow", "wandb")  # the trackers of the `logger` group
WANDB_MODES = ("offline", "online")


@dataclass
class TensorBoardLoggerConfig:
    dir: Optional[str] = None  # None: tensorboard/ in the sweep directory (a run: its directory)


@dataclass
class MLflowLoggerConfig:
    tracking_uri: Optional[str] = None  # None: sqlite:///<sweep or run directory>/mlflow.db


@dataclass
class WandbLoggerConfig:
    project: str = "prunekit"
    entity: Optional[str] = None  # the W&B team or user; None: the account's default
    mode: str = "offline"  # offline: no account needed, `wandb sync` uploads later; online
    dir: Optional[str] = None  # None: the sweep directory (a run: its directory)


@dataclass
class LoggerConfig:
    """The experiment trackers a run reports to (prunekit.tracking, README "Loggers"): the
    `logger` group's options each fill their own key, so `logger=[tensorboard,mlflow]` uses both."""

    tensorboard: Optional[TensorBoardLoggerConfig] = None
    mlflow: Optional[MLflowLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None
    experiment: Optional[str] = None  # None: the sweep directory's path (a single run: prunekit)
    run_name: Optional[str] = None  # None: the job's overrides, e.g. method=ice,seed=1
    epoch_val: bool = True  # val top-1 after every training epoch (its time is not pruning time)
    log_model: bool = False  # model.pt among the artefacts too


@dataclass
class Config:
    model: Any = MISSING
    dataset: Any = MISSING
    method: Any = MISSING
    hardware: Any = MISSING
    seed: int = 0
    sparsity: float = 0.5
    target: TargetConfig = field(default_factory=TargetConfig)
    resume: bool = False
    deterministic: bool = True
    cache_dir: str = "${oc.env:PRUNEKIT_CACHE,'~/.cache/prunekit'}"
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


METHODS: Registry = Registry("method")  # name -> method unit (prunekit.methods fills it)

GROUP_SCHEMAS = {"model": ModelConfig, "dataset": DatasetConfig, "hardware": HardwareConfig}


def known_key(cfg: DictConfig, key: str) -> bool:
    """Whether `key` (e.g. `method.retrain_epochs`) is in the schema of the option `cfg` chose
    for its group (method: the chosen method's); keys outside the typed groups count as known."""
    group, _, path = key.partition(".")
    unit = METHODS.get(cfg.method.name) if group == "method" else None
    schema = unit.schema if unit is not None else GROUP_SCHEMAS.get(group)
    if schema is None or not path:
        return True
    for part in path.split("."):
        hints = get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if part not in hints:
            return False
        schema = hints[part]
    return True


def register_configs() -> None:
    """Schemas live under schema/ so they never show up as `method=...` options. Each method's
    comes from its unit (prunekit.methods, imported first)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/dataset", name="dataset", node=DatasetConfig)
    cs.store(group="schema/hardware", name="hardware", node=HardwareConfig)
    for name, unit in METHODS.items():
        cs.store(group="schema/method", name=name, node=unit.schema)


# What a key takes, where its type alone does not say it (the one line for a value of the wrong
# type, e.g. sparsity=abc, names it)
KEY_MEANINGS = {
    "sparsity": "a number in [0, 1), the fraction of the prunable weights removed",
    "seed": "a whole number",
    "target.value": "a number > 1, the factor the target shrinks by (2.0 = half)",
    "dataset.subset": "a number in (0, 1], the fraction of every split kept",
}
TYPE_MEANINGS = {"FloatNode": "a number", "IntegerNode": "a whole number",
                 "BooleanNode": "true or false", "StringNode": "a string"}


def wrong_type(key: str, value, node_type: str) -> str:
    """The one line for `key=value` whose value has the wrong type for the key's schema."""
    kind = TYPE_MEANINGS.get(node_type, "of the right type")
    return f"{key}={value} is not {kind}: {key} takes {KEY_MEANINGS.get(key, kind)}"


# --------------------------------------------------------------------------- validation
def choice(cfg: DictConfig, key: str, choices) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}={value} is not one of {', '.join(choices)}"
                          f"{did_you_mean(value, choices)}")


def at_least(cfg: DictConfig, key: str, low, what: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and value < low:
        raise ConfigError(f"{key}={value} must be >= {low}{what}")


def positive(cfg: DictConfig, key: str) -> None:
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


def model_label(model_cfg) -> Optional[str]:
    """The model as reports name it: `resnet18`, or `torchvision:convnext_tiny`,
    `timm:resnet10t`, `custom:pkg.mod:factory` for the families chosen by arch or target."""
    name = model_cfg.get("name")
    chosen = model_cfg.get("arch") or model_cfg.get("target")
    return f"{name}:{chosen}" if chosen else name


def validate(cfg: DictConfig) -> None:
    """Check everything that can be checked before any work starts. Raises ConfigError."""
    for group in ("model", "dataset", "method", "hardware"):
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{group} is not selected: pass {group}=<option>")
    _unknown_keys(cfg)
    for group in ("model", "dataset", "method", "hardware"):
        _unknown_keys(cfg[group], group + ".")

    at_least(cfg, "checkpoint.keep", 1)
    at_least(cfg, "checkpoint.min_interval_s", 0)
    s = cfg.sparsity
    if not 0.0 <= s < 1.0:
        raise ConfigError(f"sparsity={s} is out of range: it is the fraction removed, in [0, 1)")
    check_training(cfg)
    check_dataset(cfg)
    check_model(cfg)
    check_target(cfg)
    check_logger(cfg)
    METHODS.choose(cfg.method.name, "method.name").check(cfg)  # a method checks its own keys
    check_hardware(cfg)


def check_target(cfg: DictConfig) -> None:
    """The target's own keys; whether the method can reach its kind is the method's check."""
    t = cfg.target
    choice(cfg, "target.kind", TARGET_KINDS)
    if t.kind == "sparsity":
        if t.value is not None:
            raise ConfigError(f"target.value={t.value} is the reduction factor of target.kind="
                              f"flops, params or latency: with target.kind=sparsity set "
                              f"sparsity={cfg.sparsity} instead")
    elif t.value is None:
        raise ConfigError(f"target.kind={t.kind} needs target.value, the factor it shrinks by "
                          "(e.g. target.value=2.0 for half)")
    elif not t.value > 1.0:
        raise ConfigError(f"target.value={t.value} must be > 1: it is the factor the {t.kind} "
                          "shrinks by (2.0 = half)")
    at_least(cfg, "target.batch_size", 1)
    at_least(cfg, "target.max_measurements", 2)
    if not 0.0 < t.tolerance < 0.5:
        raise ConfigError(f"target.tolerance={t.tolerance} must be in (0, 0.5): the relative "
                          "error the latency solve may stop at")
    if t.kind == "latency" and not cfg.hardware.latency.enabled:
        raise ConfigError("target.kind=latency measures latency: set "
                          "hardware.latency.enabled=true")


def check_logger(cfg: DictConfig) -> None:
    if cfg.logger.wandb is not None:
        choice(cfg, "logger.wandb.mode", WANDB_MODES)
    for key in ("experiment", "run_name"):
        value = cfg.logger[key]
        if value is not None and not str(value).strip():
            raise ConfigError(f"logger.{key} is empty: give a name, or null for the default")


def check_training(cfg: DictConfig) -> None:
    for key in ("train.batch_size", "train.eval_batch_size", "pretrain.lr", "method.lr"):
        positive(cfg, key)
    for key in ("train.weight_decay", "train.momentum", "train.label_smoothing"):
        at_least(cfg, key, 0)
    choice(cfg, "train.lr_schedule", LR_SCHEDULES)
    choice(cfg, "pretrain.lr_schedule", LR_SCHEDULES)
    at_least(cfg, "pretrain.weight_decay", 0)
    at_least(cfg, "train.val_max_batches", 1)
    at_least(cfg, "pretrain.epochs", 0, " (epochs cannot be negative)")


def check_dataset(cfg: DictConfig) -> None:
    d = cfg.dataset
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"dataset.val_fraction={d.val_fraction} must be in (0, 1)")
    if not 0.0 < d.test_fraction < 1.0:
        raise ConfigError(f"dataset.test_fraction={d.test_fraction} must be in (0, 1)")
    if not 0.0 < d.subset <= 1.0:
        raise ConfigError(f"dataset.subset={d.subset} must be in (0, 1]: the fraction kept")
    choice(cfg, "dataset.augment", AUGMENTS)
    at_least(cfg, "dataset.image_size", 4)
    at_least(cfg, "dataset.num_workers", 0)
    at_least(cfg, "dataset.num_samples", 10)
    at_least(cfg, "dataset.num_classes", 2)
    if d.name == "imagefolder":
        if not d.path:
            raise ConfigError("dataset.path is not set: imagefolder needs dataset.path=DIR "
                              "(a folder with train/ and val/ class folders)")
        path = os.path.expanduser(str(d.path))
        if not os.path.isdir(os.path.join(path, "train")):
            raise ConfigError(f"dataset.path={d.path} has no train/ folder: point it at a folder "
                              "with train/ and val/ class folders (ImageNet layout)")


# The model keys only some models read: a key set for another model would be silently ignored.
MODEL_KEYS = {"arch": ("torchvision", "timm"), "weights": ("torchvision",),
              "pretrained": ("timm",), "target": ("custom",), "kwargs": ("custom",)}


def check_model(cfg: DictConfig) -> None:
    at_least(cfg, "model.in_channels", 1)
    m = cfg.model
    for key, models in MODEL_KEYS.items():
        if m.name not in models and m[key] not in (None, False, {}):
            raise ConfigError(f"model.{key} is for model={' or model='.join(models)}, not "
                              f"model={m.name}")
    ckpt = cfg.model.checkpoint
    if ckpt is not None:
        path = os.path.expanduser(str(ckpt))
        if not os.path.isfile(path):
            raise ConfigError(f"model.checkpoint={ckpt} does not exist: give the path of a state "
                              "dict")
        check_torch_file(path, f"model.checkpoint={ckpt}")


def check_hardware(cfg: DictConfig) -> None:
    h = cfg.hardware
    choice(cfg, "hardware.device", DEVICES)
    choice(cfg, "hardware.precision", PRECISIONS)
    choice(cfg, "hardware.distributed", ("auto", "off"))
    at_least(cfg, "hardware.threads", 0)
    at_least(cfg, "hardware.latency.warmup", 0)
    at_least(cfg, "hardware.latency.repeats", 1)
    positive(cfg, "hardware.latency.max_seconds")
    at_least(cfg, "hardware.latency.max_spread", 1.0, " (p95 / median is never below 1)")
    at_least(cfg, "hardware.latency.max_over_flops", 1.0)
    fraction(cfg, "hardware.latency.max_cpu_wait", low_open=False)
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


def fraction(cfg: DictConfig, key: str, low_open: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    if not ((0.0 < value) if low_open else (0.0 <= value)) or not value <= 1.0:
        raise ConfigError(f"{key}={value} must be in {'(' if low_open else '['}0, 1]")
