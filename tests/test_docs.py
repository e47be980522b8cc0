"""Docs that cannot go stale: every `prune-run` command shown in README.md or docs/ (a line of a
shell block, or inline code) is composed as `prune-run ... --cfg job` composes it (no training)
and validated, each job of a sweep on its own, so a renamed key, group option or preset in the
code fails here. The refusals that docs/errors.md shows are meant to fail: that page's plain
blocks and inline examples are the ones left out."""
import itertools
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from prunekit.config import validate
from prunekit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md")
                                     if p.name != "errors.md")]
SHELL_FENCES = ("bash", "sh", "shell", "console")
FLAGS = ("-m", "--multirun", "--cfg", "job", "--help", "-h")


def documented_commands(text: str):
    """(line, the command's arguments) of each `prune-run` line in the page's shell blocks,
    continuation lines joined, comments left out."""
    lines, fence, out, i = text.split("\n"), None, [], 0
    while i < len(lines):
        opened = re.match(r"^\s*```(\w*)", lines[i])
        if opened:
            fence = None if fence is not None else opened.group(1)
        elif fence in SHELL_FENCES:
            command = re.sub(r"^(\$ |\.venv/bin/)", "", lines[i].strip())
            start = i + 1
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            if command == "prune-run" or command.startswith("prune-run "):
                args = shlex.split(command, comments=True)[1:]
                out.append((start, [a for a in args if a not in FLAGS]))
        i += 1
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for m in re.finditer(r"`(prune-run [^`]*)`", prose):
        args = shlex.split(m.group(1).replace("\n", " "))[1:]
        out.append((prose.count("\n", 0, m.start()) + 1, [a for a in args if a not in FLAGS]))
    return out


def jobs(overrides):
    """Each job of a command: a sweep's every value, one job per combination."""
    axes = []
    for o in OverridesParser.create().parse_overrides(overrides):
        axes.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
                    if o.is_sweep_override() else [o.input_line])
    return [list(job) for job in itertools.product(*axes)]


def compose_and_validate(overrides) -> None:
    with initialize_config_module(version_base="1.3", config_module="prunekit.conf"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)


COMMANDS = [(f"{page.relative_to(ROOT)}:{line}", args) for page in PAGES
            for line, args in documented_commands(page.read_text())]


def test_the_docs_show_the_commands_this_test_composes():
    assert len(COMMANDS) >= 45  # the pages' examples were found
    assert any(where.startswith("README.md") for where, _ in COMMANDS)


@pytest.mark.parametrize("where, args", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_composes_and_validates(where, args):
    """Each job composes and validates; the one refusal allowed is of the user's own data
    folder (`dataset.path=/data/imagenet`), which is not on this machine."""
    for job in jobs(args):
        try:
            compose_and_validate(job)
        except ConfigError as e:
            if not str(e).startswith("dataset.path="):
                raise


def test_a_renamed_key_in_the_docs_fails():
    page = ("```bash\nprune-run -m method=oneshot,gradual method.granulrity=filter   # typo\n```\n"
            "and inline: `prune-run sparsity=1.5\nseed=0`.\n")
    (_, args), (line, inline) = documented_commands(page)
    assert line == 4 and inline == ["sparsity=1.5", "seed=0"]
    assert jobs(args) == [["method=oneshot", "method.granulrity=filter"],
                          ["method=gradual", "method.granulrity=filter"]]
    with pytest.raises(Exception, match="granulrity"):
        compose_and_validate(jobs(args)[0])
    with pytest.raises(ConfigError, match="sparsity"):
        compose_and_validate(["sparsity=1.5"])
