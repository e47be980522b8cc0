"""The hardware target: device, precision, threads, seeding, and the latency protocol.

Latency protocol: the model in eval mode under `torch.inference_mode`, a random input of each batch
size, `warmup` untimed forwards, then `repeats` timed ones (CUDA events on a GPU, perf_counter
around a synchronised call elsewhere); median and p95 in milliseconds, their ratio (the spread),
throughput in images/s. On CUDA a model is timed twice: eager, and captured in a CUDA graph whose
replays are timed (`graphed`), the form a deployment runs, where a small network's forward is no
longer the cost of launching its kernels one by one from Python. The dense and the pruned model
are measured side by side, in alternating rounds, under identical settings (`hardware.compile`:
both compiled; `hardware.sparse_2of4`: both in the autocast dtype, the pruned one with its 2:4
layers on PyTorch's semi-structured sparse kernels), within a time budget. A measurement that
waited for a CPU core, whose spread is large, or whose real speedup beats the FLOPs ratio by a
clear margin is reported as unreliable (`latency_doubts`), with no speedup.
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from prunekit import distributed
from prunekit.errors import ConfigError

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 in hardware (Intel AMX tiles, or AVX512-BF16), as
    PyTorch's CPU capability checks say: there oneDNN's bf16 convolutions and matmuls train
    1.4-1.7x faster than fp32 (2x compiled; issue 44's figures); elsewhere bf16 is emulated
    and slower than fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def device_type(hw_cfg) -> str:
    """The device `hardware.device` names, `auto` resolved (CUDA, else an Apple GPU, else
    the CPU); whether it is present is setup_hardware's check."""
    if hw_cfg.device != "auto":
        return hw_cfg.device
    return ("cuda" if torch.cuda.is_available() else
            "mps" if torch.backends.mps.is_available() else "cpu")


@dataclass(frozen=True)
class Precision:
    """What a run trains and evaluates in, and why: `name` (fp32, bf16, fp16), `channels_last`,
    and the reason the data line gives."""
    name: str
    channels_last: bool
    why: str

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        return AMP_DTYPES[self.name]


def training_precision(hw_cfg) -> Precision:
    """`hardware.precision` resolved on this machine. `auto` (the default) is bf16 autocast
    with channels_last on a CPU with bf16 matrix units, fp32 elsewhere (on CUDA too: hardware=cuda
    asks for bf16 itself); a named precision is that autocast on CUDA and on the CPU, fp32 on an
    Apple GPU. `hardware.channels_last` unset follows the CPU's bf16 mode."""
    kind, asked = device_type(hw_cfg), hw_cfg.precision
    if kind == "mps":
        name, why = "fp32", "the Apple GPU trains in fp32"
    elif asked != "auto":
        name, why = asked, f"hardware.precision={asked}"
    elif kind == "cpu" and bf16_matrix_units():
        name, why = "bf16", "this CPU has bf16 matrix units; hardware.precision=fp32 forces fp32"
    elif kind == "cpu":
        name, why = "fp32", "this CPU has no bf16 matrix units (AMX, AVX512-BF16)"
    else:
        name, why = "fp32", "hardware.precision=auto is fp32 on CUDA; hardware=cuda trains in bf16"
    channels_last = hw_cfg.get("channels_last")
    if channels_last is None:
        channels_last = kind == "cpu" and name == "bf16"
    return Precision(name, bool(channels_last), why)


def latency_precision(hw_cfg, training: Precision) -> str:
    """What latency is timed in: `hardware.latency.precision`, or by default fp32 on the CPU
    (what a CPU deployment runs, whatever the training used) and the training precision
    elsewhere."""
    asked = hw_cfg.latency.get("precision")
    if asked is not None:
        return asked
    return "fp32" if device_type(hw_cfg) == "cpu" else training.name


