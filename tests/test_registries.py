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


OPTION_YAMLS = sorted(str(p.relative_to(CONF)) for group in ("model", "dataset", "hardware",
                                                               "logger", "method")
                      for p in (CONF / group).glob("*.yaml"))


def schema_of(group: str, data: dict):
    """The schema an option's YAML merges (`/schema/<group>@_here_: <name>`)."""
    import prunekit  # noqa: F401  (fills the registries)
    from prunekit.config import SCHEMAS

    entry = next(e for e in data.get("defaults", []) if isinstance(e, dict))
    (path, name), = entry.items()
    return METHODS[name].schema if group == "method" else SCHEMAS[f"{group}/{name}"]


@pytest.mark.parametrize("path", OPTION_YAMLS)
def test_an_options_yaml_holds_only_what_differs_from_its_schema(path):
    """What a YAML repeats of its schema's defaults drifts when the default changes: a YAML of
    the model, dataset, hardware, logger and method groups holds only what differs."""
    import yaml
    from omegaconf import OmegaConf
    from test_methods import differing

    from prunekit.tracking import TRACKERS

    group = path.split("/")[0]
    data = yaml.safe_load((CONF / path).read_text()) or {}
    if group == "logger":  # each tracker's section, against its own schema
        sections = [(data[name], TRACKERS[name].schema) for name in data]
    else:
        sections = [(data, schema_of(group, data))]
    for values, schema in sections:
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        assert differing(values, defaults) == [], "keys repeating (or unknown to) the schema"
