"""The one exception for bad user input, and the near-miss hint its messages use."""
from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """Bad user input. The message is one line: the key, what is wrong, how to fix it."""


def did_you_mean(word: str, candidates) -> str:
    """' (did you mean `x`?)' for a near miss of one of `candidates`, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""
