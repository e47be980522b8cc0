"""The one exception for bad user input, the helpers its one-line messages use, and the checks of
one key (`choice`, `at_least`, `positive`, `fraction`) that every schema's check is written with."""
from __future__ import annotations

import difflib

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """Bad user input. The message is one line: the key, what is wrong, how to fix it."""


def did_you_mean(word: str, candidates) -> str:
    """' (did you mean `x`?)' for a near miss of one of `candidates`, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def closest(word: str, candidates, n: int = 3) -> str:
    """' (closest: a, b, c)': the `n` names of a long list nearest to `word` (or '')."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=0.5)
    return f" (closest: {', '.join(close)})" if close else ""


def first_line(err: BaseException, limit: int = 120) -> str:
    """An exception's first non-empty line, at most `limit` characters; its type's name when it
    says nothing (what a one-line error quotes of a failure it reports)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else type(err).__name__


def choice(cfg, key: str, choices) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}={value} is not one of {', '.join(choices)}"
                          f"{did_you_mean(value, choices)}")


def at_least(cfg, key: str, low, what: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and value < low:
        raise ConfigError(f"{key}={value} must be >= {low}{what}")


def a_path(cfg, key: str, env: str) -> None:
    """`key` names a folder: an empty value (its environment variable set to nothing) would
    put files in the current directory."""
    if not str(OmegaConf.select(cfg, key) or "").strip():
        raise ConfigError(f"{key} is empty ({env} is set to nothing?): unset {env} or set it, "
                          f"or {key}, to a folder")


def positive(cfg, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and not value > 0:
        raise ConfigError(f"{key}={value} must be > 0")


def fraction(cfg, key: str, low_open: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    if not ((0.0 < value) if low_open else (0.0 <= value)) or not value <= 1.0:
        raise ConfigError(f"{key}={value} must be in {'(' if low_open else '['}0, 1]")
