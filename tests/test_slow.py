"""Full-size end-to-end runs (minutes each): `make test-slow`, not CI.

They are the core runner's acceptance checks: the default run, every baseline on resnet18, a
multirun, and the dense cache across runs, at the shipped settings (no tiny overrides).
"""
import csv
import time
from pathlib import Path

import pytest
from test_runner import CONTRACT_KEYS

from conftest import read_summary, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # minutes each, longer on a busy machine

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_AUTOCOMPRESS = ["method=autocompress", "model=resnet20", "dataset=fashion_mnist",
                        "dataset.image_size=16", "pretrain.epochs=5", "sparsity=0.93",
                        "method.rounds=2", "method.iterations=1", "method.finetune_epochs=1",
                        "hardware=cpu", "hardware.latency.enabled=false"]
FASHION_DROP = 6.0  # measured: see the test's docstring


def test_default_run_then_cached_rerun(tmp_path):
    started = time.perf_counter()
    r = run_cli([f"hydra.run.dir={tmp_path / 'a'}"], cwd=tmp_path, timeout=600)
    first_wall = time.perf_counter() - started
    assert r.returncode == 0, r.stderr[-2000:]
    a = read_summary(tmp_path / "a")
    assert a["status"] == "ok" and all(k in a for k in CONTRACT_KEYS)
    assert a["top1_dense"] > 90 and a["top1"] > a["top1_dense"] - 3
    assert a["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert first_wall < 150, f"default run took {first_wall:.0f} s"
    r = run_cli([f"hydra.run.dir={tmp_path / 'b'}"], cwd=tmp_path, timeout=600)
    b = read_summary(tmp_path / "b")
    assert b["dense_source"].startswith("cache") and b["time_pretrain_s"] == 0.0
    assert b["top1_dense"] == a["top1_dense"] and b["top1"] == a["top1"]


@pytest.mark.parametrize("method", ["gradual", "iterative", "oneshot"])
def test_baselines_on_resnet18(tmp_path, method):
    r = run_cli([f"hydra.run.dir={tmp_path}", f"method={method}", "model=resnet18"], cwd=tmp_path,
                timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    s = read_summary(tmp_path)
    assert s["status"] == "ok" and s["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert s["top1"] > s["top1_dense"] - 5


def test_multirun_of_two_methods_and_two_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "method=gradual,oneshot", "seed=0,1"],
                cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [read_summary(job) for job in sweep.iterdir() if (job / "summary.json").exists()]
    assert sorted((s["method"], s["seed"]) for s in runs) == [
        ("gradual", 0), ("gradual", 1), ("oneshot", 0), ("oneshot", 1)]
    assert all(s["status"] == "ok" for s in runs)
    # one dense model per seed, shared by both methods
    for seed in (0, 1):
        assert len({s["top1_dense"] for s in runs if s["seed"] == seed}) == 1


def test_ice_against_iterative_sweep(tmp_path):
    """Issue 3's sweep at the shipped settings. What holds on digits is asserted; the time ratio
    is measured and reported (docs/benchmarks.md), not asserted: on this 8-block network every
    block costs more than the threshold, so ICE cannot skip fine-tunes (see the README)."""
    r = run_cli(["-m", "method=ice,iterative", "model=resnet18", "dataset=digits", "sparsity=0.5",
                 f"hydra.sweep.dir={tmp_path}"], cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    ice, it = read_summary(tmp_path / "0"), read_summary(tmp_path / "1")
    assert ice["method"] == "ice" and it["method"] == "iterative"
    assert it["dense_source"].startswith("cache")  # the same dense model
    assert ice["top1_dense"] == it["top1_dense"]
    assert ice["compacted"] and ice["params"] < 0.6 * ice["params_dense"]
    assert ice["compaction_max_abs_diff"] < 1e-3
    assert ice["autotune_trials"] == 6 and ice["time_search_s"] > 0
    assert abs(ice["top1"] - it["top1"]) <= 1.5


def search_at_chance(run_dir, num_classes: int = 10) -> float:
    """The fraction of AutoCompress's quick evaluations at or near chance (within 2.5 points)."""
    with open(run_dir / "steps.csv") as f:
        trials = [float(r["val_top1"]) for r in csv.DictReader(f) if r["event"] == "trial"]
    return sum(v <= 100.0 / num_classes + 2.5 for v in trials) / len(trials)


def test_autocompress_on_resnet18_digits(tmp_path):
    """Issue 4's done-when (at least 4x fewer parameters, physically smaller) and issue 31's
    figure: test top-1 >= 97.3 (98.33 on 2026-11-22, 91.92 when its search scored at chance),
    fewer than a quarter of the search's evaluations at chance, purification firing."""
    r = run_cli([f"hydra.run.dir={tmp_path}", "method=autocompress", "model=resnet18",
                 "dataset=digits", "sparsity=0.8"], cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    s = read_summary(tmp_path)
    assert s["compression_ratio"] >= 4.0
    assert s["compacted"] and s["params"] < s["params_dense"] / 2
    assert s["compaction_max_abs_diff"] < 1e-3
    assert s["top1"] >= 97.3 and s["top1"] >= s["top1_dense"] - 3
    assert s["sparsity"] >= 0.8 - 1e-3 and s["time_search_s"] > 0
    assert search_at_chance(tmp_path) < 0.25
    assert s["purified_channels"] > 0


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST is not installed "
                    "(apt-get install dataset-fashion-mnist)")
def test_autocompress_on_resnet20_fashion_mnist(tmp_path):
    """Issue 31's Fashion-MNIST figure, where a point of val top-1 is 60 images: AutoCompress at
    0.93 (>= 10x fewer parameters) on resnet20 at 16x16 after 5 dense epochs, its search off
    chance. Measured 2026-12-04: 84.58 % against 89.35 % dense (-4.77) at 15.8x, no evaluation
    of 80 at chance; FASHION_DROP leaves 1.2 points (120 test images) of margin."""
    r = run_cli([f"hydra.run.dir={tmp_path}", *FASHION_AUTOCOMPRESS], cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    s = read_summary(tmp_path)
    assert s["compression_ratio"] >= 10.0
    assert s["top1"] >= s["top1_dense"] - FASHION_DROP
    assert search_at_chance(tmp_path) < 0.25


def test_admm_lands_exactly_on_the_target(tmp_path):
    r = run_cli([f"hydra.run.dir={tmp_path}", "method=admm", "model=resnet18", "dataset=digits",
                 "sparsity=0.9"], cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    s = read_summary(tmp_path)
    assert s["sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert 0 <= s["top1_hard"] <= 100


def test_filter_pruned_resnet18_is_compacted_measured_and_loadable(tmp_path):
    """Issue 6's done-when run. Speed is measured and reported (docs/benchmarks.md), not
    asserted: timings belong to scripts/, not to tests."""
    import prunekit

    r = run_cli([f"hydra.run.dir={tmp_path}", "method=oneshot", "method.granularity=filter",
                 "sparsity=0.5", "model=resnet18", "dataset=digits", "hardware=cpu"], cwd=tmp_path,
                timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    s = read_summary(tmp_path)
    assert s["speedup_kind"] == "compacted" and s["compaction_max_abs_diff"] <= 1e-3
    assert s["measured_speedup_bs64"] is not None and s["theoretical_speedup"] > 1.5
    model = prunekit.load_pruned(tmp_path / "model.pt")
    assert sum(p.numel() for p in model.parameters()) == s["params"] < s["params_dense"]


def test_slr_hard_prune_is_not_below_admm(tmp_path):
    """Issue 5's done-when: both at 0.9 ± 0.002 with top1_hard, SLR's no more than 2 points below
    ADMM's (the paper says higher; docs/benchmarks.md has what was measured)."""
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "method=slr,admm", "model=resnet18",
                 "dataset=digits", "sparsity=0.9", "method.retrain_epochs=0"], cwd=tmp_path,
                timeout=1700)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {s["method"]: s for s in map(read_summary, sorted(sweep.glob("[0-9]*")))}
    for s in got.values():
        assert s["status"] == "ok" and s["sparsity"] == pytest.approx(0.9, abs=0.002)
        assert 0 <= s["top1_hard"] <= 100 and s["top1"] == s["top1_hard"]  # no retraining
    assert got["slr"]["top1_hard"] >= got["admm"]["top1_hard"] - 2


def test_latency_under_load_is_reported_unreliable_and_alone_believed(tmp_path):
    """Issue 15's done-when: alone, the filter-pruned resnet18's speedup is reported; beside
    CPU-bound processes its latency is flagged unreliable, with no speedup claimed."""
    import subprocess
    import sys

    args = ["method=oneshot", "method.granularity=filter", "train.progress=false"]
    r = run_cli([f"hydra.run.dir={tmp_path / 'alone'}", *args], cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    alone = read_summary(tmp_path / "alone")
    assert alone["latency_reliable"] is True
    assert 1.0 < alone["measured_speedup"] <= 1.25 * alone["theoretical_speedup"]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:  # the same run again (the dense model is cached now)
        r = run_cli([f"hydra.run.dir={tmp_path / 'loaded'}", *args], cwd=tmp_path, timeout=1200)
    finally:
        for p in busy:
            p.kill()
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = read_summary(tmp_path / "loaded")
    assert loaded["latency_reliable"] is False and loaded["measured_speedup"] is None
    assert all(loaded[f"measured_speedup_bs{bs}"] is None for bs in (1, 64))  # every batch size
    assert "busy machine" in r.stdout
