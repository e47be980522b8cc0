"""The run pipeline in-process: records, the summary contract, the dense cache, checkpoints."""
import csv
import json

import pytest
import torch

import prunekit.hardware as hardware
from conftest import FAST, make_cfg
from prunekit.artifacts import dense_cache_path, dense_key
from prunekit.errors import ConfigError
from prunekit.models.classic import LeNet5
from prunekit.plan import plan_of
from prunekit.runner import run
from prunekit.sparsity.schedules import AGPSchedule

CONTRACT_KEYS = (
    "status method model dataset hardware seed granularity target_sparsity sparsity sparsity_total "
    "params_dense params params_nonzero compression_ratio flops_dense flops theoretical_speedup "
    "top1_dense top1 top5 delta_top1 latency_ms_dense latency_ms measured_speedup steps "
    "finetune_count finetune_epochs time_pretrain_s time_total_s time_search_s time_prune_s "
    "time_finetune_s time_eval_s versions error hparams").split()

LENET = ["model=lenet5", "dataset.subset=0.4", *FAST]


def steps_of(run_dir):
    with open(run_dir / "steps.csv") as f:
        return list(csv.DictReader(f))


def test_summary_contract_and_files(tmp_path):
    s = run(make_cfg(["method=oneshot", *LENET]), tmp_path, show=False)
    assert s["status"] == "ok" and s["error"] is None
    for key in CONTRACT_KEYS:
        assert key in s, key
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "ok" and set(CONTRACT_KEYS) <= set(on_disk)
    for name in ("steps.csv", "layers.csv", "model.pt", "config_resolved.yaml"):
        assert (tmp_path / name).is_file(), name
    assert s["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert s["compression_ratio"] == pytest.approx(s["params_dense"] / s["params_nonzero"])
    assert s["delta_top1"] == pytest.approx(s["top1"] - s["top1_dense"])
    assert 0 < s["top1"] <= 100 and s["top5"] >= s["top1"]
    assert s["time_total_s"] >= s["time_prune_s"] + s["time_finetune_s"] + s["time_eval_s"] - 1e-6
    assert s["steps"] == 1 and s["finetune_count"] == 1
    assert s["finetune_epochs"] == s["hparams"]["finetune_epochs"]
    assert isinstance(s["params"], int) and s["params"] == s["params_dense"]  # masks: same size
    assert s["versions"]["torch"] == torch.__version__
    from importlib import metadata  # not torch_pruning.__version__, which can lag its release
    assert s["versions"]["torch_pruning"] == metadata.version("torch-pruning")
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    assert model["format"] == "prunekit-model/1" and "state_dict" in model


def test_dense_cache_is_reused_and_rebuilt_when_corrupt(tmp_path, caplog):
    cfg = make_cfg(["method=dense", *LENET, "seed=3"])
    first = run(cfg, tmp_path / "a", show=False)
    assert first["dense_source"] == "trained" and first["time_pretrain_s"] > 0
    second = run(cfg, tmp_path / "b", show=False)
    assert second["dense_source"].startswith("cache")
    assert second["time_pretrain_s"] == 0.0
    assert second["top1_dense"] == first["top1_dense"]
    path = dense_cache_path(plan_of(cfg))
    blob = torch.load(path, weights_only=True)
    next(iter(blob["state_dict"].values())).add_(1e-3)  # the tensors change, the hash does not
    torch.save(blob, path)
    caplog.clear()
    tampered = run(cfg, tmp_path / "t", show=False)
    assert tampered["dense_source"] == "trained"
    assert "content hash does not match" in caplog.text and str(path) in caplog.text
    path.write_bytes(b"not a checkpoint")
    third = run(cfg, tmp_path / "c", show=False)
    assert third["dense_source"] == "trained"
    assert "unusable" in caplog.text
    assert third["top1_dense"] == first["top1_dense"]  # same seed, deterministic training


@pytest.mark.parametrize("override, shared", [
    ("method=gradual", True), ("train.lr_schedule=step", True), ("train.progress=false", True),
    ("dataset.root=/elsewhere", True), ("train.eval_batch_size=7", True),
    ("seed=1", False), ("pretrain.lr=0.01", False), ("dataset.split_seed=2", False),
    ("train.batch_size=16", False), ("dataset.in_memory=false", False),
    ("model.small_input=false", False), ("train.label_smoothing=0.1", False),
    # fine-tuning's SGD (ICE's presets: no Nesterov) is not the dense recipe's; pretrain's is
    ("train.nesterov=false", True), ("train.momentum=0.5", True),
    ("pretrain.nesterov=false", False), ("pretrain.momentum=0.5", False),
])
def test_the_dense_cache_key_changes_with_what_changes_the_weights(override, shared):
    base = make_cfg(["method=dense", *LENET])
    other = make_cfg(["method=dense", *LENET, override])
    assert (dense_cache_path(plan_of(base)) == dense_cache_path(plan_of(other))) is shared


def test_a_key_added_to_a_dense_section_splits_the_cache_unless_listed(monkeypatch):
    """A new key is in the cache key until NOT_IN_DENSE_KEY says it cannot change the weights."""
    from omegaconf import OmegaConf

    from prunekit import artifacts
    cfg = OmegaConf.create(OmegaConf.to_container(make_cfg(["method=dense", *LENET]),
                                                  resolve=True))  # plain: keys can be added
    with_new = cfg.copy()
    with_new.dataset.new_option = 3
    assert dense_cache_path(plan_of(with_new)) != dense_cache_path(plan_of(cfg))
    listed = {**artifacts.NOT_IN_DENSE_KEY,
              "dataset": artifacts.NOT_IN_DENSE_KEY["dataset"] | {"new_option"}}
    monkeypatch.setattr(artifacts, "NOT_IN_DENSE_KEY", listed)
    assert dense_cache_path(plan_of(with_new)) == dense_cache_path(plan_of(cfg))


def test_the_ice_presets_share_the_dense_model_and_dense_training_uses_pretrains_sgd(
        monkeypatch, tmp_path):
    """experiment=ice_baseline / ice_paper fine-tune without Nesterov (as the reference), but
    their dense model is every other method's: dense training takes pretrain.momentum and
    pretrain.nesterov, and the key keeps them where train.*'s stood (so default caches keep
    their keys)."""
    from prunekit.train import Trainer

    dense = dense_cache_path(plan_of(make_cfg(["method=dense", "model=resnet20"])))
    for preset in ("ice_baseline", "ice_baseline_plain", "ice_paper"):
        preset_cfg = make_cfg([f"experiment={preset}", "model=resnet20"])
        assert dense_cache_path(plan_of(preset_cfg)) == dense
    assert dense_key(plan_of(make_cfg(["method=dense"])))["train"]["nesterov"] is True
    made = []
    real = Trainer.make_optimizer
    monkeypatch.setattr(Trainer, "make_optimizer", lambda self, model, lr, sgd=None: (
        made.append((sgd.momentum, sgd.nesterov)), real(self, model, lr, sgd))[1])
    run(make_cfg(["method=dense", *LENET, "train.nesterov=false", "pretrain.momentum=0.8",
                  "pretrain.epochs=1", "pretrain.cache=false"]), tmp_path, show=False)
    assert made[0] == (0.8, True)


@pytest.mark.parametrize("bf16_units", [False, True])
def test_the_dense_cache_key_holds_the_training_precision(monkeypatch, bf16_units):
    """Dense training runs under its precision's autocast: a bf16 model is not an fp32 one, and
    fp32 keys as it did before the precision was in the key. `auto` keys as what it resolves
    to on this CPU: an fp32 cache is not served to the bf16 mode, nor the reverse."""
    monkeypatch.delenv("PRUNEKIT_PRECISION")  # the suite's pin (conftest): auto here
    monkeypatch.setattr(hardware, "bf16_matrix_units", lambda: bf16_units)
    fp32 = make_cfg(["method=dense", *LENET, "hardware.precision=fp32"])
    assert "precision" not in dense_key(plan_of(fp32))
    paths = {p: dense_cache_path(plan_of(make_cfg(["method=dense", *LENET,
                                                   f"hardware.precision={p}"])))
             for p in ("fp32", "bf16", "fp16")}
    assert len(set(paths.values())) == 3 and paths["fp32"] == dense_cache_path(plan_of(fp32))
    auto = dense_cache_path(plan_of(make_cfg(["method=dense", *LENET, "hardware=cpu"])))
    assert auto == paths["bf16" if bf16_units else "fp32"]


def test_cached_and_uncached_runs_prune_identically(tmp_path):
    cfg = make_cfg(["method=gradual", *LENET, "seed=4", "method.epochs=2", "method.frequency=2"])
    a = run(cfg, tmp_path / "a", show=False)
    b = run(cfg, tmp_path / "b", show=False)
    assert a["dense_source"] == "trained" and b["dense_source"].startswith("cache")
    assert a["top1"] == b["top1"] and a["sparsity"] == b["sparsity"]


def test_user_checkpoint(tmp_path):
    model = LeNet5(10, 1, 8)
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    s = run(make_cfg(["method=dense", *LENET, f"model.checkpoint={good}"]), tmp_path / "r",
            show=False)
    assert s["dense_source"].startswith("checkpoint") and s["time_pretrain_s"] == 0.0

    foreign = tmp_path / "foreign.pt"
    torch.save(LeNet5(10, 1, 28).state_dict(), foreign)  # another input size: shapes differ
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00 not torch")
    pickled = tmp_path / "object.pt"
    torch.save({"state_dict": model}, pickled)  # a whole module: refused by weights_only=True
    for path, match in ((foreign, "does not fit"), (garbage, "not a PyTorch file|cannot be loaded"),
                        (pickled, "pickled Python objects")):
        with pytest.raises(ConfigError, match=match) as e:
            run(make_cfg(["method=dense", *LENET, f"model.checkpoint={path}"]), tmp_path / "x",
                show=False)
        assert "\n" not in str(e.value)
        failed = json.loads((tmp_path / "x" / "summary.json").read_text())
        assert failed["status"] == "failed" and "model.checkpoint" in failed["error"]


def test_gradual_follows_its_schedule(tmp_path):
    s = run(make_cfg(["method=gradual", *LENET, "method.epochs=3", "method.frequency=3",
                      "sparsity=0.8"]), tmp_path, show=False)
    rows = steps_of(tmp_path)
    updates = [r for r in rows if r["event"] == "update"]
    total = 3 * (len(rows) and int(rows[-1]["optimizer_step"]) // 3)
    sched = AGPSchedule(0.0, 0.8, 0, int(0.75 * total), 3)
    assert [(int(r["optimizer_step"]), float(r["target"])) for r in updates] == [
        (t, pytest.approx(v, abs=1e-6)) for t, v in sched.updates()]
    for r in updates:  # each update lands on its target, layerwise-exactly
        assert float(r["sparsity"]) == pytest.approx(float(r["target"]), abs=2e-3)
    assert s["sparsity"] == pytest.approx(0.8, abs=1e-3) and s["steps"] == len(updates)


def test_iterative_geometric_steps(tmp_path):
    s = run(make_cfg(["method=iterative", *LENET, "method.steps=3", "sparsity=0.9"]), tmp_path,
            show=False)
    rows = steps_of(tmp_path)
    targets = [1 - 0.1 ** (k / 3) for k in (1, 2, 3)]
    assert [float(r["target"]) for r in rows] == pytest.approx(targets, abs=1e-5)
    assert [float(r["sparsity"]) for r in rows] == pytest.approx([float(r["target"]) for r in rows],
                                                                 abs=2e-3)
    assert s["steps"] == 3 and s["finetune_count"] == 3 and s["finetune_epochs"] == 3


def test_iterative_blockwise_on_a_residual_network(tmp_path):
    s = run(make_cfg(["method=iterative", "model=resnet56", "dataset.subset=0.2",
                      "pretrain.epochs=1", "method.granularity=filter", "method.schedule=blockwise",
                      "method.finetune_epochs=0", *FAST]), tmp_path, show=False)
    rows = steps_of(tmp_path)
    assert len(rows) == 27 and rows[0]["block"] == "layer1.0" and rows[-1]["block"] == "layer3.8"
    assert s["compacted"] and s["compaction_max_abs_diff"] < 1e-3
    assert s["params"] < s["params_dense"] and s["target_unit"] == "channels per block"
    assert s["theoretical_speedup"] > 1.2


def test_divergence_is_a_failed_run_with_a_reason(tmp_path):
    with pytest.raises(Exception):
        run(make_cfg(["method=oneshot", *LENET, "method.lr=1e12"]), tmp_path, show=False)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "failed" and "DivergenceError" in s["error"]


@pytest.mark.parametrize("epochs, warned", [(0, True), (20, False)])
def test_a_dense_model_near_chance_is_warned_about(tmp_path, caplog, epochs, warned):
    """An untrained dense model (here: none of its epochs) makes every pruning figure meaningless:
    one warning, before any pruning; a trained one gets none."""
    s = run(make_cfg(["method=oneshot", "method.finetune_epochs=1", f"pretrain.epochs={epochs}",
                      *LENET, "hardware.latency.enabled=false"]), tmp_path, show=False)
    said = [r.getMessage() for r in caplog.records if "of chance" in r.getMessage()]
    assert bool(said) == warned and s["status"] == "ok"
    if warned:
        assert s["val_top1_dense"] < 15 and "pretrain.epochs, now 0" in said[0]


def test_hardware_compile_compiles_the_train_and_eval_steps_and_times_it_apart(tmp_path):
    """hardware.compile on CPU: the train and eval steps run through torch.compile (recompiled
    after the compaction), the compile seconds are their own phase (time_compile_s), and the run
    prunes as the eager one does."""
    base = ["method=oneshot", *LENET, "method.granularity=filter", "method.finetune_epochs=1",
            "hardware.latency.enabled=false", "pretrain.cache=false"]
    eager = run(make_cfg(base), tmp_path / "eager", show=False)
    compiled = run(make_cfg([*base, "hardware.compile=true"]), tmp_path / "compiled", show=False)
    assert eager["time_compile_s"] == 0 and compiled["time_compile_s"] > 0
    assert compiled["compacted"] and compiled["sparsity"] == pytest.approx(eager["sparsity"])
    assert compiled["top1"] == pytest.approx(eager["top1"], abs=3.0)
    assert compiled["time_total_s"] >= compiled["time_compile_s"]


def test_the_compiler_warm_up_leaves_the_model_as_it_found_it():
    """Compiling ahead (to time it) runs a forward and backward on a batch: the gradients are
    dropped and BatchNorm's statistics restored, so training is what it would have been."""
    from prunekit.hardware import setup_hardware
    from prunekit.train import Compiler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = []
    hw = setup_hardware(make_cfg(["hardware=cpu"]).hardware, False)
    compiler = Compiler(True)
    net = compiler(model, lambda: torch.randn(8, 1, 8, 8), True, hw, seconds.append)
    assert len(seconds) == 1 and seconds[0] > 0 and net is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert compiler(model, lambda: torch.randn(8, 1, 8, 8), True, hw, seconds.append) is net
    assert len(seconds) == 1  # compiled once per shapes
    x = torch.randn(8, 1, 8, 8)
    assert Compiler(False)(model, lambda: x, True, hw, seconds.append) is model


def test_the_compile_mode_reaches_torch_compile_and_graphed_modes_mark_their_steps(monkeypatch):
    """hardware.compile_mode is torch.compile's mode for the train / eval steps; the modes that
    capture CUDA graphs themselves (reduce-overhead, max-autotune) count on CUDA only, and a bad
    mode is a one-line error."""
    from dataclasses import replace

    from prunekit.config import validate
    from prunekit.errors import ConfigError
    from prunekit.hardware import setup_hardware
    from prunekit.train import Compiler

    modes = []
    monkeypatch.setattr(torch, "compile", lambda m, mode=None: (modes.append(mode), m)[1])
    cfg = make_cfg(["hardware=cpu", "hardware.compile=true",
                    "hardware.compile_mode=reduce-overhead"])
    hw = setup_hardware(cfg.hardware, False)
    assert hw.compile_mode == "reduce-overhead" and not hw.compiled_graphs  # a CPU: no graphs
    assert replace(hw, device=torch.device("cuda")).compiled_graphs
    assert not replace(hw, device=torch.device("cuda"), compile_mode="default").compiled_graphs
    Compiler(True, hw.compile_mode)(torch.nn.Linear(2, 2), lambda: torch.randn(3, 2), False, hw,
                                    None)
    assert modes == ["reduce-overhead"]
    cfg.hardware.compile_mode = "fastest"
    with pytest.raises(ConfigError, match="hardware.compile_mode"):
        validate(cfg)
