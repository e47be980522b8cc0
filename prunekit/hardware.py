"""The hardware target: device, precision, threads, seeding, and the latency protocol.

Latency protocol: the model in eval mode under `torch.inference_mode`, a random input of each batch
size, `warmup` untimed forwards, then `repeats` timed ones (CUDA events on a GPU, perf_counter
around a synchronised call on CPU); median and p95 in milliseconds, throughput in images/s. The
dense and the pruned model are measured back to back under identical settings.
"""
from __future__ import annotations

import contextlib
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from prunekit.config import ConfigError

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Hardware:
    name: str
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    channels_last: bool

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> str:
        if self.is_cuda:
            what = torch.cuda.get_device_name(self.device)
        else:
            what = f"CPU, {torch.get_num_threads()} threads"
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}
        return f"{self.name}: {what}, {precision[self.amp_dtype]}" + (
            ", channels_last" if self.channels_last else "")


def setup_hardware(hw_cfg, deterministic: bool = True) -> Hardware:
    wanted = hw_cfg.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but no CUDA device is visible: use hardware=cpu "
                          "or hardware=auto")
    device = torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
                          else "cpu")
    if hw_cfg.threads:
        torch.set_num_threads(hw_cfg.threads)
    amp = AMP_DTYPES[hw_cfg.precision] if device.type == "cuda" else None  # CPU autocast: slower
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(hw_cfg.cudnn_benchmark) and not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
    channels_last = bool(hw_cfg.channels_last)
    return Hardware(hw_cfg.name, device, amp, channels_last)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Hydra seeds nothing: seed Python, NumPy and torch (all devices) here; seed 0 is valid."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape, hw: Hardware, batch_sizes: List[int],
                    warmup: int, repeats: int) -> Dict[int, Dict[str, float]]:
    """{batch size: {median_ms, p95_ms, throughput}} of `model` on `hw` (see module docstring)."""
    was_training = model.training
    model.eval()
    results = {}
    fmt = torch.channels_last if hw.channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    for bs in batch_sizes:
        x = torch.randn(bs, *input_shape, generator=gen).to(hw.device, memory_format=fmt)
        with hw.autocast():
            for _ in range(warmup):
                model(x)
            hw.sync()
            times = []
            for _ in range(repeats):
                if hw.is_cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    model(x)
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end))
                else:
                    t0 = time.perf_counter()
                    model(x)
                    times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        median = statistics.median(times)
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        results[bs] = {"median_ms": median, "p95_ms": p95, "throughput": bs / (median / 1e3)}
    model.train(was_training)
    return results