@dataclass
class Hardware:
    name: str
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    channels_last: bool
    compile: bool = False
    sparse_2of4: bool = False
    compile_mode: str = "default"  # torch.compile's mode
    latency_dtype: Optional[torch.dtype] = None  # the autocast latency is timed under
    precision_why: str = ""  # why the run trains in its precision (the data line says it)

    @property
    def compiled_graphs(self) -> bool:
        """Whether torch.compile itself captures CUDA graphs (its reduce-overhead and
        max-autotune modes): each step then starts a new graph generation."""
        return self.compile and self.is_cuda and self.compile_mode in ("reduce-overhead",
                                                                        "max-autotune")

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self, cache: bool = True, timing: bool = False):
        """The precision's autocast (none for fp32); `timing`: the latency precision's.
        `cache=False` for a CUDA-graph capture: a cached cast would be freed when the context
        ends, under the graph's feet."""
        dtype = self.latency_dtype if timing else self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=cache)

    @property
    def latency_precision(self) -> str:
        return PRECISION_NAMES[self.latency_dtype]

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
        precision = PRECISION_NAMES[self.amp_dtype]
        precision = precision if self.amp_dtype is None else precision + " autocast"
        if self.precision_why:
            precision += f" ({self.precision_why})"
        extras = [x for x, on in (("channels_last", self.channels_last),
                                  (f"torch.compile ({self.compile_mode})", self.compile),
                                  ("2:4 sparse kernels", self.sparse_2of4)) if on]
        timing = f"latency in {self.latency_precision}"
        return ", ".join([f"{self.name}: {what}", precision, *extras, timing])


