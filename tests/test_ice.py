"""ICE-Pruning: its three rules on constructed inputs, the auto-tuning stage, whole runs."""
import csv
import dataclasses
import math

import pytest
import torch
import torch.nn as nn
from test_pruner import EVERY_MODEL, channels_of, model_of, pruner_for, tolerance

from conftest import FAST, make_cfg
from prunekit.config import validate
from prunekit.errors import ConfigError
from prunekit.methods.ice_autotune import REFERENCE_NAMES, choose_trial, reference_score
from prunekit.methods.ice_pipeline import (
    freeze_candidates,
    least_changed,
    pruning_aware_lr,
    should_finetune,
    weight_change_scores,
)
from prunekit.plan import plan_of
from prunekit.runner import run
from prunekit.sparsity.activations import activation_scores, entropy

# resnet18 on a fifth of digits, one dense epoch: a real residual network in seconds
ICE = ["method=ice", "dataset.subset=0.25", "pretrain.epochs=1", *FAST]
NO_TUNE = ["method.autotune.enabled=false"]


def rows_of(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- rule iii: pruning-aware LR
def test_pruning_aware_lr_at_known_points():
    base, p, beta, delta = 1e-3, 0.12, 50.0, 7.5e-4
    # the knee: x = 1 - p gives ratio 1, so exactly half of delta is taken off
    assert pruning_aware_lr(1 - p, base, p, beta, delta) == pytest.approx(base - delta / 2)
    # nothing left: ratio 0, the whole delta
    assert pruning_aware_lr(0.0, base, p, beta, delta) == pytest.approx(base - delta)
    # unpruned: ratio 1 / (2(1 - p) - 1) = 1/0.76, to the 50th power
    ratio = 1.0 / (2 * (1 - p) - 1.0)
    assert pruning_aware_lr(1.0, base, p, beta, delta) == pytest.approx(
        base - delta / (1 + ratio ** beta), rel=1e-12)
    assert pruning_aware_lr(1.0, base, p, beta, delta) > base - 1e-8
    # x = 0.5 with p = 0.2: ratio 0.5 / 1.1, beta 40
    assert pruning_aware_lr(0.5, 5e-3, 0.2, 40.0, 8e-4) == pytest.approx(
        5e-3 - 8e-4 / (1 + (0.5 / 1.1) ** 40))
    xs = [i / 20 for i in range(1, 21)]
    lrs = [pruning_aware_lr(x, base, p, beta, delta) for x in xs]
    assert lrs == sorted(lrs)  # the more is pruned, the lower the rate


# ---------------------------------------------------------------- rule i: fine-tune decision
def test_finetune_rule_is_cumulative_against_dense_and_inclusive():
    assert should_finetune(98.0, 96.5, 1.5)  # a drop of exactly the threshold fine-tunes
    assert not should_finetune(98.0, 96.6, 1.5)
    assert should_finetune(98.0, 90.0, 1.5)
    assert not should_finetune(98.0, 99.0, 0.0) and should_finetune(98.0, 98.0, 0.0)


# ---------------------------------------------------------------- rule ii: freezing
def test_weight_change_score_and_least_changed_selection():
    orig = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0, 0.0])}
    pre = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([1.0, 0.0])}
    post = {"a": torch.tensor([2.0, 0.0]), "b": torch.tensor([-1.5, 0.0])}
    s = weight_change_scores(orig, pre, post)
    assert s["a"] == pytest.approx(abs(2.0 - 3.0) / 5.0)  # |‖post‖₁ − ‖pre‖₁| / ‖orig‖₂
    assert s["b"] == pytest.approx(0.5 / 1.0)  # L1 norms: a sign flip alone is no change

    scores = {"c1": 0.30, "c2": 0.10, "c3": 0.20, "c4": 0.10, "c5": 0.90}
    assert least_changed(scores, 0.4) == ["c2", "c4"]  # ceil(0.4 * 5) = 2, ties in order
    assert least_changed(scores, 0.5) == ["c2", "c4", "c3"]  # ceil(2.5) = 3: not the first 3
    assert least_changed(scores, 0.0) == []
    assert least_changed(scores, 1.0) == ["c2", "c4", "c3", "c1", "c5"]


