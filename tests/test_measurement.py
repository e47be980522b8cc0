"""The final latency measurement: eager everywhere, CUDA-graphed on CUDA, both reported, and a
pruned model slower than its dense one said so in either mode."""
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from test_console import SUMMARY, text

import prunekit.measurement as measurement
from conftest import make_cfg
from prunekit.console import summary_table
from prunekit.hardware import Hardware, graph_captured, measure_latencies
from prunekit.measurement import latency, latency_key, latency_modes

CPU = Hardware("cpu", torch.device("cpu"), None, False)
COUNTED = {"speedup_kind": "compacted", "theoretical_speedup": 3.6}


class CudaClaim(Hardware):
    """A Hardware that says it is CUDA: the runner's choice of modes, without a GPU."""

    @property
    def is_cuda(self) -> bool:
        return True


def stats(ms: float, bs: int) -> dict:
    return {"median_ms": ms, "p95_ms": ms * 1.1, "spread": 1.1, "throughput": bs / ms * 1e3,
            "repeats": 20, "cpu_wait": None}


def fake_timings(eager: dict, graphed: dict, calls: list):
    """measure_latencies as a GPU would answer: {mode: {bs: (dense ms, pruned ms)}}."""
    def fake(models, shape, hw, batch_sizes, warmup, repeats, max_seconds=None, **kw):
        mode = kw.get("graphed", False)
        calls.append(("graphed" if mode else "eager", list(batch_sizes)))
        table = graphed if mode else eager
        return [{bs: stats(table[bs][side], bs) for bs in batch_sizes} for side in (0, 1)]
    return fake


def cfg_with(batch_sizes):
    cfg = make_cfg(["hardware=cuda", "hardware.device=cpu"])
    cfg.hardware.latency.batch_sizes = batch_sizes
    return cfg


def lat_with(batch_sizes):
    return cfg_with(batch_sizes).hardware.latency


def test_latency_keys_of_a_mode():
    assert latency_key("latency_ms_bs64", "eager") == "latency_ms_bs64"
    assert latency_key("latency_ms_dense_bs64", "graphed") == "latency_graphed_ms_dense_bs64"
    assert latency_key("measured_speedup_bs256", "graphed") == "measured_speedup_graphed_bs256"
    assert latency_key("measured_speedup", "graphed") == "measured_speedup_graphed"
    assert latency_key("throughput_bs1", "graphed") == "throughput_graphed_bs1"


def test_cuda_times_eager_and_graphed_and_a_slower_mode_is_said_so(monkeypatch):
    """The issue's measurement: eager, the compacted model is slower at both batches (launch
    overhead); graphed, it is faster at 256. Both are reported; the slower line names the
    eager figures only; the console has a row per mode and batch."""
    calls = []
    monkeypatch.setattr(measurement, "measure_latencies", fake_timings(
        eager={1: (4.91, 6.31), 256: (4.74, 5.97)},
        graphed={1: (1.20, 1.10), 256: (3.00, 1.50)}, calls=calls))
    hw = CudaClaim("cuda", torch.device("cpu"), None, True)
    out = latency(lat_with([1, 256]), nn.Identity(), nn.Identity(), hw, (1, 28, 28), COUNTED)
    assert calls == [("eager", [1, 256]), ("graphed", [1, 256])]
    assert out["measured_speedup"] == pytest.approx(4.91 / 6.31)
    assert out["measured_speedup_graphed"] == pytest.approx(1.20 / 1.10)
    assert out["measured_speedup_graphed_bs256"] == pytest.approx(2.0)
    assert out["latency_graphed_ms_bs256"] == 1.50 and out["latency_graphed_ms_dense_bs256"] == 3.0
    assert out["latency_graphed_reliable_bs256"] is True and out["latency_graphed_error"] is None
    assert out["latency_slower"] == (
        "the pruned model is slower than the dense one (batch 1: 6.310 ms vs dense 4.910 ms "
        "(0.78x); batch 256: 5.970 ms vs dense 4.740 ms (0.79x))")
    table = text(summary_table({**SUMMARY, **out}))
    graphed_row = next(r for r in table.splitlines() if "latency graphed (ms, batch 256," in r)
    assert "3.000" in graphed_row and "1.500" in graphed_row and "slower" not in graphed_row
    eager_row = next(r for r in table.splitlines() if "latency (ms, batch 256," in r)
    assert "slower" in eager_row


