"""The final measurement: test accuracy, sizes, FLOPs and latency of the dense and the pruned model,
side by side, as summary.json's keys, and layers.csv's rows."""
from __future__ import annotations

import copy
import logging
import re
from typing import Dict, List, Optional, Tuple

import torch.nn as nn

from prunekit import distributed
from prunekit.data import Data
from prunekit.deploy import (
    agreement,
    calibration_batches,
    deployed,
    int8,
    measure_runtime_latencies,
)
from prunekit.errors import ConfigError, first_line
from prunekit.hardware import Hardware, latency_doubts, measure_latencies, with_sparse_kernels
from prunekit.metrics import (
    count_nonzero,
    count_params,
    effective_flops,
    layer_rows,
    prunable_sparsity,
)
from prunekit.plan import RunPlan
from prunekit.train import Trainer

log = logging.getLogger("prunekit.runner")


def speedup_kind(plan: RunPlan, compacted: bool, hw: Hardware) -> str:
    """Where a measured speedup can come from: `compacted` (a physically smaller model on dense
    kernels), `sparse_kernels` (2:4 layers on PyTorch's semi-structured kernels), `theoretical`
    (masked weights: dense kernels still multiply the zeros, only FLOPs fall) or `none` (dense)."""
    if not plan.method.prunes:
        return "none"
    if hw.sparse_2of4 and plan.granularity.one_step and list(plan.options.nm) == [2, 4]:
        return "sparse_kernels"
    return "compacted" if compacted else "theoretical"


def measure(plan: RunPlan, model: nn.Module, dense: nn.Module, trainer: Trainer, hw: Hardware,
            data: Data, dense_numel: Dict[str, int], prunable, compacted: bool) -> tuple:
    """The final numbers of dense and pruned model, measured side by side; and layers.csv rows."""
    example = data.example_input(1)
    test_dense = trainer.evaluate(dense, "test")
    test = trainer.evaluate(model, "test")
    params_dense, params, nonzero = count_params(dense), count_params(model), count_nonzero(model)
    flops_dense, flops = effective_flops(dense, example), effective_flops(model, example)
    out = {
        "sparsity": prunable_sparsity(model, dense_numel),
        "sparsity_total": 1.0 - nonzero / params_dense,
        "params_dense": params_dense, "params": params, "params_nonzero": nonzero,
        "compression_ratio": params_dense / max(nonzero, 1),
        "flops_dense": int(flops_dense["__total__"]), "flops": int(flops["__total__"]),
        "theoretical_speedup": flops_dense["__total__"] / max(flops["__total__"], 1.0),
        "top1_dense": test_dense.top1, "top5_dense": test_dense.top5,
        "top1": test.top1, "top5": test.top5, "delta_top1": test.top1 - test_dense.top1,
        "speedup_kind": speedup_kind(plan, compacted, hw),
    }
    # rank 0 alone measures latency (the others would share its cores, and write nothing)
    if plan.latency.enabled and distributed.current().main:
        target_batch = plan.target.batch_size if plan.target.kind.measured else None
        out.update(latency(plan.latency, dense, model, hw, tuple(example.shape[1:]), out, data,
                           target_batch))
    else:
        out.update(latency_ms_dense=None, latency_ms=None, measured_speedup=None,
                   latency_graphed_ms_dense=None, latency_graphed_ms=None,
                   measured_speedup_graphed=None, latency_graphed_error=None,
                   latency_reliable=None, latency_warning=None, latency_slower=None)
    dense_shapes = {n: tuple(m.weight.shape) for n, m in dense.named_modules()
                    if isinstance(m, (nn.Conv2d, nn.Linear))}
    rows = layer_rows(model, dense_shapes, flops_dense, flops, list(prunable))
    out["empty_layers"] = warn_empty_layers(rows, plan.target.describe())
    return out, rows


def warn_empty_layers(rows: List[dict], target: str) -> int:
    """How many prunable layers keep no weight at all, said in one line: the network's output
    no longer depends on its input through them, whatever its accuracy says."""
    empty = [r["layer"] for r in rows if r.get("prunable") and r["density"] == 0]
    if empty:
        log.warning("%d prunable layer(s) keep no weights (%s): the output no longer depends "
                    "on the input through them; prune less (%s)", len(empty),
                    ", ".join(empty[:4]) + (", ..." if len(empty) > 4 else ""), target)
    return len(empty)


def latency_modes(lat, hw: Hardware) -> Tuple[str, ...]:
    """How the models are timed: torch eager everywhere; on CUDA also captured in a CUDA graph
    (the deployed form) unless `hardware.latency.graphed=false`, or torch.compile graphs them
    already (`hardware.compile_mode=reduce-overhead`: then the one timing is the graphed one);
    exported to ONNX Runtime where `hardware.latency.runtimes` names it."""
    graphed = hw.is_cuda and lat.graphed and not hw.compiled_graphs
    runtimes = tuple(r for r in RUNTIME_MODES if r in lat.runtimes)
    return ("eager", "graphed", *runtimes) if graphed else ("eager", *runtimes)


