"""Every registered method unit, parametrised over the registry (a new method is tested here
without editing a list): its YAML holds only what differs from its schema, its defaults validate,
its checks answer in one line, and a quick run prunes what it declares. Plus network slimming."""
import csv
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from test_pruner import model_of, pruner_for

from conftest import FAST, make_cfg
from prunekit.config import METHODS, validate
from prunekit.errors import ConfigError
from prunekit.plan import plan_of
from prunekit.runner import run

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
QUICK = ["dataset.subset=0.25", "pretrain.epochs=1", *FAST]  # on a fifth of digits
RESNET = ["model=resnet20"]  # residual blocks and BatchNorm, 0.27M parameters


def differing(data: dict, defaults: dict, prefix: str = "") -> list:
    out = []
    for key, value in data.items():
        if key in ("defaults", "name"):
            continue
        if isinstance(value, dict):
            out += differing(value, defaults.get(key, {}), f"{prefix}{key}.")
        elif key not in defaults or defaults[key] == value:
            out.append(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_methods_yaml_holds_only_what_differs_from_its_schema(name):
    unit = METHODS[name]
    data = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert data["name"] == name and data["defaults"][0] == {"/schema/method@_here_": name}
    defaults = OmegaConf.to_container(OmegaConf.structured(unit.schema))
    assert differing(data, defaults) == [], "keys repeating (or unknown to) the schema"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_methods_defaults_validate_and_its_declarations_hold(name):
    unit = METHODS[name]
    cfg = make_cfg([f"method={name}"])
    validate(cfg)
    assert cfg.method.granularity in unit.accepted_granularities()
    assert cfg.method.criterion in unit.accepted_criteria()
    assert isinstance(plan_of(cfg).target_unit(), str) and unit.summary
    if unit.prunes:  # a granularity it does not declare is refused, in one line
        with pytest.raises(ConfigError) as e:
            validate(make_cfg([f"method={name}", "method.granularity=rows"]))
        assert "method.granularity" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_quickly_and_prunes_as_it_declares(tmp_path, name):
    unit = METHODS[name]
    cfg = make_cfg([f"method={name}", *unit.quick, *RESNET, *QUICK])
    s = run(cfg, tmp_path, show=False)
    assert s["status"] == "ok" and s["method"] == name
    assert s["target_unit"] == plan_of(cfg).target_unit()
    with open(tmp_path / "steps.csv") as f:
        assert len(list(csv.DictReader(f))) >= 1
    if unit.prunes:
        assert s["sparsity"] > 0.1 and s["params_nonzero"] < s["params_dense"]
    else:
        assert s["sparsity"] == 0 and s["target_sparsity"] == 0


@pytest.mark.parametrize("overrides", [
    ["method=oneshot", "method.criterion=taylor", "method.granularity=filter",
     "method.finetune_epochs=1"],
    ["method=iterative", "method.criterion=taylor", "method.steps=2",  # re-scored each step
     "method.finetune_epochs=1"],
    ["method=ice", "method.criterion=taylor", "method.finetune_epochs=1", *METHODS["ice"].quick],
    ["method=gradual", "method.criterion=lamp", "method.scope=global", "method.epochs=2",
     "method.frequency=2"],
    ["method=oneshot", "method.criterion=lamp", "method.scope=global", "method.finetune_epochs=1"],
])
def test_the_new_criteria_run_end_to_end_through_the_methods(tmp_path, overrides):
    """taylor is prepared on training batches before every prune (unprepared, it raises);
    lamp gives layers different sparsities under one global ranking."""
    s = run(make_cfg([*overrides, *RESNET, *QUICK]), tmp_path, show=False)
    assert s["status"] == "ok" and s["hparams"]["criterion"] in ("taylor", "lamp")
    assert s["sparsity"] == pytest.approx(0.5, abs=0.05)
    if "method.criterion=lamp" in overrides:
        with open(tmp_path / "layers.csv") as f:
            density = [float(r["density"]) for r in csv.DictReader(f) if r["prunable"] == "True"]
        assert max(density) - min(density) > 0.1


# --------------------------------------------------------------------------- network slimming
def test_bn_scale_ranks_the_channels_with_the_smallest_gammas_first():
    m = model_of("resnet18").eval()
    p = pruner_for(m, granularity="filter", criterion="bn_scale")
    groups = dict(p.order.steps_in_order())["layer1.0"]
    with torch.no_grad():
        m.layer1[0].bn1.weight.fill_(1.0)
        m.layer1[0].bn1.weight[[5, 9]] = torch.tensor([0.01, -0.02])  # |γ| small either sign
    p.prune_groups(groups, 2 / 64)
    assert p.groups.masked_channels(groups[0], p.masks).nonzero().flatten().tolist() == [5, 9]


def test_slimming_shrinks_the_bn_scales_then_prunes_by_one_global_threshold(tmp_path):
    common = ["method=slimming", "method.epochs=2", "method.finetune_epochs=1", *QUICK]
    s = run(make_cfg([*common, "method.penalty=1.0"]), tmp_path / "a", show=False)
    run(make_cfg([*common, "method.penalty=0"]), tmp_path / "b", show=False)
    assert s["status"] == "ok" and s["compacted"] and s["compaction_max_abs_diff"] < 1e-3
    assert s["sparsity"] == pytest.approx(0.5, abs=0.03)
    assert s["params"] < s["params_dense"]  # channels physically removed

    def first_row(d):
        with open(d / "steps.csv") as f:
            return next(csv.DictReader(f))

    a, b = first_row(tmp_path / "a"), first_row(tmp_path / "b")
    assert a["event"] == "sparsity_training"
    assert float(a["gamma_l1"]) < 0.9 * float(b["gamma_l1"])  # the L1 penalty shrinks |γ|
    # one global threshold: layers lose different fractions of their channels
    with open(tmp_path / "a" / "layers.csv") as f:
        kept = {r["layer"]: float(r["density"])
                for r in csv.DictReader(f) if r["prunable"] == "True"}
    assert max(kept.values()) - min(kept.values()) > 0.1


@pytest.mark.parametrize("overrides, key", [
    (["method.granularity=unstructured"], "method.granularity"),
    (["method.criterion=l1"], "method.criterion"),
    (["method.penalty=-1"], "method.penalty"),
])
def test_slimming_refuses_what_it_cannot_do(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make_cfg(["method=slimming", *overrides]))


def test_slimming_on_a_network_without_batchnorm_fails_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="needs BatchNorm"):
        run(make_cfg(["method=slimming", "model=lenet5", *QUICK]), tmp_path, show=False)
    assert (tmp_path / "summary.json").exists()