def test_a_graphed_model_slower_than_dense_is_said_so_with_its_mode(monkeypatch):
    monkeypatch.setattr(measurement, "measure_latencies", fake_timings(
        eager={1: (5.0, 4.0)}, graphed={1: (1.0, 1.25)}, calls=[]))
    hw = CudaClaim("cuda", torch.device("cpu"), None, True)
    out = latency(lat_with([1]), nn.Identity(), nn.Identity(), hw, (1, 28, 28), COUNTED)
    assert out["latency_slower"] == ("the pruned model is slower than the dense one (graphed "
                                     "batch 1: 1.250 ms vs dense 1.000 ms (0.80x))")


def test_a_model_that_cannot_be_captured_is_timed_eager_with_the_reason(monkeypatch):
    eager = fake_timings(eager={1: (5.0, 2.0)}, graphed={}, calls=[])

    def capture_fails(*args, graphed=False, **kw):
        if graphed:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\n"
                               "more lines")
        return eager(*args, **kw)
    monkeypatch.setattr(measurement, "measure_latencies", capture_fails)
    hw = CudaClaim("cuda", torch.device("cpu"), None, True)
    out = latency(lat_with([1]), nn.Identity(), nn.Identity(), hw, (1, 28, 28), COUNTED)
    assert out["measured_speedup"] == 2.5 and out["measured_speedup_graphed"] is None
    assert out["latency_graphed_error"] == ("CUDA error: operation not permitted when stream is "
                                            "capturing")


def test_cpu_and_graphed_false_time_eager_only(monkeypatch):
    calls = []
    monkeypatch.setattr(measurement, "measure_latencies", fake_timings(
        eager={1: (2.0, 1.0)}, graphed={}, calls=calls))
    cfg = cfg_with([1])
    out = latency(cfg.hardware.latency, nn.Identity(), nn.Identity(), CPU, (1, 28, 28), COUNTED)
    assert calls == [("eager", [1])] and out["measured_speedup_graphed"] is None
    assert not any(k.startswith("latency_graphed_ms_bs") for k in out)
    cfg.hardware.latency.graphed = False
    assert latency_modes(cfg.hardware.latency, CudaClaim("c", torch.device("cpu"), None, 0)) == (
        "eager",)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        measure_latencies([nn.Identity()], (1, 4, 4), CPU, [1], 0, 1, graphed=True)


def test_the_cuda_target_times_batch_1_and_the_training_batch():
    cfg = make_cfg(["hardware=cuda", "dataset=fashion_mnist"])
    assert list(cfg.hardware.latency.batch_sizes) == [1, cfg.train.batch_size]
    assert cfg.hardware.latency.graphed is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_graph_replays_the_models_forward_on_cuda():
    hw = replace(CPU, name="cuda", device=torch.device("cuda"), amp_dtype=torch.bfloat16,
                 channels_last=True)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    model = hw.prepare(model).eval()
    x = torch.randn(4, 3, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    with torch.inference_mode():
        with hw.autocast(cache=False):
            eager = model(x)
        replay = graph_captured(model, x, hw, lambda: hw.autocast(cache=False), warmup=2)
        assert torch.allclose(replay(x).float(), eager.float(), atol=1e-2)
    res = measure_latencies([model], (3, 16, 16), hw, [1, 8], 2, 5, graphed=True)[0]
    assert res[8]["repeats"] == 5 and res[8]["median_ms"] > 0


def test_a_compile_mode_that_graphs_itself_is_timed_once():
    """torch.compile's reduce-overhead mode captures CUDA graphs itself: capturing it again
    would nest two captures, so its one timing is the graphed one."""
    lat = make_cfg(["hardware=cuda"]).hardware.latency
    hw = CudaClaim("cuda", torch.device("cpu"), None, True, compile=True,
                   compile_mode="reduce-overhead")
    assert hw.compiled_graphs and latency_modes(lat, hw) == ("eager",)
    assert latency_modes(lat, replace(hw, compile_mode="default")) == ("eager", "graphed")