def test_freeze_candidates_skip_stem_shortcuts_and_classifier():
    r18 = freeze_candidates(model_of("resnet18"))
    assert len(r18) == 16 and "conv1" not in r18
    assert not any("downsample" in n for n in r18)
    assert len(freeze_candidates(model_of("resnet50"))) == 48
    assert len(freeze_candidates(model_of("vgg16"))) == 12


# ---------------------------------------------------------------- criteria
def test_entropy_of_constructed_columns():
    n = 200
    constant = torch.full((n,), 0.7)
    two_way = torch.tensor([0.0, 1.0]).repeat(n // 2)
    uniform = torch.linspace(0, 1, n)
    h = entropy(torch.stack([constant, two_way, uniform], 1))
    assert h[0] == pytest.approx(0.0)
    assert h[1] == pytest.approx(math.log(2))
    assert h[2] == pytest.approx(math.log(20), rel=1e-3)  # 20 equally filled bins


def test_activation_criteria_rank_a_silenced_channel_first():
    m = model_of("resnet18").eval()
    p = pruner_for(m, granularity="filter", criterion="entropy")
    groups = dict(p.order.steps_in_order())["layer1.0"]
    bn = m.layer1[0].bn1
    with torch.no_grad():  # channel 7 emits nothing after ReLU; channel 3 a constant
        bn.weight[7], bn.bias[7] = 0.0, -1.0
        bn.weight[3], bn.bias[3] = 0.0, 2.0
    batches = [(torch.randn(16, 3, 8, 8), None) for _ in range(3)]
    mean = activation_scores(m, groups, batches, "mean_activation", 2)["layer1.0.conv1"]
    ent = activation_scores(m, groups, batches, "entropy", 2)["layer1.0.conv1"]
    assert mean.shape == (64,) and int(mean.argmin()) == 7 and mean[3] == pytest.approx(2.0)
    assert ent[7] == 0 and ent[3] == 0 and ent.max() > 1.0
    # the pruner's criterion (the registry's entropy) scores them: the silenced channels go first
    p.prepare(batches, 2)
    p.prune_groups(groups, 2 / 64)
    assert p.groups.masked_channels(groups[0], p.masks).nonzero().flatten().tolist() == [3, 7]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n == "resnet152_cifar" else n for n in EVERY_MODEL])
def test_blockwise_removal_keeps_every_model_valid(name):  # 75 blocks (44 s): make test-slow
    """ICE's unit of work on every model: one step per block, pruned and physically removed."""
    size, channels = 8, channels_of(name)
    m = model_of(name, size, channels)
    p = pruner_for(m, size, channels, granularity="filter")
    x = torch.randn(3, channels, size, size)
    params = sum(t.numel() for t in m.parameters())
    for block, _ in p.order.steps_in_order():
        groups = dict(p.order.steps_in_order())[block]
        p.prune_groups(groups, 0.5)
        tol = tolerance(m, x)
        assert p.compact(check_input=x) < tol, block
        assert m.eval()(x).shape == (3, 10)
    assert sum(t.numel() for t in m.parameters()) < params