def latency_key(name: str, mode: str) -> str:
    """A latency key of a mode: `latency_ms_bs64` eager, `latency_graphed_ms_bs64` graphed."""
    if mode == "eager":
        return name
    if name.startswith("latency_"):
        return f"latency_{mode}_{name[len('latency_'):]}"
    base, bs = re.fullmatch(r"(.*?)(_bs\d+)?", name).groups()
    return f"{base}_{mode}{bs or ''}"


def timed_pair(kind: str, dense: nn.Module, model: nn.Module, hw: Hardware, out: dict):
    """(kind, dense, pruned) as they are timed: as they are, or under `sparse_kernels` both in
    half precision and the pruned one on sparse kernels (`theoretical` where no layer took them,
    said in `out`)."""
    if kind != "sparse_kernels":
        return kind, dense, model
    timed, out["sparse_kernel_layers"] = with_sparse_kernels(model, hw.amp_dtype)
    if not out["sparse_kernel_layers"]:
        out["speedup_kind"] = kind = "theoretical"
    return kind, copy.deepcopy(dense).to(hw.amp_dtype), timed


def latency(lat, dense: nn.Module, model: nn.Module, hw: Hardware, shape: tuple,
            counted: dict, data: Optional[Data] = None,
            target_batch: Optional[int] = None) -> dict:
    """The latency keys: both models timed side by side at every batch size (the target's
    too), in every mode of every runtime: torch eager, on CUDA torch CUDA-graphed
    (`latency_graphed_*`), exported to ONNX Runtime (`latency_onnxruntime_*`) and quantized
    there (`latency_onnxruntime_int8_*`), with how their outputs agree with torch's on `data`'s
    test images. A masked model runs the same dense kernels as
    its dense model, so its measured ratio would be noise passed off as speed; nor is one
    believed from a busy machine (latency_doubts)."""
    out = {"latency_precision": hw.latency_precision}
    batch_sizes = list(dict.fromkeys(lat.batch_sizes))  # the training batch may be 1
    if target_batch is not None and target_batch not in batch_sizes:
        batch_sizes.append(target_batch)  # a latency target's batch is measured too
    kind, timed_dense, timed = timed_pair(counted["speedup_kind"], dense, model, hw, out)
    real, first = kind in ("compacted", "sparse_kernels"), lat.batch_sizes[0]
    warnings: List[str] = []
    slower: List[str] = []
    out.update(latency_graphed_ms_dense=None, latency_graphed_ms=None,
               measured_speedup_graphed=None, latency_graphed_error=None)
    sessions: dict = {}
    for mode in latency_modes(lat, hw):
        try:
            ld, lp = timed_in(mode, [timed_dense, timed], [dense, model], shape, hw,
                              batch_sizes, lat, data, out, sessions)
        except (RuntimeError, ConfigError) as e:  # not capturable (a host sync), not exportable
            if mode == "eager" or isinstance(e, ConfigError):
                raise
            out[f"latency_{mode}_error"] = first_line(e, 200)
            log.warning("latency: the models could not be %s, so they are not timed there (%s)",
                        MODE_VERBS[mode], out[f"latency_{mode}_error"])
            continue
        doubts = {bs: latency_doubts(ld[bs], lp[bs], counted["theoretical_speedup"], real,
                                     lat.max_spread, lat.max_over_flops, lat.max_cpu_wait)
                  for bs in batch_sizes}
        speedup = {bs: ld[bs]["median_ms"] / lp[bs]["median_ms"] if real and not doubts[bs]
                   else None for bs in batch_sizes}
        label = "" if mode == "eager" else f"{MODE_LABELS[mode]} "
        warnings += [f"{label}batch {bs}: {', '.join(d)}" for bs, d in doubts.items() if d]
        slower += slower_batches(ld, lp, speedup, label)
        out.update(mode_keys(mode, first, ld, lp, speedup, doubts))
    warning = "; ".join(warnings)
    out.update(latency_batch_size=first, latency_reliable=not warning,
               latency_warning=warning or None, latency_slower=slower_line(slower))
    if warning:  # the summary table says it on the console; the log file keeps it too
        logging.getLogger("prunekit.trace").warning(
            "latency unreliable, no speedup claimed (%s): measure on an idle machine", warning)
    return out


RUNTIME_MODES = ("onnxruntime", "onnxruntime_int8")
MODE_LABELS = {"eager": "", "graphed": "graphed", "onnxruntime": "onnxruntime",
               "onnxruntime_int8": "onnxruntime int8"}
