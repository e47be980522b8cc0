"""Models as deployments run them: exported to ONNX and timed in ONNX Runtime.

A pruned model that is faster in PyTorch can be slower where it is deployed (oneDNN's blocked
layouts in ONNX Runtime dislike odd channel counts: issue 44 measured a 5-of-16-channel resnet20
at 0.74x its dense model at batch 64). `hardware.latency.runtimes=[torch,onnxruntime]` times both
models in ONNX Runtime too, with the latency protocol of hardware.py (warm-up, alternating
rounds, median and p95, the busy-machine checks), on the best execution provider installed for
the run's device (TensorRT, then CUDA, on a GPU; the CPU's elsewhere), with torch's thread
count. Each model is exported once, in fp32 with a dynamic batch axis (the exporter of
`prunekit.export_onnx`), and checked against PyTorch on the test images: the largest absolute
difference of the logits and the share of images whose top-1 class agrees.
"""
from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.hardware import Hardware, side_by_side
from prunekit.latency_config import EXTRA

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def onnxruntime():
    """The onnxruntime module, or one line naming the extra that installs it."""
    try:
        import onnx  # noqa: F401  (the exporter writes through them)
        import onnxruntime as ort
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"hardware.latency.runtimes names onnxruntime, which needs the "
                          f"onnxruntime, onnx and onnxscript packages ({e.name} is missing): "
                          f"{EXTRA}") from None
    return ort


def exported(model: nn.Module, input_shape: Sequence[int], batch_size: int = 2,
             dynamic_batch: bool = True):
    """`model` exported to ONNX (torch.onnx's ONNXProgram), traced on a (batch_size,
    *input_shape) input on the model's device, its batch axis dynamic unless asked otherwise."""
    example = torch.randn(batch_size, *input_shape, device=next(model.parameters()).device)
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    # the exporter reports its steps on stdout: that is not the user's output
    with contextlib.redirect_stdout(io.StringIO()):
        return torch.onnx.export(model.eval(), (example,), dynamic_shapes=shapes, verbose=False)


def onnx_model(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """The serialised ModelProto of an fp32, contiguous CPU copy of `model`, batch dynamic."""
    model = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    return exported(model, input_shape).model_proto.SerializeToString()


@dataclass
class Deployed:
    """One model in ONNX Runtime: its session, the provider it runs on, its ONNX bytes and the
    name of its input (looked up once, not in every timed call)."""
    session: object
    provider: str
    onnx: bytes = b""
    input_name: str = ""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def host(x: torch.Tensor) -> np.ndarray:
    """A batch as ONNX Runtime takes it: fp32, contiguous, on the host."""
    return x.float().cpu().contiguous().numpy()


def deployed(model: nn.Module, input_shape: Sequence[int], hw: Hardware) -> Deployed:
    """`model` exported and loaded in an ONNX Runtime session on the device's best provider."""
    return session_of(onnx_model(model, input_shape), hw)


def session_of(onnx: bytes, hw: Hardware) -> Deployed:
    """An ONNX model loaded in an ONNX Runtime session on the device's best provider."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # torch's threads: a fair match
    options.log_severity_level = 3  # errors only
    # idle threads sleep: two sessions timed in turn would otherwise spin against each other
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    providers = [p for p in GPU_PROVIDERS if p in available] if hw.is_cuda else []
    providers.append("CPUExecutionProvider")
    session = ort.InferenceSession(onnx, options, providers=providers)
    return Deployed(session, session.get_providers()[0], onnx, session.get_inputs()[0].name)


def int8(call: Deployed, calibration: List[np.ndarray], hw: Hardware) -> Deployed:
    """The model of `call` quantized to int8 by ONNX Runtime's static quantization: QDQ format,
    weights per channel, activation ranges calibrated (min-max) on the `calibration` batches."""
    onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = call.input_name

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {name: x}

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(call.onnx)
        quantize_static(src, dst, Batches(), per_channel=True)
        return session_of(dst.read_bytes(), hw)


def calibration_batches(loader, images: int) -> List[np.ndarray]:
    """The first `images` images `loader` yields, as fp32 numpy batches (int8 calibration)."""
    out, seen = [], 0
    for x, _ in loader:
        x = host(x[:images - seen])
        out.append(x)
        seen += len(x)
        if seen >= images:
            break
    return out


def _timed(call: Deployed, x: np.ndarray) -> float:
    """Milliseconds of one ONNX Runtime forward (its run returns when the outputs are on the
    host)."""
    t0 = time.perf_counter()
    call(x)
    return (time.perf_counter() - t0) * 1e3


def measure_runtime_latencies(calls: Sequence[Deployed], input_shape, batch_sizes: List[int],
                              warmup: int, repeats: int, max_seconds: Optional[float] = None,
                              on_cpu: bool = True) -> List[Dict[int, Dict[str, float]]]:
    """Per model, {batch size: latency_stats} in ONNX Runtime, by hardware.measure_latencies'
    protocol: the same random input, warm-up, alternating rounds within the time budget."""
    results: List[Dict[int, Dict[str, float]]] = [{} for _ in calls]
    budget = None if max_seconds is None else max_seconds / len(batch_sizes)
    plain = [contextlib.nullcontext for _ in calls]
    for bs in batch_sizes:
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(bs, *input_shape, generator=gen).numpy()
        for call in calls:
            for _ in range(warmup):
                call(x)
        timed = [lambda c=c: _timed(c, x) for c in calls]
        for i, stats in enumerate(side_by_side(timed, plain, repeats, budget, started, on_cpu,
                                               bs)):
            results[i][bs] = stats
    return results


@torch.inference_mode()
def agreement(model: nn.Module, call: Deployed, loader, images: int,
              hw: Hardware) -> Dict[str, float]:
    """How the ONNX Runtime model answers against PyTorch's on the first `images` test images
    (0: all): the largest absolute logit difference, the share of images whose top-1 class
    agrees, and its own top-1 (%) where the loader has labels; PyTorch in the latency
    precision's autocast."""
    was = model.training
    model.eval()
    worst, same, right, seen = 0.0, 0, 0, 0
    for x, y in loader:
        if images:
            x, y = x[:images - seen], (None if y is None else y[:images - seen])
        with hw.autocast(timing=True):
            ref = model(x).float().cpu()
        out = torch.from_numpy(call(host(x)))
        worst = max(worst, (out - ref).abs().max().item())
        same += int((out.argmax(1) == ref.argmax(1)).sum())
        right += 0 if y is None else int((out.argmax(1) == y.cpu()).sum())
        seen += len(x)
        if images and seen >= images:
            break
    model.train(was)
    return {"max_abs_diff": worst, "top1_agreement": same / max(seen, 1),
            "top1": 100.0 * right / max(seen, 1), "images": seen}