# ---------------------------------------------------------------- auto-tuning objective
def test_choose_trial_weighs_normalised_drop_and_time():
    drops, times = [2.0, 1.0, 3.0], [10.0, 30.0, 5.0]
    # over the largest: drops 2/3, 1/3, 1; times 1/3, 1, 1/6 -> equal weights: 0.5, 0.67, 0.58
    assert choose_trial(drops, times, 0.5) == 0
    assert choose_trial(drops, times, 1.0) == 1  # accuracy only
    assert choose_trial(drops, times, 0.0) == 2  # time only
    # the reference's 1 + D/T would prefer the slower of two equally accurate trials; not here
    assert choose_trial([1.0, 1.0], [50.0, 10.0], 0.5) == 1
    assert choose_trial([1.0], [5.0], 0.5) == 0
    # a narrow spread of time does not outweigh a wide spread of drop (min-max scaling would
    # give both the full [0, 1] range and pick the 18-point trial to save 7 of 27 s)
    assert choose_trial([17.9, 6.25, 42.9], [20.2, 27.0, 20.1], 0.5) == 1
    # gains count as no drop: two trials that beat dense differ by time alone
    assert choose_trial([-1.0, -3.0, 2.0], [10.0, 20.0, 10.0], 0.5) == 0
    assert choose_trial([-1.0, -3.0], [10.0, 10.0], 0.5) == 1  # the tie goes to the larger gain


def test_the_reference_objective_is_one_plus_drop_over_time():
    """The reference code's objective, T/max(D,T) + D/max(D,T): the same drop at more seconds
    scores better (its quirk), a larger drop than seconds scores 1 + T/D."""
    assert reference_score(1.0, 50.0) == pytest.approx(1.02)
    assert reference_score(1.0, 10.0) == pytest.approx(1.1)
    assert reference_score(20.0, 10.0) == pytest.approx(1.5)
    assert reference_score(-2.0, 10.0) == pytest.approx(0.8)  # a gain: below 1
    assert choose_trial([1.0, 1.0], [50.0, 10.0], 0.5, "reference") == 0  # the slower one
    assert choose_trial([1.0, 1.0], [50.0, 10.0], 0.5) == 1
    assert choose_trial([5.0, 0.5], [20.0, 20.0], 0.5, "reference") == 1


def test_the_grid_is_searched_in_the_reference_codes_order():
    """Optuna's GridSampler sorts the parameter names before its seeded shuffle: under the
    reference's names (thre, fr, base, p, beta, delta) the same seed tries the same 6 points
    in the same order as the reference; under ours it would try others."""
    import optuna

    from prunekit.methods.ice import IceGrid

    grid = {k: list(v) for k, v in dataclasses.asdict(IceGrid()).items()}
    reference = {"thre": [0.5, 1.5], "fr": [0.3, 0.9], "base": [0.001, 0.005],
                 "p": [0.1, 0.15, 0.2], "beta": [40, 50, 60], "delta": [0.0006, 0.0007, 0.0008]}
    assert {REFERENCE_NAMES[k]: v for k, v in grid.items()} == reference

    def points(space, names):
        study = optuna.create_study(sampler=optuna.samplers.GridSampler(space, seed=0))
        tried = []
        study.optimize(lambda t: tried.append(tuple(t.suggest_categorical(n, space[n])
                                                     for n in names)) or 0.0, n_trials=6)
        return tried

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ours = [REFERENCE_NAMES[k] for k in grid]
    theirs = points(reference, ours)
    assert points({REFERENCE_NAMES[k]: v for k, v in grid.items()}, ours) == theirs
    assert points(grid, list(grid)) != theirs  # our own names: other points


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("override,key", [
    ("method.granularity=unstructured", "method.granularity"),
    ("method.criterion=hessian", "method.criterion"),
    ("method.lr_p=0.5", "method.lr_p"),
    ("method.autotune.grid.lr_delta=[0.002]", "method.lr_delta"),
    ("method.autotune.trials=0", "method.autotune.trials"),
    ("method.autotune.grid.threshold=[]", "method.autotune.grid.threshold"),
    ("method.val_fraction=0", "method.val_fraction"),
])
def test_bad_ice_settings_are_one_line_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make_cfg(["method=ice", override]))


