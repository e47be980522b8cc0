"""One run over two processes: `torchrun --nproc_per_node=2 -m prunekit.cli` on the CPU (gloo)
gives one run directory with one summary, close to the single-process run of the same settings;
ranks that would decide apart are stopped."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import prunekit
from conftest import FAST, make_cfg
from prunekit.config import METHODS
from prunekit.runner import run

# channel_multiple=1: one process against two compares the fine sparsities of each method's
# own counts (at the CPU's default 8, slimming's threshold moves resnet20's sparsity in steps
# of ~0.02, the comparison's tolerance)
LENET = ["model=lenet5", "hardware.latency.enabled=false", "checkpoint.enabled=false",
         "pretrain.cache=false", "hardware.channel_multiple=1", *FAST]
OWN_MODEL = {"slimming": ["model=resnet20", "dataset.batch_size=128", "method.finetune_epochs=3",
                          "sparsity=0.3"]}  # BatchNorm to slim (64 images per rank), settled


def torchrun(args, cwd: Path, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"  # two processes on two cores
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def overrides(method: str) -> list:
    own = OWN_MODEL.get(method, [])
    base = [o for o in LENET if not (own and o.startswith("model="))]
    return [f"method={method}", *METHODS[method].quick, *own, *base]


def only_run_dir(cwd: Path) -> Path:
    dirs = [p for p in (cwd / "outputs").glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, f"one run directory expected, found {dirs}"
    return dirs[0]


EVERY_METHOD = """
import json, sys
from hydra import compose, initialize_config_module
import prunekit
from prunekit import distributed
from prunekit.runner import run
distributed.join("auto")
for overrides, out_dir in json.loads(sys.argv[1]):
    with initialize_config_module(version_base="1.3", config_module="prunekit.conf"):
        run(compose("config", overrides=overrides), out_dir, show=False)
