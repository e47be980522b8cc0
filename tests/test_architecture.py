"""The layering docs/architecture.md describes, checked on the source: a module imports only from
lower layers (or its own package), never a private name of another module, and no code outside
a method's own unit tests that method's name."""
import ast
from pathlib import Path

import pytest

from prunekit.config import METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "prunekit"

# Lowest first. A module may import from a lower layer, or from its own package (a method from
# methods.context, a data set from data.build).
LAYERS = [
    ("journaled",),
    ("errors", "files", "settings", "clock", "metrics", "state", "sparsity.masks",
     "sparsity.layernorm", "sparsity.attention",
     "sparsity.schedules", "methods.autocompress_search"),
    ("registry", "distributed", "html_report", "latency_config"),
    ("targets",),
    ("config", "console", "sparsity", "hardware"),
    ("plan",),
    ("data", "record", "artifacts", "run_dir", "deploy"),
    ("models",),
    ("resume", "train", "tracking"),
    ("methods",),
    ("measurement",),
    ("runner", "export", "report"),
    ("cli", ""),  # "": the package's __init__
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def layer_of(module: str) -> int:
    """The layer of the longest prefix of `module` listed in LAYERS."""
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            hit = name == "" if module == "" else (module == name or module.startswith(name + "."))
            if hit and (best is None or len(name) > best[1]):
                best = (i, len(name))
    assert best is not None, f"prunekit.{module} has no layer in LAYERS"
    return best[0]


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "prunekit":
            for alias in node.names:  # from prunekit import export: the module prunekit.export
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prunekit."):
            yield node.module[len("prunekit."):], node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("prunekit"):
                    yield alias.name[len("prunekit."):], node


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) or "__init__" for p in SOURCES])
def test_a_module_imports_only_from_lower_layers_and_no_private_names(path):
    me = module_name(path)
    package = me.rpartition(".")[0]
    for target, node in imports(path):
        if target.startswith(me + ".") or (package and (target == package
                                                        or target.startswith(package + "."))):
            continue  # its own package (or, for a package's __init__, its modules)
        assert layer_of(target) < layer_of(me), f"prunekit.{me} imports prunekit.{target}"
        if isinstance(node, ast.ImportFrom):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"prunekit.{me} imports private {private} from prunekit.{target}"


