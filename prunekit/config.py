"""The shared config schemas (registered in Hydra's ConfigStore) and `validate(cfg)`.

The schemas make Hydra reject key typos and wrong types while composing; each schema's `check`
adds what OmegaConf cannot check (ranges, choices, files, cross-key rules), and every problem is
a `ConfigError` whose message is one line naming the key and the fix. What only one option of a
group has (a data set's, a model family's, a tracker's, a method's keys) is declared beside its
code with `@schema(group, name)`, and its YAML merges that schema: this module knows none of them.

Kept free of torch imports: `prunekit/__init__.py` imports it, and `--help` must stay fast.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from prunekit.errors import ConfigError, a_path, at_least, choice, did_you_mean, positive
from prunekit.files import torch_file_problem
from prunekit.latency_config import PRECISIONS, LatencyConfig, check_latency
from prunekit.registry import Registry
from prunekit.settings import environment
from prunekit.targets import TargetConfig

SCOPES = ("layerwise", "global")
AUGMENTS = ("none", "crop", "crop_flip")
DEVICES = ("auto", "cpu", "cuda", "mps")
TRAINING_PRECISIONS = ("auto", *PRECISIONS)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LR_SCHEDULES = ("cosine", "constant")


def schema_keys(schema) -> List[str]:
    """The keys of a config schema (a dataclass), in declaration order."""
    return [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []


# --------------------------------------------------------------------------- schemas
SCHEMAS: Registry = Registry("schema")  # "group/name" -> the dataclass an option's YAML merges


def schema(group: str, name: Optional[str] = None):
    """`@schema("dataset", "mine")` on a dataclass: stored as `schema/<group>/<name>` (name:
    the group's own), for `defaults: [/schema/<group>@_here_: <name>]` in an option's YAML. Its
    classmethod `check(cfg)`, if any, is called by `validate` on the node it types."""
    def add(cls):
        return SCHEMAS.register(f"{group}/{name or group}")(cls)
    return add


@schema("model")
@dataclass
class ModelConfig:
    name: str = MISSING
    in_channels: int = 3  # what the network's stem takes; datasets convert to it
    small_input: Optional[bool] = None  # None: a small-input stem when images are <= 64 px
    checkpoint: Optional[str] = None  # user weights for the dense model (a state dict)
    label_key: ClassVar[Optional[str]] = None  # a family's key that chooses the network

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        at_least(cfg, "model.in_channels", 1)
        ckpt = cfg.model.checkpoint
        if ckpt is not None:
            path = os.path.expanduser(str(ckpt))
            if not os.path.isfile(path):
                raise ConfigError(f"model.checkpoint={ckpt} does not exist: give the path of a "
                                  "state dict")
            check_torch_file(path, f"model.checkpoint={ckpt}")


@schema("dataset")
@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = environment(default="${oc.env:PRUNEKIT_DATA,'~/.cache/prunekit/data'}")
    path: Optional[str] = None  # a data set's own files (see its YAML), where it reads them
    download: bool = environment(default=True)
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

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        for key in ("val_fraction", "test_fraction"):
            value = cfg.dataset[key]
            if not 0.0 < value < 1.0:
                raise ConfigError(f"dataset.{key}={value} must be in (0, 1)")
        if not 0.0 < cfg.dataset.subset <= 1.0:
            raise ConfigError(f"dataset.subset={cfg.dataset.subset} must be in (0, 1]: the "
                              "fraction kept")
        choice(cfg, "dataset.augment", AUGMENTS)
        at_least(cfg, "dataset.image_size", 4)
        at_least(cfg, "dataset.num_workers", 0)


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


@schema("hardware")
@dataclass
class HardwareConfig:
    name: str = MISSING
    device: str = "auto"
    threads: int = 0  # 0: torch's default
    # training and evaluation's autocast; auto: bf16 on a CPU with bf16 matrix units, else fp32
    # (PRUNEKIT_PRECISION sets the default: fp32 pins a cluster of mixed CPUs, and the test suite)
    precision: str = "${oc.env:PRUNEKIT_PRECISION,auto}"
    channels_last: Optional[bool] = None  # None: on with the CPU's bf16 mode
    cudnn_benchmark: bool = True
    compile: bool = False  # torch.compile the train/eval steps and both models' latency
    compile_mode: str = "default"  # torch.compile's mode; reduce-overhead: CUDA graphs too
    sparse_2of4: bool = False  # 2:4 results run PyTorch's semi-structured sparse kernels (CUDA)
    # a structured result keeps a multiple of this per pruned layer (None: 8 on CUDA and CPU)
    channel_multiple: Optional[int] = None
    distributed: str = "auto"  # auto: one run over the processes torchrun / SLURM started; off
    latency: LatencyConfig = environment(default_factory=LatencyConfig)  # how it is timed

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        h = cfg.hardware
        choice(cfg, "hardware.device", DEVICES)
        if h.precision not in TRAINING_PRECISIONS:
            raise ConfigError(f"hardware.precision={h.precision} is not one of "
                              f"{', '.join(TRAINING_PRECISIONS)} (its default comes from "
                              "PRUNEKIT_PRECISION where that is set)")
        choice(cfg, "hardware.compile_mode", COMPILE_MODES)
        choice(cfg, "hardware.distributed", ("auto", "off"))
        at_least(cfg, "hardware.threads", 0)
        at_least(cfg, "hardware.channel_multiple", 1)
        check_latency(cfg)
        if h.sparse_2of4 and h.precision in ("fp32", "auto"):
            raise ConfigError("hardware.sparse_2of4 needs hardware.precision=fp16 or bf16: "
                              "PyTorch's semi-structured sparse kernels take half-precision "
                              "weights")


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
    progress: bool = environment(default=True)


@dataclass
class PretrainConfig:
    """The dense model's own recipe, independent of train.* (the fine-tuning settings), so every
    method and preset of a sweep starts from the same dense model."""

    epochs: int = "${dataset.pretrain_epochs}"  # type: ignore[assignment]
    lr: float = 0.05
    lr_schedule: str = "cosine"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True
    cache: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True  # after pruning steps and fine-tune epochs, for resume=true
    keep: int = 2  # the newest files kept
    min_interval_s: float = 60.0  # at most one per minute (0: after every step and epoch)
    restart: bool = False  # a fresh run where one was interrupted (its files kept in refused/)


@dataclass
class Config:
    model: Any = MISSING
    dataset: Any = MISSING
    method: Any = MISSING
    hardware: Any = MISSING
    seed: int = 0
    sparsity: float = 0.5
    target: TargetConfig = field(default_factory=TargetConfig)
    resume: bool = environment(default=False)
    deterministic: bool = True
    cache_dir: str = environment(default="${oc.env:PRUNEKIT_CACHE,'~/.cache/prunekit'}")
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    checkpoint: CheckpointConfig = environment(default_factory=CheckpointConfig)
    logger: Any = environment(default=MISSING)  # the trackers' (prunekit.tracking)

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        at_least(cfg, "checkpoint.keep", 1)
        a_path(cfg, "cache_dir", "PRUNEKIT_CACHE")
        a_path(cfg, "dataset.root", "PRUNEKIT_DATA")
        at_least(cfg, "checkpoint.min_interval_s", 0)
        if not 0.0 <= cfg.sparsity < 1.0:
            raise ConfigError(f"sparsity={cfg.sparsity} is out of range: it is the fraction "
                              "removed, in [0, 1)")
        for key in ("train.batch_size", "train.eval_batch_size", "pretrain.lr", "method.lr"):
            positive(cfg, key)
        for key in ("train.weight_decay", "train.momentum", "train.label_smoothing",
                    "pretrain.weight_decay"):
            at_least(cfg, key, 0)
        choice(cfg, "train.lr_schedule", LR_SCHEDULES)
        choice(cfg, "pretrain.lr_schedule", LR_SCHEDULES)
        at_least(cfg, "train.val_max_batches", 1)
        at_least(cfg, "pretrain.epochs", 0, " (epochs cannot be negative)")


METHODS: Registry = Registry("method")  # name -> method unit (prunekit.methods fills it)


def register_configs() -> None:
    """Schemas live under schema/ so they never show up as `method=...` options. Each method's
    comes from its unit (prunekit.methods, imported first)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for path, node in SCHEMAS.items():
        group, _, name = path.rpartition("/")
        cs.store(group=f"schema/{group}", name=name, node=node)
    for name, method in METHODS.items():
        cs.store(group="schema/method", name=name, node=method.schema)


# --------------------------------------------------------------------------- validation
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
    """The model as reports name it: its name, or `<family>:<what it chose>` for a family whose
    schema names the key that chooses the network (`label_key`)."""
    name = model_cfg.get("name")
    schema = OmegaConf.get_type(model_cfg) if isinstance(model_cfg, DictConfig) else None
    key = getattr(schema, "label_key", None)
    chosen = model_cfg.get(key) if key else None
    return f"{name}:{chosen}" if chosen else name


def checked_nodes(node: DictConfig):
    """The nodes of a composed config whose schema has a `check`, parents first."""
    if hasattr(OmegaConf.get_type(node), "check"):
        yield node
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            yield from checked_nodes(child)


def validate(cfg: DictConfig) -> None:
    """Check everything that can be checked before any work starts: the keys no schema knows,
    every schema's own `check`, then the method's. Raises ConfigError."""
    for group in ("model", "dataset", "method", "hardware"):
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{group} is not selected: pass {group}=<option>")
    _unknown_keys(cfg)
    for group in ("model", "dataset", "method", "hardware"):
        _unknown_keys(cfg[group], group + ".")
    for node in checked_nodes(cfg):
        OmegaConf.get_type(node).check(cfg)
    METHODS.choose(cfg.method.name, "method.name").check(cfg)  # a method checks its own keys


STATE_DICT_FIX = "save one with torch.save(model.state_dict(), path)"


def check_torch_file(path: str, what: str) -> None:
    """A ConfigError naming `what` (e.g. `model.checkpoint=x`) when `path` is no torch file."""
    problem = torch_file_problem(path)
    if problem:
        raise ConfigError(f"{what} is not a PyTorch file ({problem}): {STATE_DICT_FIX}")
