"""AutoCompress's claim (Liu, Ma et al., AAAI 2020): ~52-54x fewer parameters at no accuracy
loss, ahead of hand-set structured pruning; against ADMM and iterative filter pruning at >= 10x
fewer parameters, the same training epochs."""
from __future__ import annotations

from typing import List, Sequence

from claims.base import (
    HOLDS,
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
    e, sp = b.filter_epochs, b.filter_sparsity
    return [Comparison(
        "autocompress", "AutoCompress vs ADMM and iterative filter pruning", b.model,
        [("iterative (filter)", ["method=iterative", "method.granularity=filter",
                                 f"sparsity={sp}", f"method.steps={e}",
                                 "method.finetune_epochs=1"]),
         ("ADMM (filter)", ["method=admm", "method.granularity=filter", f"sparsity={sp}",
                            f"method.iterations={e - 1}", "method.retrain_epochs=1"]),
         ("AutoCompress", ["method=autocompress", f"sparsity={sp}", f"method.rounds={e // 2}",
                           "method.iterations=1", "method.finetune_epochs=1"])],
        f"{sp:.0%} of the prunable weights (>= 10x fewer parameters), {e} training epochs "
        f"each: iterative {e} steps x 1 epoch, ADMM {e - 1} iterations + 1 retrain epoch, "
        f"AutoCompress {e // 2} rounds x (1 ADMM epoch + 1 fine-tune epoch) plus its "
        "search's quick evaluations.")]


def settings(runs: Sequence[dict]) -> List[Setting]:
    ac = runs[-1]
    admm = hp(ac, "rounds", 0) * hp(ac, "iterations", 0) * hp(ac, "epochs_per_iteration", 1)
    return [Setting("ADMM training", f"{admm} epochs in {hp(ac, 'rounds')} rounds",
                    "to convergence each round (the NNI port: 30 iterations x 5 epochs a "
                    "round)", admm >= 30 * 5 * max(hp(ac, "rounds", 1), 1)),
            Setting("compression", f"{ac['compression_ratio']:.1f}x", "52-54x",
                    ac["compression_ratio"] >= 40, decisive=False), data_setting(runs)]


def judge(runs: Sequence[dict]) -> Verdict:
    """AutoCompress's claim holds when it reaches >= 10x fewer parameters within 1 point of the
    dense model and beats both hand-set baselines' top-1 at that compression."""
    *baselines, ac = runs
    loss = ac["top1_dense"] - ac["top1"]
    figures = {"compression": ac["compression_ratio"], "flops": ac["theoretical_speedup"],
               "top1_loss": loss}
    compressed = ac["compression_ratio"] >= 10.0
    lossless = loss <= 1.0
    best = all(ac["top1"] >= b["top1"] for b in baselines)
    verdict = (HOLDS if compressed and lossless and best
               else PART if compressed and (lossless or best) else NOT)
    why = (f"{ac['compression_ratio']:.1f}x fewer parameters, {loss:.2f} points below dense; "
           + ", ".join(f"{b['label']} {b['top1']:.2f} % at {b['compression_ratio']:.1f}x"
                       for b in baselines))
    return verdict, why, figures


def headline(runs: Sequence[dict], f: dict) -> str:
    ac = runs[-1]
    rounds = hp(ac, "rounds", 0)
    epochs = rounds * (hp(ac, "iterations", 0) * hp(ac, "epochs_per_iteration", 1)
                       + hp(ac, "finetune_epochs", 0))
    return (f"{f['compression']:.1f}x fewer parameters, {f['flops']:.1f}x fewer FLOPs, "
            f"{-f['top1_loss']:+.2f} points vs dense, in {epochs} training epochs "
            f"({rounds} rounds)")


verdict_autocompress = judge
CLAIM = Claim(
    "autocompress", "AutoCompress (Liu, Ma et al., AAAI 2020)",
    "~52-54x fewer parameters at no accuracy loss (VGG-16 / ResNet-18, CIFAR-10), ahead of "
    "hand-set structured pruning", comparisons, settings, judge, headline)
