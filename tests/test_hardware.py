"""The hardware targets and the latency protocol, and what a run reports about real speed."""
import os
import time

import pytest
import torch
import torch.nn as nn

import prunekit
import prunekit.hardware as hardware
from conftest import FAST, make_cfg, read_summary
from prunekit.errors import ConfigError
from prunekit.hardware import Hardware, is_2of4, latency_doubts, measure_latencies, measure_latency
from prunekit.runner import run
from prunekit.sparsity.units import nm_mask

CPU = Hardware("cpu", torch.device("cpu"), None, False)
LENET = ["model=lenet5", "dataset.subset=0.4", *FAST]


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.conv(x)


def test_latency_protocol_honours_warmup_and_repeats():
    m = Counting()
    res = measure_latency(m, (3, 16, 16), CPU, batch_sizes=[1, 4], warmup=2, repeats=5)
    assert m.calls == [1] * 7 + [4] * 7  # warm-up then timed forwards, per batch size
    for bs in (1, 4):
        r = res[bs]
        assert r["repeats"] == 5 and r["median_ms"] <= r["p95_ms"]
        assert r["throughput"] == pytest.approx(bs / (r["median_ms"] / 1e3))
    assert m.training  # the model's mode is restored


def test_dense_and_pruned_are_timed_in_alternating_rounds():
    a, b = Counting(), Counting()
    order = []
    a.register_forward_hook(lambda *_: order.append("a"))
    b.register_forward_hook(lambda *_: order.append("b"))
    res = measure_latencies([a, b], (3, 8, 8), CPU, batch_sizes=[2], warmup=1, repeats=4)
    assert order == ["a", "b"] + ["a", "b", "b", "a"] * 2  # warm-up, then A B, B A, ...
    assert res[0][2]["repeats"] == res[1][2]["repeats"] == 4
    assert res[0][2]["spread"] == pytest.approx(res[0][2]["p95_ms"] / res[0][2]["median_ms"])


def test_the_time_budget_bounds_the_rounds(monkeypatch):
    monkeypatch.setattr(hardware, "_timed_call", lambda run, x, hw: (time.sleep(0.02), 20.0)[1])
    started = time.perf_counter()
    res = measure_latency(Counting(), (3, 8, 8), CPU, batch_sizes=[1, 4], warmup=0,
                          repeats=1000, max_seconds=0.2)
    assert time.perf_counter() - started < 2.0
    assert all(hardware.MIN_ROUNDS <= res[bs]["repeats"] <= 10 for bs in (1, 4))
    tiny = measure_latency(Counting(), (3, 8, 8), CPU, [1], warmup=0, repeats=50,
                           max_seconds=1e-6)
    assert tiny[1]["repeats"] == hardware.MIN_ROUNDS  # never fewer, however small the budget


def stats(median, p95, cpu_wait=0.01):
    return {"median_ms": median, "p95_ms": p95, "spread": p95 / median, "cpu_wait": cpu_wait}


@pytest.mark.parametrize("dense, pruned, flops, real, doubts", [
    (stats(9, 10), stats(5, 5.5), 2.0, True, []),  # quiet, 1.8x for 2x FLOPs: believed
    (stats(9, 10), stats(5, 5.5), 2.0, False, []),  # masked: spreads checked, no speedup anyway
    (stats(26, 329), stats(8, 9), 2.0, True, ["dense p95/median 12.65× > 1.5×",
                                              "measured 3.25× > 1.25 × the FLOPs ratio 2.00×"]),
    (stats(9, 10), stats(8, 800), 2.0, True, ["pruned p95/median 100.00× > 1.5×"]),
    (stats(30, 31), stats(1, 1.1), 1.97, True, ["measured 30.00× > 1.25 × the FLOPs ratio 1.97×"]),
    (stats(30, 31), stats(1, 1.1), 1.97, False, []),  # not a claimed speedup: nothing to doubt
    # evenly slow: tight spreads, a plausible ratio, but the cores were busy with other work
    (stats(1260, 1272, 0.39), stats(1192, 1212, 0.39), 1.78, True,
     ["it waited for a CPU core 39% of the time (> 10%)"]),
    (stats(9, 10, None), stats(5, 5.5, None), 2.0, True, []),  # a GPU, or no schedstat
])
def test_latency_doubts(dense, pruned, flops, real, doubts):
    assert latency_doubts(dense, pruned, flops, real, 1.5, 1.25, 0.1) == doubts


def test_a_process_beside_the_measurement_shows_as_waiting_for_a_core():
    """What makes an evenly slowed measurement visible: the time the threads wait for a core."""
    import subprocess
    import sys

    if hardware.run_delay_s() is None:
        pytest.skip("the kernel gives no schedstat here")
    m = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    alone = measure_latency(m, (3, 32, 32), CPU, [16], warmup=2, repeats=15)[16]["cpu_wait"]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(len(os.sched_getaffinity(0)))]
    try:
        time.sleep(0.3)
        loaded = measure_latency(m, (3, 32, 32), CPU, [16], warmup=2, repeats=15)[16]["cpu_wait"]
    finally:
        for p in busy:
            p.kill()
    assert 0.0 <= alone < loaded and loaded > 0.1


