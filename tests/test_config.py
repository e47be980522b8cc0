"""Config composition and validation: every bad input is one ConfigError line naming the key."""
import pytest
from hydra.errors import ConfigCompositionException

from conftest import make_cfg
from prunekit.config import validate
from prunekit.errors import ConfigError


def test_default_config_composes_and_validates():
    cfg = make_cfg([])
    validate(cfg)
    assert (cfg.model.name, cfg.dataset.name, cfg.method.name, cfg.hardware.name) == (
        "resnet18", "digits", "gradual", "auto")
    assert cfg.train.batch_size == cfg.dataset.batch_size
    assert cfg.pretrain.epochs == cfg.dataset.pretrain_epochs


def test_specialisations_apply_only_to_their_pair():
    assert make_cfg([]).method.frequency == 10  # gradual on digits
    assert make_cfg(["dataset=cifar10"]).method.frequency == 100  # the paper-scale default
    assert make_cfg(["method.frequency=7"]).method.frequency == 7  # the command line wins
    assert make_cfg(["model=lenet5"]).pretrain.epochs == 20


@pytest.mark.parametrize("overrides,key", [
    (["sparsity=1.0"], "sparsity"),
    (["sparsity=-0.1"], "sparsity"),
    (["pretrain.epochs=-1"], "pretrain.epochs"),
    (["method=oneshot", "method.finetune_epochs=-2"], "method.finetune_epochs"),
    (["method.epochs=-1"], "method.epochs"),
    (["method.lr=0"], "method.lr"),
    (["dataset.subset=0"], "dataset.subset"),
    (["dataset.val_fraction=1.0"], "dataset.val_fraction"),
    (["method.granularity=rows"], "method.granularity"),
    (["method.criterion=hessian"], "method.criterion"),
    (["method=iterative", "method.schedule=blockwise"], "method.schedule"),
    (["method=oneshot", "method.granularity=nm", "sparsity=0.7"], "sparsity"),
    (["method=gradual", "method.granularity=nm"], "method.granularity"),
    (["method.end_step=5", "method.begin_step=5"], "method.end_step"),
    (["method.initial_sparsity=0.9"], "method.initial_sparsity"),
    (["dataset=imagefolder"], "dataset.path"),
    (["dataset=imagefolder", "dataset.path=/no/such/dir"], "dataset.path"),
    (["model.checkpoint=/no/such/file.pt"], "model.checkpoint"),
    (["+method.typo=1"], "method.typo"),
    (["+extra_key=1"], "extra_key"),
    (["hardware.latency.batch_sizes=[]"], "hardware.latency.batch_sizes"),
    (["hardware.device=tpu"], "hardware.device"),
    (["checkpoint.keep=0"], "checkpoint.keep"),
])
def test_bad_values_fail_validation_with_one_line_naming_the_key(overrides, key):
    cfg = make_cfg(overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert key in msg and "\n" not in msg


@pytest.mark.parametrize("overrides", [["sparsity=abc"], ["seed=1.5"], ["method.fooo=1"],
                                       ["method=nosuch"]])
def test_wrong_types_and_unknown_keys_fail_at_composition(overrides):
    with pytest.raises(ConfigCompositionException):
        make_cfg(overrides)


def test_ice_baseline_experiment_preset():
    cfg = make_cfg(["experiment=ice_baseline"])
    validate(cfg)
    assert (cfg.method.name, cfg.method.schedule, cfg.method.granularity) == (
        "iterative", "blockwise", "filter")
    assert cfg.method.lr == 0.001 and cfg.train.lr_schedule == "constant"
    assert make_cfg(["experiment=ice_baseline", "sparsity=0.6"]).sparsity == 0.6
    # as the reference code runs it: distilling at T = 2, plain momentum, one validation a step
    assert cfg.method.distill and cfg.method.distill_temperature == 2.0
    assert cfg.train.nesterov is False and cfg.method.validate_pruned is False
    plain = make_cfg(["experiment=ice_baseline_plain"])
    validate(plain)
    assert plain.method.distill is False
    differ = {k for k in cfg.method if cfg.method[k] != plain.method[k]}
    assert differ == {"distill"} and plain.train == cfg.train
    paper = make_cfg(["experiment=ice_paper"])
    assert paper.method.distill and paper.train.nesterov is False
    with pytest.raises(ConfigError, match="method.distill_temperature"):
        validate(make_cfg(["experiment=ice_baseline", "method.distill_temperature=0"]))


def test_nm_with_matching_sparsity_is_valid():
    validate(make_cfg(["method=oneshot", "method.granularity=nm", "method.nm=[1,4]",
                       "sparsity=0.75"]))
