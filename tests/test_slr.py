"""SLR: α and step sizes, the surrogate optimality checks, the conditional multiplier updates, and
method=slr end to end."""
import csv
import math

import pytest
import torch
import torch.nn as nn

from conftest import FAST, make_cfg
from prunekit.errors import ConfigError
from prunekit.methods.slr import SlrState, slr_alpha, slr_step
from prunekit.runner import run
from prunekit.sparsity.projection import LayerConstraint

LENET = ["model=lenet5", "dataset.subset=0.4", *FAST]


def test_alpha_matches_hand_computed_values():
    # k = 1: 1^anything = 1, so α = 1 − 1/M
    assert slr_alpha(1, 300, 0.1) == pytest.approx(1 - 1 / 300, abs=1e-12)
    # k = 2: 2^0.1 = 1.0717735; 1 − 1/1.0717735 = 0.0669670; 2^0.0669670 = 1.0475122;
    # α = 1 − 1/(300 · 1.0475122) = 1 − 1/314.25365
    assert slr_alpha(2, 300, 0.1) == pytest.approx(1 - 1 / 314.25365, abs=1e-9)
    # the reference's range for k ≤ 100 at M = 300 (0.9967 .. 0.9994), increasing in k
    seq = [slr_alpha(k, 300, 0.1) for k in range(1, 101)]
    assert seq == sorted(seq) and seq[0] > 0.9966 and seq[-1] == pytest.approx(0.99939, abs=1e-5)
    # r = 0: k^(1 − 1) = 1 for every k, so α is constant
    assert slr_alpha(7, 50, 0.0) == pytest.approx(1 - 1 / 50)


def test_step_size_sequence_and_its_guard():
    s, seq = 0.01, []
    for k, (n1, n2) in enumerate([(4.0, 2.0), (2.0, 1.0), (1.0, 0.0), (0.0, 3.0), (3.0, 6.0)], 1):
        s = slr_step(s, slr_alpha(k, 300, 0.1), n1, n2)
        seq.append(s)
    a1, a2, a5 = 1 - 1 / 300, 1 - 1 / 314.25365, slr_alpha(5, 300, 0.1)
    s1 = a1 * 0.01 * 2  # n1/n2 = 2
    s2 = a2 * s1 * 2
    assert seq == pytest.approx([s1, s2, s2, s2, a5 * s2 * 0.5], rel=1e-7)  # n2 = 0, n1 = 0: kept


def toy(weights):
    """One 2x3 linear layer holding `weights`; its constraint keeps the 3 largest of 6."""
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights))
    model = nn.Sequential()
    model.add_module("fc", layer)
    return model, [LayerConstraint("fc", "unstructured", n_zero=3)]


def set_w(model, weights):
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor(weights))


W0 = [[3.0, -0.5, 0.2], [0.1, -2.0, 1.0]]
W1 = [[2.5, -0.4, 0.1], [0.2, -1.5, 1.2]]


def keep3(t):
    flat = t.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().argsort(descending=True)[:3]] = True
    return (flat * keep).view_as(t)


def test_first_round_is_forced_and_matches_hand_computation():
    model, cons = toy(W0)
    st = SlrState(model, cons, rho=0.5, M=300, r=0.1, initial_step=0.01)
    w0, z0 = torch.tensor(W0), keep3(torch.tensor(W0))
    assert torch.equal(st.Z["fc"], z0) and torch.equal(st.U["fc"], torch.zeros(2, 3))
    set_w(model, W1)  # the W-step
    w1 = torch.tensor(W1)
    out = st.update(ce=5.0)  # k = 1: SOC1 passes whatever the loss

    # SOC1: s = α_1·s0·‖W0 − Z0‖/‖W1 − Z0‖, Λ = s(W1 − Z0), accepted (W1, Z0)
    s = (1 - 1 / 300) * 0.01 * float((w0 - z0).norm()) / float((w1 - z0).norm())
    u = s / 0.5 * (w1 - z0)
    # Z-step, then SOC2 with the same W: the Z-step lowers ‖W − Z + U‖ unless Π changes nothing
    z = keep3(w1 + u)
    assert out["soc1"] and torch.allclose(st.Z["fc"], z)
    soc2 = float((w1 - z + u).pow(2).sum()) < float((w1 - z0 + u).pow(2).sum())
    assert out["soc2"] == soc2
    if soc2:  # s = α_2·s·‖W1 − Z0‖/‖W1 − Z‖, Λ += s(W1 − Z)
        s = slr_alpha(2, 300, 0.1) * s * float((w1 - z0).norm()) / float((w1 - z).norm())
        u = u + s / 0.5 * (w1 - z)
    assert out["step_size"] == pytest.approx(s, rel=1e-6)
    assert torch.allclose(st.U["fc"], u, atol=1e-7)
    assert out["k"] == (3 if soc2 else 2)
    # the penalty the next W-step trains against: ρ/2‖W − Z + U‖²
    expected = 0.25 * float((w1 - z + u).pow(2).sum())
    assert float(st.penalty().detach()) == pytest.approx(expected, rel=1e-6)


