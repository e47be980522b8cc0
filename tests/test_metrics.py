"""Parameter, sparsity and FLOP counts on a model whose numbers are known by hand."""
import pytest
import torch
import torch.nn as nn

from prunekit.metrics import (
    count_nonzero,
    count_params,
    effective_flops,
    layer_flops,
    layer_rows,
    prunable_sparsity,
)


def tiny():
    torch.manual_seed(0)
    # conv: 2 x 1 x 3 x 3 = 18 weights; linear: 32 x 3 + 3 = 99 parameters
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3))


X = torch.randn(1, 1, 4, 4)
CONV_FLOPS = 2 * 2 * 1 * 9 * 16  # 2 * Cout * Cin * k^2 * H * W
LINEAR_FLOPS = 2 * 32 * 3


def test_params_and_nonzero():
    m = tiny()
    assert count_params(m) == 18 + 99
    with torch.no_grad():
        m[0].weight[0] = 0  # 9 zeros
    assert count_nonzero(m) == 117 - 9
    assert prunable_sparsity(m, {"0": 18}) == pytest.approx(0.5)
    assert prunable_sparsity(m, {"0": 18, "3": 96}) == pytest.approx(9 / 114)


def test_flops_by_hand():
    m = tiny()
    flops = layer_flops(m, X)
    assert flops["0"] == CONV_FLOPS
    assert flops["3"] == LINEAR_FLOPS
    assert flops["__total__"] == CONV_FLOPS + LINEAR_FLOPS


def test_effective_flops_scale_with_weight_density():
    m = tiny()
    with torch.no_grad():
        m[0].weight[0] = 0
        m[3].weight[:, :8] = 0  # a quarter of the linear weights
    eff = effective_flops(m, X)
    assert eff["0"] == pytest.approx(CONV_FLOPS / 2)
    assert eff["3"] == pytest.approx(LINEAR_FLOPS * 0.75)
    assert eff["__total__"] == pytest.approx(CONV_FLOPS / 2 + LINEAR_FLOPS * 0.75)


def test_flops_of_a_physically_smaller_layer_are_real():
    small = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16, 3))
    assert layer_flops(small, X)["__total__"] == CONV_FLOPS / 2 + 2 * 16 * 3


def test_layer_rows():
    m = tiny()
    dense_shapes = {"0": (2, 1, 3, 3), "3": (3, 32)}
    dense_flops = {"0": CONV_FLOPS, "3": LINEAR_FLOPS}
    with torch.no_grad():
        m[0].weight[1] = 0
    rows = {r["layer"]: r for r in layer_rows(m, dense_shapes, dense_flops,
                                              effective_flops(m, X), ["0"])}
    assert rows["0"]["prunable"] and not rows["3"]["prunable"]
    assert rows["0"]["nonzero"] == 9 and rows["0"]["density"] == pytest.approx(0.5)
    assert rows["0"]["shape_dense"] == "2x1x3x3"
    assert rows["0"]["flops"] == CONV_FLOPS // 2 and rows["3"]["flops"] == LINEAR_FLOPS