FILTER_METHODS = sorted(n for n, u in METHODS.items()
                        if u.prunes and "filter" in u.accepted_granularities())


@pytest.mark.parametrize("name", FILTER_METHODS)
def test_every_filter_pruning_method_keeps_the_channel_multiple(tmp_path, name):
    """hardware.channel_multiple=8 (the CUDA targets' default): every conv a method prunes
    filters of keeps a multiple of 8 output channels (or its dense count), and summary.json
    records the multiple."""
    from prunekit import load_pruned

    unit = METHODS[name]
    s = run(make_cfg([f"method={name}", *unit.quick, *RESNET, *QUICK, "method.granularity=filter",
                      "hardware.channel_multiple=8", "sparsity=0.6"]), tmp_path, show=False)
    assert s["status"] == "ok" and s["channel_multiple"] == 8 and s["compacted"]
    dense = {n: m.out_channels for n, m in model_of("resnet20").named_modules()
             if isinstance(m, torch.nn.Conv2d)}
    pruned = {n: m.out_channels for n, m in load_pruned(tmp_path / "model.pt").named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    assert any(pruned[n] < dense[n] for n in dense), "nothing pruned"
    assert all(pruned[n] % 8 == 0 or pruned[n] == dense[n] for n in dense), pruned


def test_agp_ends_its_schedule_at_end_fraction_of_the_steps():
    """method.end_fraction places the schedule's end (end_step null): 0.5 of 6 epochs leaves 3
    epochs of training at the final sparsity; a fraction outside (0, 1] is a one-line error."""
    from prunekit.methods.gradual import Gradual

    class Steps:
        steps_per_epoch = 20

    cfg = make_cfg(["method=gradual", "method.epochs=6", "method.end_fraction=0.5",
                    "method.frequency=5"])
    validate(cfg)
    ctx = type("Ctx", (), {"trainer": Steps(), "target": 0.9})()
    sched = Gradual(cfg.method).schedule(ctx)
    assert sched.end_step == 60 == sched.last_update  # of 120 steps: 60 at the final sparsity
    assert sched.sparsity_at(60) == pytest.approx(0.9) and sched.sparsity_at(30) < 0.85
    cfg.method.end_fraction = 1.5
    with pytest.raises(ConfigError, match="method.end_fraction"):
        validate(cfg)