def test_stored_points_are_clones_not_the_live_parameter():
    """The reference stores the parameter itself as W_prev; then n1 == n2 from the second update
    on and SOC1 compares a W with itself. Here the accepted W stays as it was."""
    model, cons = toy(W0)
    st = SlrState(model, cons, rho=1.0, M=300, r=0.1, initial_step=0.01)
    set_w(model, W1)
    st.update(ce=1.0)
    kept = st.W_prev["fc"].clone()
    set_w(model, W0)
    assert torch.equal(st.W_prev["fc"], kept) and not torch.equal(kept, torch.tensor(W0))


def accepted_state():
    """A state past its forced first round, with Z = Z_p = Π(W) and U = 0: the next Z-step
    returns Z_p again, so SOC2 fails and SOC1 decides alone what moves."""
    model, cons = toy(W0)
    st = SlrState(model, cons, rho=1.0, M=300, r=0.1, initial_step=0.01)
    set_w(model, W1)
    st.update(ce=1.0)
    w = torch.tensor(W1)
    st.W_prev["fc"], st.Z["fc"], st.Z_prev["fc"] = w, keep3(w), keep3(w)
    st.U["fc"] = torch.zeros(2, 3)
    st.ce_prev = 1.0
    st._anchor()
    return model, st


def test_a_failed_check_skips_the_multiplier_update():
    model, st = accepted_state()
    before = (st.s, st.k, st.U["fc"].clone(), st.W_prev["fc"].clone(), st.ce_prev)
    # SOC1: L(W, Z_p) = 1.2 + ρ/2‖W − Z_p‖² vs L(W_p, Z_p) = 1.0 + the same (W = W_p): fails
    out = st.update(ce=1.2)
    assert not out["soc1"] and not out["soc2"]  # SOC2: Π(W + 0) = Z_p, no decrease: fails
    assert (st.s, st.k, st.ce_prev) == (before[0], before[1], before[4])
    assert torch.equal(st.U["fc"], before[2]) and torch.equal(st.W_prev["fc"], before[3])


def test_soc1_accepts_when_the_lagrangian_falls():
    model, st = accepted_state()
    w, zp = torch.tensor(W1), st.Z_prev["fc"].clone()
    s0, k0 = st.s, st.k
    out = st.update(ce=0.8)  # below f(W_p) = 1.0 at the same penalty: accepted
    assert out["soc1"] and not out["soc2"]
    n1 = n2 = float((w - zp).norm())  # W = W_p here, so the ratio is 1
    assert st.s == pytest.approx(slr_alpha(k0, 300, 0.1) * s0 * n1 / n2)
    assert st.k == k0 + 1 and st.ce_prev == 0.8
    assert torch.allclose(st.U["fc"], st.s * (w - zp))  # Λ = 0 + s(W − Z_p), ρ = 1
    # the penalty term counts too: a W closer to Z_p passes at a higher CE
    model, st = accepted_state()
    set_w(model, keep3(torch.tensor(W1)).tolist())  # ‖W − Z_p‖ = 0 < ‖W_p − Z_p‖
    gap = 0.5 * float((torch.tensor(W1) - zp).pow(2).sum())
    assert st.update(ce=1.0 + 0.9 * gap)["soc1"]
    model, st = accepted_state()
    set_w(model, keep3(torch.tensor(W1)).tolist())
    assert not st.update(ce=1.0 + 1.1 * gap)["soc1"]