def test_activation_criteria_are_ice_only():
    validate(make_cfg(["method=ice", "method.criterion=entropy"]))
    with pytest.raises(ConfigError, match="method.criterion"):
        validate(make_cfg(["method=oneshot", "method.criterion=entropy"]))


# ---------------------------------------------------------------- whole runs
def test_ice_run_with_autotuning(tmp_path):
    s = run(make_cfg([*ICE, "method.autotune.trials=3"]), tmp_path, show=False)
    assert s["status"] == "ok"
    trials = rows_of(tmp_path / "trials.csv")
    assert len(trials) == 3 and s["autotune_trials"] == 3
    chosen = [t for t in trials if t["chosen"] == "True"]
    assert len(chosen) == 1
    for k, v in s["ice_knobs"].items():  # the final run used the chosen trial's values
        assert float(chosen[0][k]) == pytest.approx(v) and s["hparams"][k] == pytest.approx(v)
    assert s["time_search_s"] > 0 and s["time_total_s"] >= s["time_search_s"]
    steps = rows_of(tmp_path / "steps.csv")
    assert [r["block"] for r in steps] == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    for col in ("val_top1_pruned", "val_top1", "finetuned", "lr", "frozen", "remaining_conv",
                "time_s"):
        assert col in steps[0], col
    frozen = math.ceil(s["ice_knobs"]["freeze_ratio"] * 16)
    assert len(s["frozen_layers"]) == frozen and int(steps[0]["frozen"]) == frozen
    assert s["steps"] == 8 and s["finetune_count"] == sum(r["finetuned"] == "True" for r in steps)
    # the final run froze by the trials' probe (probe_data=trials): no probe epoch of its own
    assert s["finetune_epochs"] == s["finetune_count"] and s["time_probe_s"] == 0
    assert s["probe_images"] == s["autotune_train_images"] < 100
    assert s["compacted"] and s["compaction_max_abs_diff"] < 1e-3
    assert s["params"] < s["params_dense"] and s["target_unit"] == "channels per block"
    remaining = [float(r["remaining_conv"]) for r in steps]
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] < 0.8


def test_trial_budget_is_capped_by_the_grid(tmp_path):
    grid = ["method.autotune.grid.threshold=[1.0]", "method.autotune.grid.freeze_ratio=[0.5]",
            "method.autotune.grid.lr=[0.001,0.002]", "method.autotune.grid.lr_p=[0.1]",
            "method.autotune.grid.lr_beta=[50]", "method.autotune.grid.lr_delta=[0.0005]"]
    s = run(make_cfg([*ICE, "model=lenet5", "method.autotune.trials=5", *grid]), tmp_path,
            show=False)
    trials = rows_of(tmp_path / "trials.csv")
    assert s["autotune_trials"] == 2 and sorted(float(t["lr"]) for t in trials) == [0.001, 0.002]


def test_threshold_rule_and_ablations(tmp_path):
    never = run(make_cfg([*ICE, *NO_TUNE, "method.threshold=100"]), tmp_path / "a", show=False)
    assert never["steps"] == 8 and never["finetune_count"] == 0
    steps = rows_of(tmp_path / "a" / "steps.csv")
    assert all(r["lr"] == "" and r["val_top1"] == r["val_top1_pruned"] for r in steps)
    always = run(make_cfg([*ICE, *NO_TUNE, "method.threshold=100", "method.use_threshold=false",
                           "method.use_adaptive_lr=false", "method.use_freeze=false",
                           "method.lr=0.002"]), tmp_path / "b", show=False)
    assert always["finetune_count"] == 8 and always["frozen_layers"] == []
    steps = rows_of(tmp_path / "b" / "steps.csv")
    assert {float(r["lr"]) for r in steps} == {0.002}  # no pruning-aware LR
    assert always["finetune_epochs"] == 8  # no probe


