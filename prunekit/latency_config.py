"""How latency is measured (`hardware.latency`): the schema and its checks."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import DictConfig

from prunekit.errors import ConfigError, at_least, choice, did_you_mean, fraction, positive

PRECISIONS = ("fp32", "bf16", "fp16")
RUNTIMES = ("torch", "onnxruntime", "onnxruntime_int8")
DEPLOY_PACKAGES = ("onnxruntime", "onnx", "onnxscript")  # the `deploy` extra
EXTRA = 'pip install "prunekit[deploy]"'


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
    graphed: bool = True  # CUDA: also time both models captured in a CUDA graph (deployed form)
    # the autocast latency is timed under (None: fp32 on the CPU, as deployed; else the training's)
    precision: Optional[str] = None
    # where latency is timed: torch (eager; CUDA-graphed too on a GPU), onnxruntime (exported),
    # onnxruntime_int8 (exported, then statically quantized to int8)
    runtimes: List[str] = field(default_factory=lambda: ["torch"])
    check_images: int = 1000  # test images an exported model is checked on against torch (0: all)
    calibration_images: int = 256  # train images onnxruntime_int8 calibrates its ranges on


def check_runtimes(runtimes: List[str]) -> None:
    """`hardware.latency.runtimes`: known names, torch among them (the run's own form, whose
    keys every table reads), and the deploy extra installed where onnxruntime is asked for."""
    for name in runtimes:
        if name not in RUNTIMES:
            raise ConfigError(f"hardware.latency.runtimes: {name} is not one of "
                              f"{', '.join(RUNTIMES)}{did_you_mean(name, RUNTIMES)}")
    if "torch" not in runtimes:
        raise ConfigError(f"hardware.latency.runtimes={runtimes} must include torch: the "
                          "deployed runtimes are timed beside it")
    missing = [m for m in DEPLOY_PACKAGES if importlib.util.find_spec(m) is None]
    deployed = [r for r in runtimes if r.startswith("onnxruntime")]
    if deployed and missing:
        raise ConfigError(f"hardware.latency.runtimes=[...,{deployed[0]}] needs "
                          f"{', '.join(missing)}: {EXTRA}")


def check_latency(cfg: DictConfig) -> None:
    lat = cfg.hardware.latency
    at_least(cfg, "hardware.latency.warmup", 0)
    at_least(cfg, "hardware.latency.repeats", 1)
    positive(cfg, "hardware.latency.max_seconds")
    at_least(cfg, "hardware.latency.max_spread", 1.0, " (p95 / median is never below 1)")
    at_least(cfg, "hardware.latency.max_over_flops", 1.0)
    fraction(cfg, "hardware.latency.max_cpu_wait", low_open=False)
    at_least(cfg, "hardware.latency.check_images", 0)
    at_least(cfg, "hardware.latency.calibration_images", 1)
    if lat.get("precision") is not None:
        choice(cfg, "hardware.latency.precision", PRECISIONS)
    if not lat.batch_sizes or min(lat.batch_sizes) < 1:
        raise ConfigError(f"hardware.latency.batch_sizes={list(lat.batch_sizes)} must "
                          "be a non-empty list of positive batch sizes")
    check_runtimes(list(lat.runtimes))