def string_tests(names) -> list:
    """(module, line, name) of every comparison of a string constant among `names` (==, !=, in,
    not in; the constant alone or in a literal tuple, list or set) in prunekit/."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                sides += [e for s in sides if isinstance(s, (ast.Tuple, ast.List, ast.Set))
                          for e in s.elts]  # name in ("ice", "slr")
                found += [(module_name(path), node.lineno, s.value) for s in sides
                          if isinstance(s, ast.Constant) and s.value in names]
    return found


def test_no_method_name_is_tested_outside_its_own_unit():
    found = [(me, line, name) for me, line, name in string_tests(set(METHODS))
             if not (me == f"methods.{name}" or me.startswith(f"methods.{name}_"))]
    assert found == []


@pytest.mark.parametrize("registry, home", [("TARGET_KINDS", "targets"),
                                            ("GRANULARITIES", "sparsity.units")])
def test_a_concept_is_asked_not_switched_on_by_its_name(registry, home):
    """Target kinds and granularities are classes that answer what callers ask: at most 4
    comparisons with one of their names remain, all in the module that defines them."""
    from prunekit.sparsity.units import GRANULARITIES
    from prunekit.targets import TARGET_KINDS

    names = set({"TARGET_KINDS": TARGET_KINDS, "GRANULARITIES": GRANULARITIES}[registry])
    found = string_tests(names)
    assert len(found) <= 4 and all(me == home for me, _, _ in found), found


def test_a_members_role_is_an_object_not_a_string():
    """A channel group's members say their role (sparsity.groups.Role) and the group answers
    outputs(), inputs(), norms(): no role is compared by its name, nor a `kind` string read."""
    from prunekit.sparsity.groups import Role

    assert string_tests({r.value for r in Role}) == []
    reads = [(module_name(path), node.lineno) for path in SOURCES
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr == "kind"
             and isinstance(node.value, ast.Name) and node.value.id in ("m", "mem", "member")]
    assert reads == []


def test_config_keeps_only_what_is_common():
    """config.py holds the shared schemas and validation: no logger, model or data set is named
    there (each declares its own schema and checks beside its code), and it stays small."""
    import re

    import prunekit  # noqa: F401  (fills the registries)
    from prunekit.data import DATASETS
    from prunekit.models import MODELS
    from prunekit.tracking import TRACKERS

    text = (PACKAGE / "config.py").read_text()
    assert len(text.splitlines()) <= 320
    named = [n for n in (*TRACKERS, *MODELS, *DATASETS)
             if re.search(rf"\b{re.escape(n)}\b", text)]
    assert named == []


def test_the_architecture_map_quotes_todays_sizes(tmp_path):
    """docs/architecture.md's figures are today's (`make test` runs the same check), and the
    check fails on a figure that is not."""
    import subprocess
    import sys

    root = PACKAGE.parent
    script = [sys.executable, str(root / "scripts" / "code_stats.py")]
    ok = subprocess.run([*script, "--check", str(root / "docs" / "architecture.md")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "architecture.md"
    text = (root / "docs" / "architecture.md").read_text()
    stale.write_text(text.replace(" functions, ", " functions (stale), ", 1))
    bad = subprocess.run([*script, "--check", str(stale)], capture_output=True, text=True)
    assert bad.returncode == 1 and "not today's" in bad.stderr


def test_no_function_is_longer_than_fifty_lines():
    """A function longer than 50 lines (def to last line, as scripts/code_stats.py counts) does
    more than one job: none in prunekit/."""
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 50:
                    long.append(f"{module_name(path)}:{node.name}")
    assert long == []


# Functions below the runner that take the run's whole config (a parameter named `cfg`, which
# names nothing else: a section is `options`, `dataset`, `hardware`...). They read it as the
# configuration itself, before or beside the plan: its resolution into the plan, its hashes,
# the summary of a run that failed before it had one, the
# trackers' copy of it, and the target's resolution that plan_of and the checks share. Every
# other function takes the RunPlan (plan.py) or the part of it it needs. Validation (`validate`
# and every method's, target's, model's, data set's and tracker's `check*`, with errors.py's
# key helpers, and check_run_dir's comparison with a finished run) reads it too: it runs
# before there is a plan.
WHOLE_CONFIG = {
    "plan:plan_of", "settings:experiment_settings", "settings:result_settings",
    "settings:config_hash", "record:summary_identity", "record:write_failed_summary",
    "tracking:run_names", "tracking:start", "targets:target_kind",
    "targets:target_value", "targets:target_fraction", "targets:value",
}
VALIDATION_HELPERS = {"errors:choice", "errors:at_least", "errors:a_path", "errors:positive",
                      "errors:fraction", "config:validate"}
ABOVE_THE_RUNNER = {"cli", "runner"}


def test_below_the_runner_no_function_takes_the_whole_config():
    """The configuration is resolved once into a RunPlan (plan.py); below runner.py, only the
    functions named in WHOLE_CONFIG (12) and the validation take the whole DictConfig."""
    found = set()
    for path in SOURCES:
        me = module_name(path)
        if me in ABOVE_THE_RUNNER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    a.arg == "cfg" for a in node.args.args + node.args.kwonlyargs):
                if not node.name.startswith("check"):
                    found.add(f"{me}:{node.name}")
    assert found - VALIDATION_HELPERS == WHOLE_CONFIG and len(WHOLE_CONFIG) == 12


def test_methods_change_the_context_through_its_operations():
    """A method changes the Context's state through its declared operations (use_data,
    compare_with, aim_at, prune_to, ...), never by assigning a field of it."""
    import dataclasses

    from prunekit.methods.context import Context

    fields = {f.name for f in dataclasses.fields(Context)}
    found = []
    for path in SOURCES:
        me = module_name(path)
        if not me.startswith("methods.") or me == "methods.context":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            found += [(me, node.lineno, t.attr) for t in targets
                      if isinstance(t, ast.Attribute) and t.attr in fields
                      and not (isinstance(t.value, ast.Name) and t.value.id == "self")]
    assert found == []
