"""Latency where models are deployed (ONNX Runtime) and the precision a CPU trains in."""
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_console import SUMMARY, text
from test_measurement import COUNTED, fake_timings, stats

import prunekit.hardware as hardware
import prunekit.measurement as measurement
from conftest import FAST, make_cfg, read_summary
from prunekit.config import validate
from prunekit.console import summary_table
from prunekit.deploy import Deployed, agreement, deployed, measure_runtime_latencies
from prunekit.errors import ConfigError
from prunekit.hardware import Hardware, setup_hardware, training_precision
from prunekit.measurement import latency
from prunekit.runner import run
from prunekit.settings import config_hash

CPU = Hardware("cpu", torch.device("cpu"), None, False)
LENET = ["model=lenet5", "dataset.subset=0.4", *FAST]
ORT = "hardware.latency.runtimes=[torch,onnxruntime]"
ORT_INT8 = "hardware.latency.runtimes=[torch,onnxruntime,onnxruntime_int8]"


def test_a_run_is_timed_in_onnx_runtime_beside_torch_and_answers_alike(tmp_path):
    """Both models exported, timed at every batch size in ONNX Runtime, and their outputs
    checked against torch's on the test images."""
    cfg = make_cfg(["method=oneshot", *LENET, "method.granularity=filter", "sparsity=0.6",
                    ORT_INT8, "hardware.latency.check_images=50", "hardware.latency.repeats=5",
                    "hardware.latency.calibration_images=64", "pretrain.epochs=10"])
    run(cfg, tmp_path, show=False)
    s = read_summary(tmp_path)
    for bs in (1, 8):  # int8: timed too, and nearly the fp32 model's answers
        assert s[f"latency_onnxruntime_int8_ms_bs{bs}"] > 0
        assert s[f"latency_onnxruntime_int8_ms_dense_bs{bs}"] > 0
    for side in ("", "_dense"):
        # lenet5 at ~40 % top-1 has small logit margins: int8 rounding flips some
        assert s[f"onnxruntime_int8_top1_agreement{side}"] >= 0.6
        assert abs(s[f"onnxruntime_int8_top1{side}"] - s[f"onnxruntime_top1{side}"]) <= 10
    assert s["status"] == "ok" and s["speedup_kind"] == "compacted"
    for bs in (1, 8):  # FAST's batch sizes
        assert s[f"latency_onnxruntime_ms_bs{bs}"] > 0
        assert s[f"latency_onnxruntime_ms_dense_bs{bs}"] > 0
        assert s[f"latency_ms_bs{bs}"] > 0  # torch's keys as before
        assert f"measured_speedup_onnxruntime_bs{bs}" in s
    assert s["onnxruntime_provider"] == "CPUExecutionProvider"
    assert s["onnxruntime_check_images"] == 50
    assert s["onnxruntime_top1_agreement"] == s["onnxruntime_top1_agreement_dense"] == 1.0
    assert s["onnxruntime_max_abs_diff"] < 1e-4 and s["latency_precision"] == "fp32"
    table = text(summary_table(s))
    assert "latency onnxruntime (ms, batch 8, fp32)" in table
    assert "onnxruntime = torch (top-1 of 50 images)" in table
    assert "latency onnxruntime (ms, batch 8, int8)" in table
    assert "top-1 int8 (50 test images, %)" in table