distributed.leave()
"""


@pytest.fixture(scope="session")  # module scope: torn down and run again when
# the worker ran another module's test between two of these (94 s each time)
def every_method_on_two_processes(tmp_path_factory):
    """One torchrun whose two processes run every method in turn (one process start, not ten:
    the CLI's own start under torchrun is the other tests'); {method: (summary, stderr)}."""
    root = tmp_path_factory.mktemp("two_processes")
    (root / "every_method.py").write_text(EVERY_METHOD)
    jobs = [(overrides(m), str(root / m)) for m in sorted(METHODS)]
    r = torchrun([str(root / "every_method.py"), json.dumps(jobs)], root, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return {m: (json.loads((root / m / "summary.json").read_text()), r.stderr)
            for m in sorted(METHODS)}


@pytest.mark.xdist_group("two_processes")  # one worker runs the fixture's torchrun once
@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_make_one_run_close_to_one_process(method, tmp_path,
                                                         every_method_on_two_processes):
    summary, stderr = every_method_on_two_processes[method]
    assert summary["status"] == "ok" and summary["method"] == method
    assert "ranks disagree" not in stderr
    single = run(make_cfg(overrides(method)), tmp_path / "single", show=False)
    assert summary["sparsity"] == pytest.approx(single["sparsity"], abs=0.02)
    assert summary["top1_dense"] == pytest.approx(single["top1_dense"], abs=3.0)
    assert summary["top1"] == pytest.approx(single["top1"], abs=5.0)


def test_a_tracked_run_of_two_processes_is_tracked_once_with_every_epoch(tmp_path):
    from test_tracking import scalars

    r = torchrun(["-m", "prunekit.cli", "method=oneshot", "logger=tensorboard", *LENET],
                 tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (run_dir / "prune-run.log").is_file() and (run_dir / "prune-run.rank1.log").is_file()
    [tracked] = (run_dir / "tensorboard").iterdir()  # rank 0 alone tracks
    assert len(list(tracked.glob("events.*"))) == 2  # its run, and its hparams
    series = scalars(tracked)
    # each epoch's val top-1 is evaluated by both ranks together (a collective) and logged once
    assert len(series["epoch/val_top1"]) == summary["finetune_epochs"] > 0
    assert len(series["dense/val_top1"]) == make_cfg(LENET).pretrain.epochs


def test_a_compacted_run_of_two_processes_loads_as_its_masked_form(tmp_path):
    r = torchrun(["-m", "prunekit.cli", "method=oneshot", "method.granularity=filter",
                  "method.finetune_epochs=1", "model=resnet20", "dataset.subset=0.3",
                  *LENET[1:]], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["compacted"] and summary["compaction_max_abs_diff"] < 1e-4
    model = prunekit.load_pruned(run_dir / "model.pt")
    assert sum(p.numel() for p in model.parameters()) == summary["params"] < \
        summary["params_dense"]


@pytest.mark.parametrize("value", [1.1, 1000])  # 1.1x: reachable beside a busy worker
def test_a_latency_target_is_solved_by_rank_0_for_every_rank(value, tmp_path):
    """Rank 0 measures; every rank prunes to its answer, or refuses with it (no rank waits)."""
    r = torchrun(["-m", "prunekit.cli", "method=oneshot", "method.granularity=filter",
                  "method.finetune_epochs=1", "model=resnet20", "dataset.subset=0.3",
                  *LENET[1:], "hardware.latency.enabled=true", "target.kind=latency",
                  f"target.value={value}", "target.max_measurements=3"], tmp_path)
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    if value > 100:
        assert r.returncode != 0 and summary["status"] == "failed"
        assert "out of reach" in summary["error"]  # (torchrun adds its own traceback)
        assert f"prune-run: error: target.value={value} is out of reach" in r.stderr
        return
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary["status"] == "ok" and 1 <= summary["latency_solve_measurements"] <= 3


def test_ranks_that_decide_apart_are_stopped(tmp_path):
    """check_agree: every rank fails, naming what differed."""
    script = tmp_path / "disagree.py"
    script.write_text(textwrap.dedent("""
        from prunekit import distributed
        world = distributed.join("auto")
        distributed.check_agree("the masks", distributed.digest([__import__("torch").ones(3)]))
        try:
            distributed.check_agree("the masks", f"rank {world.rank}")
        except RuntimeError as e:
            open(f"stopped.{world.rank}", "w").write(str(e))
        distributed.leave()
    """))
    r = torchrun([str(script)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for rank in (0, 1):  # every rank stopped, naming what differed
        assert (tmp_path / f"stopped.{rank}").read_text().startswith(
            "ranks disagree on the masks: ['rank 0', 'rank 1']")


def test_a_batch_is_shared_out_and_evaluation_counts_every_sample_once():
    """The loader's view per rank: disjoint shares of the same shuffled batches."""
    from prunekit.data import build_data
    cfg = make_cfg(["model=lenet5"])
    data = build_data(cfg.dataset, cfg.train, channels=1, seed=0)
    shards = [data.shard(r, 2) for r in range(2)]
    for split in ("train", "test"):
        whole = [y for _, y in getattr(data, split)]
        parts = [[y for _, y in getattr(s, split)] for s in shards]
        assert len(parts[0]) == len(parts[1]) == len(whole)  # every rank: the same step count
        for b, batch in enumerate(whole):
            halves = torch.cat([parts[0][b], parts[1][b]])
            assert sorted(halves.tolist()) == sorted(batch.tolist())
            assert len(parts[0][b]) - len(parts[1][b]) in (0, 1)


STOPPER = """
import os, signal, sys
from prunekit import distributed
from prunekit.record import Recorder
original = Recorder.step

def step(self, **row):  # {signal} to rank {rank} alone, after its first steps.csv row
    original(self, **row)
    if len(self.steps) == 1 and distributed.current().rank == {rank} and not os.environ.get(
            "RESUMED"):
        os.kill(os.getpid(), signal.{signal})

Recorder.step = step
from prunekit.cli import main
sys.argv[0] = "prune-run"
main()
"""
ITERATIVE = ["method=iterative", "method.steps=3", "method.finetune_epochs=1", "model=lenet5",
             "hardware.latency.enabled=false", "checkpoint.min_interval_s=0",
             "pretrain.cache=false", "pretrain.epochs=4", "hydra.run.dir=outputs/run", *FAST]


@pytest.mark.parametrize("how, resume_with", [
    ("SIGTERM", 2), ("SIGTERM", 1),
    pytest.param("SIGKILL", 2, marks=pytest.mark.slow)])  # CI time: make test-slow runs it