def test_a_busy_machine_gets_no_speedup_claimed(tmp_path, monkeypatch, capsys, caplog):
    """The issue's figures: every fourth forward stalls (another process holds the cores); the
    run says the latency is unreliable, why, and claims no speedup, in summary.json and table."""
    calls = {"n": 0}

    def stalling(run, x, hw):
        calls["n"] += 1
        return 300.0 if calls["n"] % 4 == 0 else 9.0

    monkeypatch.setattr(hardware, "_timed_call", stalling)
    s = run(make_cfg(["method=oneshot", "method.granularity=filter", *LENET,
                      "hardware.latency.repeats=8"]), tmp_path, show=True)
    assert s["speedup_kind"] == "compacted" and s["latency_reliable"] is False
    assert s["measured_speedup"] is None and s["measured_speedup_bs8"] is None
    assert "p95/median" in s["latency_warning"] and read_summary(tmp_path) == s
    out = capsys.readouterr().out
    assert "unreliable (busy machine)" in out and out.count("no speedup claimed") == 1
    # said once on the console (the table); the log file's copy goes to the file-only logger
    said = [r for r in caplog.records if "no speedup claimed" in r.getMessage()]
    assert [r.name for r in said] == ["prunekit.trace"]


def test_latency_grows_with_batch_size():
    m = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    res = measure_latency(m, (3, 32, 32), CPU, batch_sizes=[1, 8, 32], warmup=2, repeats=7)
    assert res[1]["median_ms"] < res[8]["median_ms"] < res[32]["median_ms"]


def test_2of4_pattern_check():
    w = torch.randn(8, 16)
    assert not is_2of4(w)
    assert is_2of4(w * nm_mask(w, 2, 4))
    assert not is_2of4(torch.randn(8, 6))  # rows not a multiple of 4


@pytest.mark.parametrize("overrides, message", [
    (["hardware=cuda_2of4"], "hardware=cuda_2of4 needs a CUDA device"),
    (["hardware=mps"], "hardware=mps needs an Apple-silicon GPU"),
    (["hardware.sparse_2of4=true"], "hardware.sparse_2of4 needs hardware.precision"),
])
def test_targets_this_machine_lacks_are_one_line_errors(tmp_path, overrides, message):
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has the accelerator")
    with pytest.raises(ConfigError, match=message):
        run(make_cfg(["method=oneshot", *overrides, *LENET]), tmp_path, show=False)


def test_filter_result_reports_measured_speedup_and_reloads(tmp_path):
    s = run(make_cfg(["method=oneshot", "method.granularity=filter", "hardware=cpu", *LENET]),
            tmp_path, show=False)
    assert s["speedup_kind"] == "compacted" and s["compacted"]
    for bs in (1, 8):
        if s[f"latency_reliable_bs{bs}"]:
            assert s[f"measured_speedup_bs{bs}"] == pytest.approx(
                s[f"latency_ms_dense_bs{bs}"] / s[f"latency_ms_bs{bs}"])
        else:  # a busy test machine: said so, and no speedup claimed
            assert s[f"measured_speedup_bs{bs}"] is None and f"batch {bs}" in s["latency_warning"]
    model = prunekit.load_pruned(tmp_path / "model.pt")
    assert isinstance(model, nn.Module) and not model.training
    assert sum(p.numel() for p in model.parameters()) == s["params"]


def test_masked_result_reports_no_measured_speedup(tmp_path):
    """Unstructured weights run the dense kernels: latency is measured and shown, a speedup is
    not claimed."""
    s = run(make_cfg(["method=oneshot", *LENET]), tmp_path, show=False)
    assert s["speedup_kind"] == "theoretical" and not s["compacted"]
    assert s["measured_speedup"] is None and s["measured_speedup_bs8"] is None
    assert s["latency_ms"] > 0 and s["theoretical_speedup"] > 1


def test_column_result_is_compacted_where_whole_input_channels_are_empty(tmp_path):
    s = run(make_cfg(["method=oneshot", "method.granularity=channel", "sparsity=0.5", *LENET]),
            tmp_path, show=False)
    assert s["compacted"] and s["params"] < s["params_dense"]
    assert s["compaction_max_abs_diff"] < 1e-4 and s["speedup_kind"] == "compacted"


def test_export_onnx_of_a_run(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    s = run(make_cfg(["method=oneshot", "method.granularity=filter", *LENET]), tmp_path / "run",
            show=False)
    out = prunekit.export_onnx(tmp_path / "run" / "model.pt", tmp_path / "model.onnx")
    assert not out.with_name(out.name + ".data").exists()  # one self-contained file
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    n_weights = sum(int(torch.tensor(list(init.dims)).prod()) for init in graph.graph.initializer)
    assert s["params"] <= n_weights < s["params_dense"]  # the pruned size, not the dense one


def test_load_pruned_refuses_a_foreign_file(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="not a prunekit model.pt"):
        prunekit.load_pruned(tmp_path / "x.pt")
