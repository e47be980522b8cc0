"""The papers' claims that `scripts/verdicts.py` tests, one module per claim: its words, its runs
per tier, its settings against the paper's and its verdict rule. A new claim is one module here,
listed in CLAIMS. Shared: base.py (comparisons, tiers, settings, verdict words), tiers.py (what
each tier runs), running.py (the runs and results.json), document.py (docs/results.md and the
README block)."""
from __future__ import annotations

from typing import Dict

from claims import autocompress, gradual, ice, slr
from claims.base import Claim

CLAIMS: Dict[str, Claim] = {c.kind: c for c in (ice.CLAIM, slr.CLAIM, autocompress.CLAIM,
                                                  gradual.CLAIM)}  # in the document's order