def test_int8_quantizes_every_conv_and_keeps_the_answers():
    """ONNX Runtime's static quantization of an exported model: QDQ nodes around the
    convolutions, ranges calibrated on the given batches, outputs near the fp32 model's."""
    import onnx

    from prunekit.deploy import int8
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    fp32 = deployed(model, (3, 8, 8), CPU)
    x = torch.randn(16, 3, 8, 8)
    q = int8(fp32, [x[:8].numpy(), x[8:].numpy()], CPU)
    ops = [n.op_type for n in onnx.load_from_string(q.onnx).graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "Conv" in ops
    out, ref = q(x.numpy()), model(x).detach().numpy()
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() < 0.1 * scale  # int8: close, not equal
    assert np.abs(out - ref).max() > 0


def test_onnx_runtime_alone_keeps_torchs_keys_out_of_a_default_run(tmp_path):
    run(make_cfg(["method=oneshot", *LENET, "method.granularity=filter",
                  "hardware.latency.repeats=3"]), tmp_path, show=False)
    s = read_summary(tmp_path)
    assert not [k for k in s if "onnxruntime" in k]


class Recorded:
    """A deployed model that records its calls."""
    def __init__(self, name, order):
        self.name, self.order = name, order

    def __call__(self, x):
        self.order.append((self.name, x.shape[0]))
        return x


def test_onnx_runtime_timing_follows_the_latency_protocol():
    order = []
    a, b = Recorded("a", order), Recorded("b", order)
    res = measure_runtime_latencies([a, b], (3, 4, 4), [2], warmup=1, repeats=4)
    names = [n for n, _ in order]
    assert names == ["a", "b"] + ["a", "b", "b", "a"] * 2  # warm-up, then A B, B A, ...
    assert res[0][2]["repeats"] == res[1][2]["repeats"] == 4
    assert res[0][2]["median_ms"] <= res[0][2]["p95_ms"]


def test_agreement_counts_top1_and_the_largest_difference():
    """Against a runtime that shifts one image's logits: the difference is that shift, and
    that image alone disagrees; `images` caps what is read."""
    model = nn.Linear(4, 3).eval()
    x = torch.randn(10, 4)
    with torch.no_grad():
        ref = model(x)
    flip = int(ref[0].argmin())

    class Shifted:
        def __call__(self, xs):
            out = model(torch.from_numpy(xs)).detach().numpy().copy()
            if np.allclose(xs[0], x[0].numpy()):
                out[0, flip] += 100.0
            return out
    loader = [(x[:4], None), (x[4:], None)]
    got = agreement(model, Shifted(), loader, 0, CPU)
    assert got["images"] == 10 and got["top1_agreement"] == pytest.approx(0.9)
    assert got["max_abs_diff"] == pytest.approx(100.0, rel=1e-4)
    assert agreement(model, Shifted(), loader, 6, CPU)["images"] == 6


def test_an_exported_model_runs_the_same_in_onnx_runtime():
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
                          nn.Linear(5 * 6 * 6, 4)).eval()
    call = deployed(model, (3, 8, 8), CPU)
    assert isinstance(call, Deployed) and call.provider == "CPUExecutionProvider"
    for bs in (1, 7):  # one export serves every batch size
        x = torch.randn(bs, 3, 8, 8)
        assert np.abs(call(x.numpy()) - model(x).detach().numpy()).max() < 1e-5


def ort_timings(table, calls):
    def fake(fakes, shape, batch_sizes, warmup, repeats, max_seconds=None, on_cpu=True):
        calls.append(list(batch_sizes))
        return [{bs: stats(table[bs][side], bs) for bs in batch_sizes} for side in (0, 1)]
    return fake


def test_a_model_slower_in_onnx_runtime_is_said_so(monkeypatch):
    """The issue's measurement: faster in torch, 0.74x in ONNX Runtime at batch 64."""
    monkeypatch.setattr(measurement, "measure_latencies", fake_timings(
        eager={1: (1.39, 1.22), 64: (8.0, 7.0)}, graphed={}, calls=[]))
    monkeypatch.setattr(measurement, "deployed", lambda m, shape, hw: Deployed(None, "CPU"))
    monkeypatch.setattr(measurement, "measure_runtime_latencies", ort_timings(
        {1: (0.14, 0.128), 64: (1.0, 1.35)}, []))
    cfg = make_cfg([ORT])
    cfg.hardware.latency.batch_sizes = [1, 64]
    out = latency(cfg.hardware.latency, nn.Identity(), nn.Identity(), CPU, (1, 8, 8), COUNTED)
    assert out["measured_speedup_onnxruntime_bs64"] == pytest.approx(1.0 / 1.35)
    assert out["measured_speedup_bs64"] == pytest.approx(8.0 / 7.0)
    assert out["latency_slower"] == ("the pruned model is slower than the dense one "
                                     "(onnxruntime batch 64: 1.350 ms vs dense 1.000 ms (0.74x))")
    row = next(r for r in text(summary_table({**SUMMARY, **out})).splitlines()
               if "latency onnxruntime (ms, batch 64" in r)
    assert "slower" in row


def test_a_model_onnx_cannot_take_is_timed_in_torch_with_the_reason(monkeypatch):
    monkeypatch.setattr(measurement, "measure_latencies", fake_timings(
        eager={1: (2.0, 1.0)}, graphed={}, calls=[]))

    def refuses(m, shape, hw):
        raise ValueError("Unsupported operator aten::weird\nmore")
    monkeypatch.setattr(measurement, "deployed", refuses)
    cfg = make_cfg([ORT])
    cfg.hardware.latency.batch_sizes = [1]
    out = latency(cfg.hardware.latency, nn.Identity(), nn.Identity(), CPU, (1, 8, 8), COUNTED)
    assert out["measured_speedup"] == 2.0
    assert out["latency_onnxruntime_error"] == "Unsupported operator aten::weird"
    assert "latency_onnxruntime_ms_bs1" not in out


