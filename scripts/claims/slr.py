"""SLR's claim (Gurevin et al. 2020, 2023): accurate at the hard prune without retraining, where
ADMM's hard-pruned model is not; SLR against ADMM at 0.9 unstructured, the same epochs."""
from __future__ import annotations

from typing import List, Sequence

from claims.base import (
    HOLDS,
    NO_LATENCY,
    NOT,
    PART,
    Budget,
    Claim,
    Comparison,
    Setting,
    Verdict,
    data_setting,
    hp,
)


def comparisons(b: Budget) -> List[Comparison]:
    return [Comparison(
        "slr", "SLR vs ADMM at 0.9 unstructured", b.model,
        [("ADMM", ["method=admm", "sparsity=0.9", f"method.iterations={b.slr_epochs}",
                   "method.retrain_epochs=1", *NO_LATENCY]),
         ("SLR", ["method=slr", "sparsity=0.9", f"method.epochs={b.slr_epochs}",
                  "method.retrain_epochs=1", *NO_LATENCY])],
        f"{b.slr_epochs} epochs of ADMM (one Z/U update per epoch) against {b.slr_epochs} "
        "epochs of SLR, each then hard-pruned and retrained 1 epoch with the mask fixed.")]


def settings(runs: Sequence[dict]) -> List[Setting]:
    epochs = hp(runs[1], "epochs", 0)
    return [Setting("SLR training before the hard prune", f"{epochs} epochs",
                    "100 epochs (ResNet-18)", epochs >= 100), data_setting(runs)]


def verdict_slr(admm: dict, slr: dict) -> Verdict:
    """SLR's claim holds when its hard-pruned top-1 is within 2 points of its retrained top-1
    (accurate without retraining) and above ADMM's hard-pruned top-1."""
    hard, retrained = slr["top1_hard"], slr["top1_retrain1"]
    figures = {"slr_hard": hard, "admm_hard": admm["top1_hard"], "slr_retrain1": retrained,
               "admm_retrain1": admm["top1_retrain1"]}
    accurate = hard >= retrained - 2.0
    better = hard > admm["top1_hard"]
    verdict = HOLDS if accurate and better else PART if accurate or better else NOT
    why = (f"SLR's hard-pruned model is {hard - admm['top1_hard']:+.2f} points against ADMM's, "
           f"and {retrained - hard:.2f} points below its own accuracy after one retrain epoch"
           + ("" if accurate else " (within 2 counts as accurate without retraining here)")
           + f"; one retrain epoch brings SLR to {retrained:.2f} % and ADMM to "
           f"{admm['top1_retrain1']:.2f} %")
    return verdict, why, figures


def judge(runs: Sequence[dict]) -> Verdict:
    return verdict_slr(*runs)


def headline(runs: Sequence[dict], f: dict) -> str:
    return (f"hard-prune top-1 SLR {f['slr_hard']:.2f} % vs ADMM {f['admm_hard']:.2f} %; "
            f"after 1 retrain epoch {f['slr_retrain1']:.2f} % vs {f['admm_retrain1']:.2f} %")


CLAIM = Claim(
    "slr", "SLR (Gurevin et al. 2020, 2023)",
    "high accuracy at the hard prune without retraining, where ADMM's hard-pruned model is not "
    "(ResNet-18, CIFAR-10)", comparisons, settings, judge, headline,
    extra_columns=(("hard prune top-1 %", "top1_hard"), ("after 1 retrain epoch %",
                                                         "top1_retrain1")))
