"""Every registry on one idiom: each entry has its YAML, each YAML its entry, unknown names fail
in one line, and a second entry under a taken name is refused."""
from pathlib import Path

import pytest

from conftest import make_cfg
from prunekit.config import METHODS
from prunekit.data import DATASETS
from prunekit.errors import ConfigError
from prunekit.models import MODELS
from prunekit.registry import Registry
from prunekit.sparsity.criteria import CRITERIA

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {"model": MODELS, "dataset": DATASETS, "method": METHODS}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_entry_has_a_yaml_and_every_yaml_an_entry(group):
    yamls = {p.stem for p in (CONF / group).glob("*.yaml")}
    assert yamls == set(GROUPS[group])
    for name in sorted(yamls):  # and each composes to itself
        assert make_cfg([f"{group}={name}"])[group].name == name


@pytest.mark.parametrize("registry, key", [(MODELS, "model.name"), (DATASETS, "dataset.name"),
                                           (METHODS, "method.name"),
                                           (CRITERIA, "method.criterion")])
def test_an_unknown_name_is_one_line_naming_the_key_and_the_nearest(registry, key):
    name = sorted(registry)[0]
    with pytest.raises(ConfigError) as err:
        registry.choose(name + "x", key)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{key}={name}x")
    assert "did you mean" in msg and ", ".join(sorted(registry)) in msg


def test_a_taken_name_is_refused():
    r = Registry("thing")
    r.register("a")(len)
    r.register("a")(len)  # the same entry again (a module imported twice) is fine
    with pytest.raises(ValueError, match="two things are named 'a'"):
        r.register("a")(abs)