@pytest.mark.parametrize("runtimes, message", [
    ("[torch,onnxrt]", "onnxrt is not one of torch, onnxruntime, onnxruntime_int8 (did you "
                       "mean `onnxruntime`?)"),
    ("[onnxruntime]", "must include torch"),
])
def test_bad_runtimes_are_one_line(runtimes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        validate(make_cfg([f"hardware.latency.runtimes={runtimes}"]))


def test_a_missing_deploy_extra_is_one_line_naming_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    validate(make_cfg([]))  # not asked for: nothing to install
    with pytest.raises(ConfigError, match=r'needs onnxruntime: pip install "prunekit\[deploy\]"'):
        validate(make_cfg([ORT]))


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("units", [True, False])
def test_auto_precision_follows_the_cpus_bf16_units(monkeypatch, units):
    """bf16 autocast with channels_last where the CPU multiplies bf16 in hardware, fp32
    elsewhere; hardware.precision=fp32 forces fp32; latency stays fp32 on the CPU."""
    monkeypatch.delenv("PRUNEKIT_PRECISION")  # the suite's pin (conftest): the default here
    monkeypatch.setattr(hardware, "bf16_matrix_units", lambda: units)
    for group in ("cpu", "auto"):
        p = training_precision(make_cfg([f"hardware={group}", "hardware.device=cpu"]).hardware)
        assert (p.name, p.channels_last) == (("bf16", True) if units else ("fp32", False))
    forced = training_precision(make_cfg(["hardware=cpu", "hardware.precision=fp32"]).hardware)
    assert (forced.name, forced.channels_last) == ("fp32", False)
    no_cl = make_cfg(["hardware=cpu", "hardware.channels_last=false"]).hardware
    assert training_precision(no_cl).channels_last is False
    hw = setup_hardware(make_cfg(["hardware=cpu"]).hardware)
    assert hw.amp_dtype == (torch.bfloat16 if units else None)
    assert hw.latency_dtype is None and hw.latency_precision == "fp32"
    line = hw.describe()
    assert ("bf16 autocast (this CPU has bf16 matrix units" in line) is units
    assert ("fp32 (this CPU has no bf16 matrix units" in line) is not units
    assert line.endswith("latency in fp32")
    asked = setup_hardware(make_cfg(["hardware=cpu", "hardware.latency.precision=bf16"]).hardware)
    assert asked.latency_dtype == torch.bfloat16


def test_a_bf16_run_trains_in_bf16_and_times_latency_in_fp32(tmp_path, monkeypatch):
    """Training and evaluation under bf16 autocast, latency in fp32 (what a CPU deployment
    runs), and the summary says which."""
    monkeypatch.delenv("PRUNEKIT_PRECISION")
    monkeypatch.setattr(hardware, "bf16_matrix_units", lambda: True)
    seen = set()
    autocast = hardware.Hardware.autocast

    def spy(self, cache=True, timing=False):
        seen.add(("latency" if timing else "training",
                  self.latency_precision if timing else hardware.PRECISION_NAMES[self.amp_dtype]))
        return autocast(self, cache, timing)
    monkeypatch.setattr(hardware.Hardware, "autocast", spy)
    cfg = make_cfg(["method=oneshot", *LENET, "method.granularity=filter", "pretrain.epochs=10",
                    "hardware=cpu", "hardware.latency.repeats=3", "pretrain.cache=false"])
    run(cfg, tmp_path, show=False)
    s = read_summary(tmp_path)
    assert seen == {("training", "bf16"), ("latency", "fp32")}
    assert s["status"] == "ok" and s["latency_precision"] == "fp32"
    assert s["top1_dense"] > 25  # bf16 trains (fp32: 41.8% after these 10 epochs, chance 10%)


def test_a_checkpoint_of_one_precision_is_not_continued_in_another():
    cfg = make_cfg(["hardware=cpu"])
    machine = lambda p: config_hash(cfg, {"hardware.precision": p})  # noqa: E731
    assert machine("bf16") != machine("fp32")
    assert config_hash(cfg) == config_hash(make_cfg(["hardware=cpu"]))


def test_prunekit_precision_sets_the_default_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.setattr(hardware, "bf16_matrix_units", lambda: True)
    monkeypatch.setenv("PRUNEKIT_PRECISION", "fp32")
    assert training_precision(make_cfg(["hardware=cpu"]).hardware).name == "fp32"
    assert training_precision(make_cfg(["hardware=cuda", "hardware.device=cpu"]).hardware
                              ).name == "bf16"  # a target's own precision wins
    monkeypatch.setenv("PRUNEKIT_PRECISION", "fp64")
    with pytest.raises(ConfigError, match="hardware.precision=fp64 is not one of auto, fp32, "
                                          "bf16, fp16 .its default comes from PRUNEKIT_PRECISION"):
        validate(make_cfg(["hardware=cpu"]))
