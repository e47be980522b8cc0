"""The hardware targets and the latency protocol, and what a run reports about real speed."""
import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.config import ConfigError
from prunekit.hardware import Hardware, is_2of4, measure_latency
from prunekit.runner import run
from prunekit.sparsity.units import nm_mask

from conftest import FAST, make_cfg

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
        assert s[f"measured_speedup_bs{bs}"] == pytest.approx(
            s[f"latency_ms_dense_bs{bs}"] / s[f"latency_ms_bs{bs}"])
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
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    n_weights = sum(int(torch.tensor(list(init.dims)).prod()) for init in graph.graph.initializer)
    assert s["params"] <= n_weights < s["params_dense"]  # the pruned size, not the dense one


def test_load_pruned_refuses_a_foreign_file(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="not a prunekit model.pt"):
        prunekit.load_pruned(tmp_path / "x.pt")