def setup_hardware(hw_cfg, deterministic: bool = True) -> Hardware:
    wanted = hw_cfg.device
    has_mps = torch.backends.mps.is_available()
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hardware={hw_cfg.name} needs a CUDA device and none is visible: use "
                          "hardware=cpu or hardware=auto")
    if wanted == "mps" and not has_mps:
        raise ConfigError("hardware=mps needs an Apple-silicon GPU (torch.backends.mps) and none "
                          "is available: use hardware=cpu or hardware=auto")
    wanted = device_type(hw_cfg)
    device = torch.device(wanted)
    if wanted == "cuda" and distributed.current().distributed:  # each rank its own GPU
        device = torch.device("cuda", torch.cuda.current_device())  # (distributed.join's)
    if hw_cfg.sparse_2of4 and (device.type != "cuda"
                               or torch.cuda.get_device_capability(device)[0] < 8):
        raise ConfigError("hardware.sparse_2of4 needs an NVIDIA GPU of compute capability 8.0 or "
                          "newer (Ampere+) for PyTorch's semi-structured sparse kernels")
    if hw_cfg.threads:
        torch.set_num_threads(hw_cfg.threads)
    precision = training_precision(hw_cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(hw_cfg.cudnn_benchmark) and not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
    return Hardware(hw_cfg.name, device, precision.amp_dtype, precision.channels_last,
                    bool(hw_cfg.compile), bool(hw_cfg.sparse_2of4),
                    hw_cfg.get("compile_mode", "default"),
                    AMP_DTYPES[latency_precision(hw_cfg, precision)], precision.why)


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


def _timed_call(run, x, hw: Hardware) -> float:
    """Milliseconds of one forward: CUDA events on a GPU, perf_counter around a synchronised
    call elsewhere."""
    if hw.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    run(x)
    hw.sync()
    return (time.perf_counter() - t0) * 1e3


def latency_stats(times: List[float], batch_size: int) -> Dict[str, float]:
    """Median, p95, their ratio (the spread: 1 on a quiet machine) and throughput."""
    times = sorted(times)
    median = statistics.median(times)
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return {"median_ms": median, "p95_ms": p95, "spread": p95 / median,
            "throughput": batch_size / (median / 1e3), "repeats": len(times)}


MIN_ROUNDS = 3  # a time budget never cuts a measurement below this many timed forwards


def run_delay_s() -> Optional[float]:
    """Seconds this process's threads have spent ready to run but waiting for a core (Linux's
    schedstat); None where the kernel does not say."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def cpu_wait(delay_s: Optional[float], cpu_s: float) -> Optional[float]:
    """The fraction of its runnable time the process waited for a core: ~0 when it has the
    cores to itself, 0.2-0.4 with one busy process beside it on 2 cores."""
    if delay_s is None:
        return None
    delay_s = max(delay_s, 0.0)
    return delay_s / max(delay_s + cpu_s, 1e-9)


# A structured result keeps a multiple of 8 channels per pruned group by default: bf16 tensor
# cores and channels_last kernels want it on CUDA, and oneDNN's blocked layouts on a CPU, where
# ONNX Runtime ran an odd-width resnet18 at 1.19x its dense model and the same model kept at
# multiples of 8 at 1.71x (torch eager: 1.69x / 1.64x, alike; docs/benchmarks.md, "ONNX
# Runtime"). Apple GPUs: unmeasured.
CHANNEL_MULTIPLE = {"cuda": 8, "cpu": 8}


def channel_multiple(hw_cfg, device: torch.device) -> int:
    """`hardware.channel_multiple`, or by default 8 on CUDA and the CPU, 1 elsewhere."""
    if hw_cfg.get("channel_multiple") is not None:
        return int(hw_cfg.channel_multiple)
    return CHANNEL_MULTIPLE.get(device.type, 1)


def graph_captured(run: Callable, x: torch.Tensor, hw: Hardware, amp: Callable,
                   warmup: int) -> Callable:
    """`run(x)` captured in a CUDA graph: a callable that replays it and returns its (static)
    output, for the captured input (the latency protocol's input never changes). Warm-up and
    capture share one side stream, so cuDNN's and cuBLAS's lazy set-up (handles, benchmarked
    algorithms) happens before the capture; `amp()` enters the precision's autocast without its
    cast cache."""
    stream = torch.cuda.Stream(hw.device)
    stream.wait_stream(torch.cuda.current_stream(hw.device))
    with torch.cuda.stream(stream), amp():
        for _ in range(max(warmup, 3)):
            run(x)
    torch.cuda.current_stream(hw.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream), amp():
        out = run(x)

    def replay(_x):
        graph.replay()
        return out
    return replay


def side_by_side(timed: Sequence[Callable[[], float]], amps: Sequence[Callable],
                 repeats: int, budget: Optional[float], started: float, on_cpu: bool,
                 batch_size: int) -> List[Dict[str, float]]:
    """latency_stats of each `timed()` (milliseconds of one forward, under its `amps[i]()`),
    in `repeats` rounds of alternating order (A B, B A, ...), stopped when `budget` seconds
    since `started` are spent (never below MIN_ROUNDS); with the share of its runnable time the
    process waited for a core (`cpu_wait`, CPU only)."""
    times: List[List[float]] = [[] for _ in timed]
    delay0, cpu0 = run_delay_s(), time.process_time()
    for r in range(repeats):
        order = range(len(timed)) if r % 2 == 0 else reversed(range(len(timed)))
        for i in order:
            with amps[i]():
                times[i].append(timed[i]())
        if budget is not None and r + 1 >= MIN_ROUNDS and time.perf_counter() - started > budget:
            break
    delay1 = run_delay_s()
    wait = None if not on_cpu or delay0 is None or delay1 is None else cpu_wait(
        delay1 - delay0, time.process_time() - cpu0)
    return [{**latency_stats(t, batch_size), "cpu_wait": wait} for t in times]


@torch.inference_mode()
def measure_latencies(models: Sequence[nn.Module], input_shape, hw: Hardware,
                      batch_sizes: List[int], warmup: int, repeats: int,
                      max_seconds: Optional[float] = None,
                      graphed: bool = False) -> List[Dict[int, Dict[str, float]]]:
    """Per model, {batch size: latency_stats} (see module docstring), the models measured side by
    side: after `warmup` untimed forwards each, `repeats` rounds time one forward of every model,
    in alternating order (A B, B A, ...), so a machine that gets busier or quieter on the way
    weighs on all of them alike. `max_seconds` bounds the whole measurement: the rounds of a
    batch size stop when its share is spent (never below MIN_ROUNDS). `graphed` (CUDA only):
    each forward is captured in a CUDA graph per batch size and its replays are timed; a model
    that cannot be captured raises the capture's RuntimeError."""
    if graphed and not hw.is_cuda:
        raise ValueError(f"CUDA graphs need a CUDA device, not {hw.device}")
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    fmt = torch.channels_last if hw.channels_last else torch.contiguous_format
    runs = [torch.compile(m, mode=hw.compile_mode) if hw.compile else m for m in models]
    dtypes = [next(m.parameters()).dtype for m in models]  # half-precision copies get half input
    results: List[Dict[int, Dict[str, float]]] = [{} for _ in models]
    budget = None if max_seconds is None else max_seconds / len(batch_sizes)
    for bs in batch_sizes:
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(bs, *input_shape, generator=gen)
        inputs = [x.to(hw.device, dtype=dt, memory_format=fmt) for dt in dtypes]
        # half-precision copies run as they are; fp32 models under the precision's autocast
        amps = [(lambda: hw.autocast(cache=False, timing=True)) if dt == torch.float32
                else contextlib.nullcontext for dt in dtypes]
        if graphed:
            calls = [graph_captured(run, xi, hw, amp, warmup)
                     for run, xi, amp in zip(runs, inputs, amps)]
        else:
            calls = runs
            for run, xi, amp in zip(runs, inputs, amps):
                with amp():
                    for _ in range(warmup):
                        run(xi)
        hw.sync()
        timed = [lambda i=i: _timed_call(calls[i], inputs[i], hw) for i in range(len(models))]
        for i, stats in enumerate(side_by_side(timed, amps, repeats, budget, started,
                                               hw.device.type == "cpu", bs)):
            results[i][bs] = stats
    for m, mode in zip(models, was_training):
        m.train(mode)
    return results


def measure_latency(model: nn.Module, input_shape, hw: Hardware, batch_sizes: List[int],
                    warmup: int, repeats: int,
                    max_seconds: Optional[float] = None) -> Dict[int, Dict[str, float]]:
    """{batch size: latency_stats} of one model (see measure_latencies)."""
    return measure_latencies([model], input_shape, hw, batch_sizes, warmup, repeats,
                             max_seconds)[0]


def latency_doubts(dense: Dict[str, float], pruned: Dict[str, float], flops_ratio: float,
                   real: bool, max_spread: float, max_over_flops: float,
                   max_cpu_wait: float) -> List[str]:
    """Why a side-by-side measurement cannot be trusted (empty: it can). On a CPU the process
    may have waited for a core at most `max_cpu_wait` of its runnable time (other work on the
    cores slows every forward, evenly or not); each side's spread (p95 / median) must stay within
    `max_spread`; a real speedup (compacted, sparse kernels) may exceed the FLOPs ratio by at
    most `max_over_flops` (a model that is 2× smaller in FLOPs and measures 36× faster was timed
    on a busy machine, not sped up)."""
    doubts = []
    wait = dense.get("cpu_wait")
    if wait is not None and wait > max_cpu_wait:
        doubts.append(f"it waited for a CPU core {wait:.0%} of the time (> {max_cpu_wait:.0%})")
    doubts += [f"{side} p95/median {stats['spread']:.2f}× > {max_spread:g}×"
               for side, stats in (("dense", dense), ("pruned", pruned))
               if stats["spread"] > max_spread]
    measured = dense["median_ms"] / pruned["median_ms"]
    if real and measured > flops_ratio * max_over_flops:
        doubts.append(f"measured {measured:.2f}× > {max_over_flops:g} × the FLOPs ratio "
                      f"{flops_ratio:.2f}×")
    return doubts