MODE_VERBS = {"graphed": "captured in a CUDA graph",
              "onnxruntime": "exported to ONNX and loaded in ONNX Runtime",
              "onnxruntime_int8": "exported to ONNX and quantized to int8 in ONNX Runtime"}


def timed_in(mode: str, models: List[nn.Module], fp32_models: List[nn.Module], shape: tuple,
             hw: Hardware, batch_sizes: List[int], lat, data: Optional[Data], out: dict,
             sessions: dict) -> list:
    """Per model, {batch size: latency_stats} in one mode; for ONNX Runtime (which runs the
    fp32 models, exported, or their int8 quantization) also its provider and how its outputs
    agree with torch's on the test images, and their top-1, in `out`."""
    if mode not in RUNTIME_MODES:
        return measure_latencies(models, shape, hw, batch_sizes=batch_sizes, warmup=lat.warmup,
                                 repeats=lat.repeats, max_seconds=lat.max_seconds,
                                 graphed=mode == "graphed")
    calls = runtime_calls(mode, fp32_models, shape, hw, lat, data, sessions)
    out[f"{mode}_provider"] = calls[1].provider
    if data is not None:
        test = getattr(data.test, "unsharded", data.test)
        for side, m, call in zip(("_dense", ""), fp32_models, calls):
            agree = agreement(m, call, test, lat.check_images, hw)
            out.update({f"{mode}_{k}{side}": agree[k]
                        for k in ("max_abs_diff", "top1_agreement", "top1")})
            out[f"{mode}_check_images"] = agree["images"]
    return measure_runtime_latencies(calls, shape, batch_sizes, lat.warmup, lat.repeats,
                                     lat.max_seconds, on_cpu=not hw.is_cuda)


def runtime_calls(mode: str, fp32_models: List[nn.Module], shape: tuple, hw: Hardware, lat,
                  data: Optional[Data], sessions: dict) -> list:
    """Both models in ONNX Runtime: exported once (`sessions` keeps them for the next mode),
    and for onnxruntime_int8 quantized on `calibration_images` train images."""
    try:
        if "onnxruntime" not in sessions:
            sessions["onnxruntime"] = [deployed(m, shape, hw) for m in fp32_models]
        if mode == "onnxruntime":
            return sessions["onnxruntime"]
        if data is None:
            raise RuntimeError("int8 calibration needs the run's train images")
        train = getattr(data.train, "unsharded", data.train)
        calibration = calibration_batches(train, lat.calibration_images)
        return [int8(call, calibration, hw) for call in sessions["onnxruntime"]]
    except ConfigError:  # the deploy extra is missing
        raise
    except Exception as e:  # the exporter's or ONNX Runtime's refusal, whatever its class
        raise RuntimeError(first_line(e, 200)) from e


def mode_keys(mode: str, first: int, dense: dict, pruned: dict, speedup: dict,
              doubts: dict) -> dict:
    """The summary keys of one timing mode: the first batch size's figures, and every batch
    size's in detail."""
    key = lambda name: latency_key(name, mode)  # noqa: E731
    out = {key("latency_ms_dense"): dense[first]["median_ms"],
           key("latency_ms"): pruned[first]["median_ms"],
           key("measured_speedup"): speedup[first]}
    for bs in dense:
        out.update({key(f"latency_ms_dense_bs{bs}"): dense[bs]["median_ms"],
                    key(f"latency_ms_bs{bs}"): pruned[bs]["median_ms"],
                    key(f"latency_p95_ms_dense_bs{bs}"): dense[bs]["p95_ms"],
                    key(f"latency_p95_ms_bs{bs}"): pruned[bs]["p95_ms"],
                    key(f"latency_rounds_bs{bs}"): pruned[bs]["repeats"],
                    key(f"latency_cpu_wait_bs{bs}"): pruned[bs]["cpu_wait"],
                    key(f"throughput_bs{bs}"): pruned[bs]["throughput"],
                    key(f"measured_speedup_bs{bs}"): speedup[bs],
                    key(f"latency_reliable_bs{bs}"): not doubts[bs]})
    return out


def slower_batches(dense: dict, pruned: dict, speedup: dict, label: str = "") -> List[str]:
    """The figures of every batch size where a reliably measured pruned model is slower than
    its dense one."""
    return [f"{label}batch {bs}: {pruned[bs]['median_ms']:.3f} ms vs dense "
            f"{dense[bs]['median_ms']:.3f} ms ({s:.2f}x)"
            for bs, s in speedup.items() if s is not None and s < 1.0]


def slower_line(slow: List[str]) -> Optional[str]:
    """One line with the figures where the pruned model is slower than the dense one (never a
    quiet ratio below 1), else None; it is logged as a warning too."""
    if not slow:
        return None
    line = "the pruned model is slower than the dense one (" + "; ".join(slow) + ")"
    log.warning("%s", line)
    return line