def test_one_rank_stopped_ends_the_run_and_resume_completes(how, resume_with, tmp_path):
    """SIGTERM to rank 1 reaches every rank at the next checkpoint: all stop after it, the run
    says interrupted. A killed rank 1 ends the run too (the others fail on the lost peer or are
    stopped by torchrun). Either way resume=true completes, on 2 processes or on 1."""
    script = tmp_path / "stopper.py"
    script.write_text(STOPPER.replace("{rank}", "1").replace("{signal}", how))
    r = torchrun([str(script), *ITERATIVE], tmp_path)
    assert r.returncode != 0
    run_dir = tmp_path / "outputs" / "run"
    status = json.loads((run_dir / "summary.json").read_text())["status"]
    assert status == "interrupted" if how == "SIGTERM" else status in ("interrupted", "failed")
    assert len(list((run_dir / "checkpoints").glob("ckpt-*.pt"))) >= 1
    env = {"RESUMED": "1"}
    args = [str(script), *ITERATIVE, "resume=true"]
    if resume_with == 2:
        os.environ.update(env)
        try:
            r = torchrun(args, tmp_path)
        finally:
            os.environ.pop("RESUMED")
    else:
        r = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and "resumed_from" in summary and summary["steps"] == 3


def test_the_dense_cache_is_written_by_rank_0_and_read_by_every_rank(tmp_path):
    args = ["-m", "prunekit.cli", "method=oneshot", "method.finetune_epochs=1",
            *[o for o in LENET if o != "pretrain.cache=false"], f"cache_dir={tmp_path / 'c'}"]
    sources = []
    for attempt in ("first", "second"):
        r = torchrun([*args, f"hydra.run.dir=outputs/{attempt}"], tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads((tmp_path / "outputs" / attempt / "summary.json").read_text())
        sources.append(summary["dense_source"])
        assert summary["status"] == "ok"
    assert sources[0] == "trained" and sources[1].startswith("cache ")
    assert len(list((tmp_path / "c").rglob("*.pt"))) == 1


@pytest.mark.parametrize("method", [
    ["method=iterative", "method.steps=2", "method.granularity=filter", "method.criterion=taylor"],
    ["method=ice", "method.autotune.enabled=false", "method.criterion=mean_activation"]])
def test_a_data_driven_criterion_decides_alike_on_every_rank(method, tmp_path):
    """It reads the same whole batches on every rank; the masks check would stop it otherwise."""
    r = torchrun(["-m", "prunekit.cli", *method, "method.finetune_epochs=1", "model=resnet20",
                  "dataset.subset=0.3", *LENET[1:]], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] >= 2


def test_the_world_is_read_from_torchrun_or_slurm(monkeypatch):
    from prunekit import distributed
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID", "SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.launched() == distributed.World(0, 1, 0)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert distributed.launched() == distributed.World(5, 8, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's variables win (torchrun under SLURM)
    monkeypatch.setenv("RANK", "1")
    assert distributed.launched() == distributed.World(1, 2, 0)
    from prunekit.errors import ConfigError
    with pytest.raises(ConfigError, match="MASTER_ADDR / MASTER_PORT"):
        distributed.join("auto", cuda=False)  # nowhere to meet: one line
    assert distributed.join("off") == distributed.World()


def test_processes_that_cannot_meet_say_so_in_one_line(tmp_path):
    from conftest import run_cli
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "", "MASTER_PORT": ""}
    r = run_cli(["method=dense", *LENET], tmp_path, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("prune-run: error: 2 processes but no")


def test_a_streamed_split_is_shared_out_the_same_way(tmp_path):
    """The DataLoader path: each rank loads only its share of the batch every rank draws."""
    from omegaconf import OmegaConf
    from test_data import dataset_cfg, write_image_folder

    from prunekit.data import build_data
    write_image_folder(tmp_path, n=7)
    cfg = dataset_cfg("imagefolder", path=str(tmp_path), image_size=8, in_memory=False,
                      val_fraction=0.3)
    data = build_data(cfg, OmegaConf.create({"batch_size": 4, "eval_batch_size": 5}), channels=3)
    shards = [data.shard(r, 2) for r in range(2)]
    whole = list(data.test)
    parts = [list(s.test) for s in shards]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for b, (x, _) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][b][0], parts[1][b][0]]).sum((1, 2, 3)).sort()[0],
                           x.sum((1, 2, 3)).sort()[0])
    train = [[len(y) for _, y in s.train] for s in shards]
    assert train[0] == train[1] == [2] * len(data.train)  # batches of 4, two images each
    # a subset (ICE's trials) keeps the whole batches a data-driven criterion reads
    subset = shards[1].train.subset(0.5, seed=0)
    assert [len(y) for _, y in subset.unsharded] == [2 * len(y) for _, y in subset]