def test_frozen_layers_do_not_train(tmp_path):
    """Every candidate frozen: only the stem, shortcuts, classifier and unpaired layers move."""
    s = run(make_cfg([*ICE, *NO_TUNE, "method.use_threshold=false", "method.freeze_ratio=1.0",
                      "method.val_fraction=0.5"]), tmp_path, show=False)
    assert len(s["frozen_layers"]) == 16 and s["finetune_count"] == 8
    # no tuning stage: the probe runs on the whole train split, one epoch, in its own phase
    assert s["finetune_epochs"] == 9 and s["time_probe_s"] > 0 and s["probe_images"] > 200
    pruned = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    from prunekit.artifacts import dense_cache_path
    dense = torch.load(dense_cache_path(plan_of(make_cfg(ICE))), weights_only=True)["state_dict"]
    # layer4.1.conv2 lost input channels (block 4.1's conv1 filters) but, frozen, every column it
    # kept is the dense one; its BN (on the residual stream) is untouched
    kept, full = pruned["layer4.1.conv2.weight"], dense["layer4.1.conv2.weight"]
    assert kept.shape[1] == full.shape[1] // 2
    cols = lambda w: w.transpose(0, 1).reshape(w.shape[1], -1)  # noqa: E731
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.cdist(cols(kept), cols(full), compute_mode=exact).min(1).values.max() == 0
    assert torch.equal(pruned["layer4.1.bn2.weight"], dense["layer4.1.bn2.weight"])
    assert not torch.equal(pruned["fc.weight"], dense["fc.weight"])  # the classifier trains


def test_distillation_loss_matches_its_formula():
    from prunekit.train import Trainer
    teacher = nn.Linear(4, 3)
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = type("C", (), {"label_smoothing": 0.0})()
    loss = trainer.distillation_loss(teacher.eval(), 2.0)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    out = torch.randn(5, 3)
    with torch.no_grad():
        t = torch.softmax(teacher(x) / 2, 1)
        kl = (t * (t.log() - torch.log_softmax(out / 2, 1))).sum() / 5  # batch mean, no T^2
        expected = nn.functional.cross_entropy(out, y) + kl
        assert loss(out, y, x).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_ice_baseline_distils_like_the_reference_and_validates_once_a_step(tmp_path,
                                                                               monkeypatch):
    """experiment=ice_baseline fine-tunes every block with CE + KL at T = 2 from the dense model
    and validates once a step (after the fine-tune), as the reference's baseline does;
    experiment=ice_baseline_plain is the same pipeline on cross-entropy alone; with
    method.validate_pruned=true it validates the pruned model before each fine-tune too."""
    from prunekit.methods.context import Context
    from prunekit.train import Trainer

    temperatures, validations = [], []
    distil, validate_ = Trainer.distillation_loss, Context.validate
    monkeypatch.setattr(Trainer, "distillation_loss", lambda self, teacher, t: (
        temperatures.append(t), distil(self, teacher, t))[1])
    monkeypatch.setattr(Context, "validate", lambda self, model=None: (
        validations.append(model is None), validate_(self, model))[1])
    base = ["model=resnet20", "dataset.subset=0.25", "pretrain.epochs=1", *FAST,
            "hardware.latency.enabled=false"]
    s = run(make_cfg(["experiment=ice_baseline", *base]), tmp_path / "kd", show=False)
    steps = rows_of(tmp_path / "kd" / "steps.csv")
    assert s["status"] == "ok" and len(steps) == 9 == s["finetune_count"]
    assert temperatures == [2.0]
    assert all(r["val_top1_pruned"] == "" and r["val_top1"] for r in steps)
    kd_validations = validations.count(True)
    temperatures.clear(), validations.clear()
    run(make_cfg(["experiment=ice_baseline_plain", "method.validate_pruned=true", *base]),
        tmp_path / "plain", show=False)
    plain = rows_of(tmp_path / "plain" / "steps.csv")
    assert temperatures == [] and all(r["val_top1_pruned"] for r in plain)
    assert validations.count(True) == kd_validations + 9