def test_the_epoch_ce_is_the_mean_of_the_batches():
    model, cons = toy(W0)
    st = SlrState(model, cons, rho=1.0, M=300, r=0.1, initial_step=0.01)
    for v in (1.0, 2.0, 4.5):
        st.add_ce(torch.tensor(v))
    assert st.epoch_ce() == pytest.approx(2.5)
    assert math.isnan(st.epoch_ce())  # the sum starts again for the next epoch


def steps(run_dir):
    with open(run_dir / "steps.csv") as f:
        return list(csv.DictReader(f))


def test_slr_run_exact_sparsity_top1_hard_and_records(tmp_path):
    s = run(make_cfg(["method=slr", "sparsity=0.9", "method.epochs=3", "method.retrain_epochs=2",
                      *LENET]), tmp_path, show=False)
    assert s["status"] == "ok"
    assert s["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert 0 <= s["top1_hard"] <= 100 and "val_top1_hard" in s
    assert s["top1_retrain2"] == s["top1"]  # the final model, the same test set
    rows = steps(tmp_path)
    slr = [r for r in rows if r["event"] == "slr"]
    assert [int(r["epoch"]) for r in slr] == [1, 2, 3]
    assert slr[0]["soc1"] == "True"  # k = 1: forced
    for r in slr:
        assert r["soc2"] in ("True", "False")
        assert 0.99 < float(r["alpha"]) < 1 and float(r["step_size"]) > 0
        assert float(r["loss"]) == pytest.approx(float(r["ce"]) + float(r["penalty"]), rel=1e-6)
        assert 0 <= float(r["val_top1"]) <= 100
    assert [int(r["k"]) for r in slr] == sorted(int(r["k"]) for r in slr)
    hard = next(r for r in rows if r["event"] == "hard_prune")
    assert float(hard["sparsity"]) == pytest.approx(0.9, abs=1e-4)
    assert float(hard["top1_hard"]) == pytest.approx(s["top1_hard"])
    assert [int(r["epoch"]) for r in rows if r["event"] == "retrain"] == [1, 2]
    assert s["finetune_epochs"] == 3 + 2
    with open(tmp_path / "layers.csv") as f:
        layers = {r["layer"]: r for r in csv.DictReader(f)}
    assert float(layers["features.3"]["density"]) == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("overrides, check", [
    (["method.granularity=nm", "method.nm=[2,4]", "sparsity=0.5"], "nm"),
    (["method.granularity=filter", "sparsity=0.5"], "filter"),
    (["method.granularity=column", "sparsity=0.6"], "column"),
])
def test_slr_structured_schemes_hard_prune_exactly(tmp_path, overrides, check):
    s = run(make_cfg(["method=slr", "method.epochs=2", "method.retrain_epochs=0", *overrides,
                      *LENET]), tmp_path, show=False)
    assert s["status"] == "ok" and "top1_hard" in s
    model = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    if check == "nm":  # every group of 4 consecutive inputs keeps exactly 2
        for name in ("classifier.1.weight", "classifier.3.weight"):
            groups = model[name].reshape(-1, 4)
            assert ((groups != 0).sum(1) == 2).all(), name
        conv = model["features.3.weight"].permute(0, 2, 3, 1)  # 6 inputs: a group of 4, one of 2
        assert ((conv[..., :4] != 0).sum(-1) == 2).all() and (conv[..., 4:] != 0).all()
    elif check == "filter":
        assert s["compacted"] and s["params"] < s["params_dense"]
        assert s["compaction_max_abs_diff"] < 1e-4
    else:
        assert s["sparsity"] >= 0.6 - 1e-3


@pytest.mark.parametrize("override, message", [
    ("method.criterion=l1", "method.criterion=l1"),
    ("method.scope=global", "method.scope=global"),
    ("method.rho=0", "method.rho=0"),
    ("method.M=0", "method.M=0"),
    ("method.initial_step=-1", "method.initial_step=-1"),
    ("method.r=-0.5", "method.r=-0.5"),
    ("method.epochs=0", "method.epochs=0"),
    ("method.retrain_epochs=-1", "method.retrain_epochs=-1"),
    ("method.layer_rates=[features.3:2]", "features.3:2"),
])
def test_slr_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        run(make_cfg(["method=slr", override, *LENET]), tmp_path, show=False)
