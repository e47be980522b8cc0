"""The hardware target: device, precision, threads, seeding, and the latency protocol.

Latency protocol: the model in eval mode under `torch.inference_mode`, a random input of each batch
size, `warmup` untimed forwards, then `repeats` timed ones (CUDA events on a GPU, perf_counter
around a synchronised call elsewhere); median and p95 in milliseconds, throughput in images/s. The
dense and the pruned model are measured back to back under identical settings (`hardware.compile`:
both compiled; `hardware.sparse_2of4`: both in the autocast dtype, the pruned one with its 2:4
layers on PyTorch's semi-structured sparse kernels).
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

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
    compile: bool = False
    sparse_2of4: bool = False

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
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> str:
        if self.is_cuda:
            what = torch.cuda.get_device_name(self.device)
        elif self.device.type == "mps":
            what = "Apple GPU (mps)"
        else:
            what = f"CPU, {torch.get_num_threads()} threads"
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}
        extras = [x for x, on in (("channels_last", self.channels_last),
                                  ("torch.compile", self.compile),
                                  ("2:4 sparse kernels", self.sparse_2of4)) if on]
        return ", ".join([f"{self.name}: {what}", precision[self.amp_dtype], *extras])


def setup_hardware(hw_cfg, deterministic: bool = True) -> Hardware:
    wanted = hw_cfg.device
    has_mps = torch.backends.mps.is_available()
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hardware={hw_cfg.name} needs a CUDA device and none is visible: use "
                          "hardware=cpu or hardware=auto")
    if wanted == "mps" and not has_mps:
        raise ConfigError("hardware=mps needs an Apple-silicon GPU (torch.backends.mps) and none "
                          "is available: use hardware=cpu or hardware=auto")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    device = torch.device(wanted)
    if hw_cfg.sparse_2of4 and (device.type != "cuda"
                               or torch.cuda.get_device_capability(device)[0] < 8):
        raise ConfigError("hardware.sparse_2of4 needs an NVIDIA GPU of compute capability 8.0 or "
                          "newer (Ampere+) for PyTorch's semi-structured sparse kernels")
    if hw_cfg.threads:
        torch.set_num_threads(hw_cfg.threads)
    amp = AMP_DTYPES[hw_cfg.precision] if device.type == "cuda" else None  # CPU autocast: slower
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(hw_cfg.cudnn_benchmark) and not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
    return Hardware(hw_cfg.name, device, amp, bool(hw_cfg.channels_last), bool(hw_cfg.compile),
                    bool(hw_cfg.sparse_2of4))


def is_2of4(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive weights along a row has at most 2 non-zeros (the
    layout of PyTorch's semi-structured sparse tensors)."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool((weight.detach().reshape(weight.shape[0], -1, 4).ne(0).sum(-1) <= 2).all())


def with_sparse_kernels(model: nn.Module, dtype: torch.dtype) -> Tuple[nn.Module, List[str]]:
    """A copy of `model` in `dtype` whose 2:4-sparse Linear layers hold semi-structured sparse
    weights (PyTorch runs them on sparse kernels); the names of those layers. Convolutions, and
    layers whose shapes the kernels refuse, stay dense."""
    from torch.sparse import to_sparse_semi_structured

    model = copy.deepcopy(model).to(dtype)
    converted = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and is_2of4(m.weight):
            try:
                m.weight = nn.Parameter(to_sparse_semi_structured(m.weight.detach()),
                                        requires_grad=False)
                converted.append(name)
            except (RuntimeError, ValueError):  # shape or dtype the kernels do not take
                continue
    return model, converted


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
    dtype = next(model.parameters()).dtype  # a half-precision copy (2:4 kernels) gets half input
    run = torch.compile(model) if hw.compile else model
    for bs in batch_sizes:
        x = torch.randn(bs, *input_shape, generator=gen).to(hw.device, dtype=dtype,
                                                              memory_format=fmt)
        with hw.autocast() if dtype == torch.float32 else contextlib.nullcontext():
            for _ in range(warmup):
                run(x)
            hw.sync()
            times = []
            for _ in range(repeats):
                if hw.is_cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    run(x)
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end))
                else:
                    t0 = time.perf_counter()
                    run(x)
                    hw.sync()
                    times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        median = statistics.median(times)
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        results[bs] = {"median_ms": median, "p95_ms": p95, "throughput": bs / (median / 1e3),
                       "repeats": len(times)}
    model.train(was_training)
    return results
