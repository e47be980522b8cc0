"""ADMM: the W/Z/U updates, the penalty, ρ changes, and method=admm end to end."""
import csv

import pytest
import torch
import torch.nn as nn

from conftest import FAST, make_cfg
from prunekit.errors import ConfigError
from prunekit.methods.admm import AdmmState
from prunekit.runner import run
from prunekit.sparsity.projection import LayerConstraint

LENET = ["model=lenet5", "dataset.subset=0.4", *FAST]


def toy(seed=0):
    """f(W) = ½‖W − A‖² on one 4x5 weight; the W-step has the closed form
    W = (A + ρ(Z − U)) / (1 + ρ)."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(5, 4, bias=False)
    a = torch.randn(4, 5, generator=g)
    with torch.no_grad():
        layer.weight.copy_(a)
    model = nn.Sequential()
    model.add_module("fc", layer)
    return model, a


def exact_w_step(state, a):
    with torch.no_grad():
        w = state.weights["fc"]
        w.copy_((a + state.rho * (state.Z["fc"] - state.U["fc"])) / (1 + state.rho))


def test_updates_on_a_toy_quadratic_match_hand_computation():
    model, a = toy()
    c = LayerConstraint("fc", "unstructured", n_zero=14)  # keep 6 of 20
    state = AdmmState(model, [c], rho=0.5)

    def proj(t):
        keep = torch.zeros(20, dtype=torch.bool)
        keep[t.abs().flatten().argsort(descending=True)[:6]] = True
        return t * keep.view(4, 5)

    z, u = proj(a), torch.zeros_like(a)  # Z⁰ = Π(W⁰), U⁰ = 0
    assert torch.allclose(state.Z["fc"], z) and torch.equal(state.U["fc"], u)
    for _ in range(5):
        exact_w_step(state, a)
        w = (a + 0.5 * (z - u)) / 1.5
        assert torch.allclose(state.weights["fc"].detach(), w)
        z_prev = z
        z = proj(w + u)
        u = u + w - z
        res = state.update()
        assert torch.allclose(state.Z["fc"], z, atol=1e-6)
        assert torch.allclose(state.U["fc"], u, atol=1e-6)
        assert res["primal_residual"] == pytest.approx(float((w - z).norm() / w.norm()), rel=1e-5)
        assert res["dual_residual"] == pytest.approx(0.5 * float((z - z_prev).norm()), rel=1e-5,
                                                     abs=1e-7)
    assert state.Z["fc"] is not state.weights["fc"]  # stored, never a view of W


def test_admm_converges_to_the_projection_of_the_minimiser():
    model, a = toy(1)
    state = AdmmState(model, [LayerConstraint("fc", "unstructured", n_zero=10)], rho=1.0)
    for _ in range(200):
        exact_w_step(state, a)
        state.update()
    target = state.constraints[0].project({"fc": a})["fc"]
    assert torch.allclose(state.Z["fc"], target, atol=1e-6)
    assert torch.allclose(state.weights["fc"].detach(), target, atol=1e-3)


def test_penalty_is_the_squared_frobenius_norm_and_its_gradient():
    model, a = toy(2)
    state = AdmmState(model, [LayerConstraint("fc", "unstructured", n_zero=10)], rho=0.3)
    with torch.no_grad():
        state.U["fc"].normal_()
    state._anchor()
    w = state.weights["fc"]
    diff = (w - state.Z["fc"] + state.U["fc"]).detach()
    p = state.penalty()
    assert float(p.detach()) == pytest.approx(0.15 * float(diff.pow(2).sum()), rel=1e-6)
    p.backward()
    assert torch.allclose(w.grad, 0.3 * diff, atol=1e-6)


def test_changing_rho_keeps_the_multipliers():
    model, _ = toy(3)
    state = AdmmState(model, [LayerConstraint("fc", "unstructured", n_zero=10)], rho=0.1)
    with torch.no_grad():
        state.U["fc"].normal_()
    multipliers = state.rho * state.U["fc"].clone()
    state.set_rho(0.4)
    assert torch.allclose(state.rho * state.U["fc"], multipliers)
    assert torch.allclose(state.anchor["fc"], state.Z["fc"] - state.U["fc"])


def steps(run_dir):
    with open(run_dir / "steps.csv") as f:
        return list(csv.DictReader(f))


def test_admm_run_exact_sparsity_top1_hard_and_records(tmp_path):
    s = run(make_cfg(["method=admm", "sparsity=0.9", "method.iterations=3",
                      "method.retrain_epochs=1", "method.rho=0.1", "method.rho_growth=2",
                      "method.rho_max=0.3",
                      *LENET]), tmp_path, show=False)
    assert s["status"] == "ok"
    assert s["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert 0 <= s["top1_hard"] <= 100 and "val_top1_hard" in s
    rows = steps(tmp_path)
    admm = [r for r in rows if r["event"] == "admm"]
    assert [int(r["iteration"]) for r in admm] == [1, 2, 3]
    assert [float(r["rho"]) for r in admm] == [0.1, 0.2, 0.3]  # grows, capped
    hard = next(r for r in rows if r["event"] == "hard_prune")
    assert float(hard["sparsity"]) == pytest.approx(0.9, abs=1e-4)
    assert float(hard["top1_hard"]) == pytest.approx(s["top1_hard"])
    assert [int(r["epoch"]) for r in rows if r["event"] == "retrain"] == [1]
    assert s["top1_retrain1"] == s["top1"]  # test top-1 after each retrain epoch; the last is top1
    assert s["finetune_epochs"] == 3 + 1  # ADMM's training epochs and the retraining
    with open(tmp_path / "layers.csv") as f:
        layers = {r["layer"]: r for r in csv.DictReader(f)}
    assert layers["features.3"]["scheme"] == "unstructured"
    assert float(layers["features.3"]["density"]) == pytest.approx(0.1, abs=1e-3)


def test_admm_layer_rates_and_column_scheme(tmp_path):
    s = run(make_cfg(["method=admm", "sparsity=0.5", "method.granularity=column",
                      "method.iterations=1", "method.retrain_epochs=0",
                      "method.layer_rates=[classifier.*:0.8]", *LENET]), tmp_path, show=False)
    assert s["status"] == "ok" and "top1_hard" in s
    with open(tmp_path / "layers.csv") as f:
        layers = {r["layer"]: r for r in csv.DictReader(f)}
    # each layer at its rate, or below: rows no layer reads any more are removed too (exactly)
    assert float(layers["classifier.1"]["density"]) <= 0.2 + 0.02
    assert float(layers["features.3"]["density"]) <= 0.5 + 0.03
    assert s["compaction_max_abs_diff"] < 1e-4


def test_admm_filters_are_compacted(tmp_path):
    s = run(make_cfg(["method=admm", "sparsity=0.5", "method.granularity=filter",
                      "method.iterations=1", "method.retrain_epochs=1", *LENET]), tmp_path,
            show=False)
    assert s["compacted"] and s["params"] < s["params_dense"]
    assert s["compaction_max_abs_diff"] < 1e-4
    assert s["sparsity"] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("override, message", [
    ("method.criterion=l1", "method.criterion=l1"),
    ("method.scope=global", "method.scope=global"),
    ("method.rho=0", "method.rho=0"),
    ("method.rho_growth=0.5", "method.rho_growth=0.5"),
    ("method.layer_rates=[features.3:1.5]", "features.3:1.5"),
    ("method.layer_rates=[features.3]", "features.3"),
])
def test_admm_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        run(make_cfg(["method=admm", override, *LENET]), tmp_path, show=False)


def test_a_layer_rate_pattern_that_matches_nothing_is_a_user_error(tmp_path):
    with pytest.raises(ConfigError, match="matches no layer"):
        run(make_cfg(["method=admm", "method.layer_rates=[layer9.*:0.5]", *LENET]), tmp_path,
            show=False)
