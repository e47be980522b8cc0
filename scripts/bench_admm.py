"""ADMM's and SLR's costs side by side on one model: a plain training step, the same step with the
ADMM penalty ρ/2 Σ‖W − Z + U‖², SLR's step (the same penalty, the batch CE kept for its checks),
a Z/U update (the projection), SLR's end-of-epoch round (two checks, the projection, up to two
multiplier updates), and one AutoCompress quick evaluation.

    python scripts/bench_admm.py [--model resnet18] [--batch 64] [--image-size 8] [--repeats 20]

Prints milliseconds and the ratios that matter: penalised step / plain step (the W-step's
overhead), SLR step / plain step, update / step and SLR round / ADMM update. Times are medians
over `--repeats` after a warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from benchutil import emit
from omegaconf import OmegaConf

from prunekit.methods.admm import AdmmState
from prunekit.methods.autocompress import constraints_for, search_space, undone
from prunekit.methods.autocompress_search import initial_action
from prunekit.methods.slr import SlrState
from prunekit.models import build_model, prunable_layers, residual_blocks
from prunekit.sparsity.projection import LayerConstraint, hard_prune
from prunekit.sparsity.pruner import Pruner, PruneSpec


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=8)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": args.model, "in_channels": 3, "small_input": None})
    model = build_model(cfg, args.classes, args.image_size)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    y = torch.randint(0, args.classes, (args.batch,))
    layers = prunable_layers(model)
    pruner = Pruner(model, PruneSpec("filter+column"), layers, x[:1],
                    blocks=list(residual_blocks(model)))
    cons = [LayerConstraint.for_rate(pruner.weight(n), n, "unstructured", args.sparsity,
                                     pruner.dense_numel[n]) for n in pruner.layer_names]
    state = AdmmState(model, cons, rho=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    slr = SlrState(model, cons, rho=1.0, M=300, r=0.1, initial_step=0.01)

    def step(penalty: bool, surrogate: bool = False) -> None:
        loss = F.cross_entropy(model(x), y)
        if surrogate:
            slr.add_ce(loss.detach())
            loss = loss + slr.penalty()
        elif penalty:
            loss = loss + state.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    plain = median_ms(lambda: step(False), args.repeats)
    penalised = median_ms(lambda: step(True), args.repeats)
    slr_step = median_ms(lambda: step(True, surrogate=True), args.repeats)
    plain_again = median_ms(lambda: step(False), args.repeats)  # drift check
    update = median_ms(state.update, max(3, args.repeats // 4), warmup=1)
    slr_round = median_ms(lambda: slr.update(slr.epoch_ce()), max(3, args.repeats // 4),
                          warmup=1)

    space = search_space(pruner, ("filter", "column"))
    units = space.units
    action = initial_action(space, args.sparsity, 0.99)

    def quick_evaluation() -> None:
        with undone(pruner):
            hard_prune(constraints_for(pruner, units, action), pruner)
            model.eval()
            with torch.no_grad():
                model(x)
            model.train()

    quick = median_ms(quick_evaluation, max(3, args.repeats // 4), warmup=1)
    base = min(plain, plain_again)
    out = {"model": args.model, "batch": args.batch, "image_size": args.image_size,
           "threads": torch.get_num_threads(), "step_ms": base, "penalised_step_ms": penalised,
           "penalty_overhead": penalised / base, "zu_update_ms": update,
           "update_per_step": update / base, "slr_step_ms": slr_step,
           "slr_step_overhead": slr_step / base, "slr_round_ms": slr_round,
           "slr_round_vs_admm_update": slr_round / update, "quick_evaluation_ms": quick}
    emit(out, args.json)


if __name__ == "__main__":
    main()
