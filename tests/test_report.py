"""prune-report and the sweep report: aggregation, failed runs, plots, launchers."""
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST, read_summary, run_cli
from prunekit.report import report

TINY = ["model=lenet5", "dataset.subset=0.4", *FAST]


def write_summary(path: Path, **fields):
    base = {"status": "ok", "dataset": "digits", "model": "lenet5", "method": "oneshot",
            "target_sparsity": 0.5, "seed": 0, "top1": 90.0, "delta_top1": -1.0,
            "sparsity": 0.5, "params": 100, "params_nonzero": 50, "compression_ratio": 2.0,
            "theoretical_speedup": 1.8, "measured_speedup": None, "time_total_s": 10.0,
            "time_search_s": 0.0, "time_prune_s": 1.0, "time_finetune_s": 8.0, "time_eval_s": 1.0,
            "hparams": {"lr": 0.01}, "error": None}
    base.update(fields)
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(base))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_means_stds_baseline_ratio_failures_and_plots(tmp_path):
    top1 = {"oneshot": [90.0, 92.0, 94.0], "iterative": [95.0, 96.0, 97.0]}
    times = {"oneshot": [10.0, 12.0, 14.0], "iterative": [20.0, 24.0, 28.0]}
    for method in top1:
        for seed in range(3):
            write_summary(tmp_path / "sweep" / f"{method}{seed}", method=method, seed=seed,
                          top1=top1[method][seed], time_total_s=times[method][seed])
    write_summary(tmp_path / "sweep" / "bad", status="failed", method="ice", error="boom: bad lr")
    got = report([tmp_path / "sweep"], show=False)
    rows = {r["method"]: r for r in read_csv(tmp_path / "sweep" / "report.csv")}
    assert set(rows) == {"oneshot", "iterative"}
    for method in top1:
        r = rows[method]
        assert int(r["n"]) == 3
        assert float(r["top1_mean"]) == pytest.approx(statistics.mean(top1[method]))
        assert float(r["top1_std"]) == pytest.approx(statistics.stdev(top1[method]))
    # time relative to the iterative baseline of the same (dataset, model, target)
    assert float(rows["oneshot"]["time_vs_iterative_mean"]) == pytest.approx(12.0 / 24.0)
    assert float(rows["iterative"]["time_vs_iterative_mean"]) == pytest.approx(1.0)
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert "92.00 ± 2.00" in md  # oneshot: mean ± sample std
    assert "## Failed and interrupted runs" in md and "boom: bad lr" in md
    assert len(got["failed"]) == 1
    for name in ("accuracy_vs_sparsity.png", "accuracy_vs_time.png", "time_by_phase.png",
                 "report.tex"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0, name


def test_prune_report_cli_options(tmp_path):
    for seed, sp in ((0, 0.5), (1, 0.5), (0, 0.75)):
        write_summary(tmp_path / "runs" / f"r{seed}{sp}", seed=seed, target_sparsity=sp,
                      sparsity=sp, top1=80 + seed)
    exe = Path(sys.executable).parent / "prune-report"
    out = tmp_path / "out"
    r = subprocess.run([str(exe), str(tmp_path / "runs"), "--out", str(out), "--format", "md,csv",
                        "--group-by", "method", "--metric", "top1", "--metric", "sparsity",
                        "--no-plots"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "report.md").exists() and (out / "report.csv").exists()
    assert not (out / "report.tex").exists() and not list(out.glob("*.png"))
    rows = read_csv(out / "report.csv")
    assert len(rows) == 1 and int(rows[0]["n"]) == 3  # grouped by method only
    assert set(rows[0]) == {"method", "n", "top1_mean", "top1_std", "sparsity_mean",
                            "sparsity_std"}
    bad = subprocess.run([str(exe), str(tmp_path / "nowhere")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "not a directory" in bad.stderr
    bad = subprocess.run([str(exe), str(tmp_path / "runs"), "--format", "xlsx"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--format xlsx" in bad.stderr
    bad = subprocess.run([str(exe), str(tmp_path / "runs"), "--metric", "top1x",
                          "--out", str(tmp_path / "typo")], capture_output=True, text=True,
                         timeout=120)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "Traceback" not in bad.stderr
    assert "--metric top1x is not a key" in lines[0] and "(did you mean `top1`?)" in lines[0]
    assert not (tmp_path / "typo").exists()  # no report of the method and n columns alone
    (tmp_path / "empty").mkdir()
    bad = subprocess.run([str(exe), str(tmp_path / "empty")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "no summary.json" in bad.stderr
    assert not list((tmp_path / "empty").iterdir())  # no empty report passed off as one


def test_a_2x2_multirun_reports_itself_and_prune_report_rewrites_it(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "method=gradual,oneshot", "seed=0,1", *TINY],
                cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(sweep / "report.csv")
    assert sorted(row["method"] for row in rows) == ["gradual", "oneshot"]
    assert all(int(row["n"]) == 2 for row in rows)
    top1 = {s["seed"]: s["top1"] for s in (read_summary(d) for d in sweep.iterdir()
                                           if (d / "summary.json").exists())
            if s["method"] == "gradual"}
    gradual = next(row for row in rows if row["method"] == "gradual")
    assert float(gradual["top1_mean"]) == pytest.approx(statistics.mean(top1.values()))
    for png in sweep.glob("*.png"):
        png.unlink()
    exe = Path(sys.executable).parent / "prune-report"
    r = subprocess.run([str(exe), str(sweep)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(sweep.glob("*.png"))) >= 2


def test_a_failing_job_does_not_stop_the_sweep_or_its_report(tmp_path):
    sweep = tmp_path / "sweep"
    # (a failure its loading finds: a bad value is refused before the sweep starts)
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "dataset=digits,fashion_mnist",
                 "dataset.path=/nonexistent", "method=oneshot", *TINY], cwd=tmp_path, timeout=600)
    assert r.returncode == 1  # a job failed
    md = (sweep / "report.md").read_text()
    failed = md.split("## Failed and interrupted runs")[1]
    assert "fashion_mnist" in failed and "/nonexistent" in failed
    assert len(read_csv(sweep / "report.csv")) == 1  # the digits job


@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
])
def test_launchers_run_a_tiny_sweep_sharing_one_dense_model(tmp_path, launcher):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher" if "joblib" in launcher[0]
                        else "hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", *launcher, f"hydra.sweep.dir={sweep}", "method=gradual,oneshot", *TINY],
                cwd=tmp_path, timeout=600, env={"PRUNEKIT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [read_summary(sweep / n) for n in ("0", "1")]
    assert all(s["status"] == "ok" for s in runs)
    sources = sorted(s["dense_source"].split()[0] for s in runs)
    assert sources == ["cache", "trained"]  # trained once, by whichever job got there first
    assert len(read_csv(sweep / "report.csv")) == 2


def test_hard_prune_and_retraining_accuracies_get_titles(tmp_path):
    for seed, hard in ((0, 80.0), (1, 84.0)):
        write_summary(tmp_path / "runs" / f"s{seed}", method="slr", seed=seed, top1_hard=hard,
                      top1_retrain5=hard + 10)
    report([tmp_path / "runs"], metrics=["top1_hard", "top1_retrain5"], plots=False, show=False)
    md = (tmp_path / "runs" / "report.md").read_text()
    assert "| top-1 hard prune % | top-1 +5 retrain ep. % |" in md
    assert "82.00 ± 2.83" in md and "92.00 ± 2.83" in md
