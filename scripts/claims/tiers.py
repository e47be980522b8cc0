"""The tiers: what each runs (every claim's comparisons from the tier's Budget), on what data
and hardware, and the GPU tier's jobs, each fitting one device call."""
from __future__ import annotations

from typing import Callable, Dict, List

from claims import CLAIMS
from claims.base import Budget, Comparison, Tier


def comparisons(b: Budget) -> List[Comparison]:
    return [c for claim in CLAIMS.values() for c in claim.comparisons(b)]


def cpu_tier() -> Tier:
    return Tier(
        name="cpu",
        common=["dataset=fashion_mnist", "dataset.image_size=16", "pretrain.epochs=15",
                "seed=0", "hardware=cpu", "hardware.latency.max_seconds=10",
                "hardware.channel_multiple=1"],
        budget="under 2 hours of comparisons on 2 CPU cores",
        notes=["Images are shrunk to 16x16 (`dataset.image_size=16`): a ResNet step costs about "
               "3x less than at 28x28, which is what lets the whole set fit.",
               "resnet32 (15 residual blocks) for ICE: the standard pipeline fine-tunes one full "
               "epoch per block, 15 epochs, three times over (two baselines and ICE's final "
               "run). The paper prunes 27 to 75 blocks: the GPU tier's jobs.",
               "resnet20 for the other three: their claims do not depend on depth, and its "
               "epoch costs about 0.6 of resnet32's.",
               "`hardware.channel_multiple=1`: the papers' kept channel counts (the CPU default "
               "is 8 since issue 44)."],
        comparisons=comparisons(Budget({"ice": "resnet32"}, "resnet20", agp_epochs=4)))


# The GPU tier's jobs on one H200, estimated from what the first GPU runs measured (dense
# resnet56 5.2 s an epoch at 28 px; the standard pipeline 4.7 s a block; ICE's trials 3.4-4.1 s):
# a deeper network's epoch scales with its blocks (resnet110 2x, resnet152_cifar 2.8x).
# `-objective`: ICE under the reference's tuning objective, run only where it would choose another
# trial than ours did (then as long as the ICE run).
GPU_JOBS = {
    "dense": ["dense_resnet56"],
    "ice56": ["ice56_0", "ice56_1", "ice56_2"], "ice56-objective": ["ice56_3"],
    "dense110": ["dense_resnet110"],
    "ice110-base": ["ice110_0"], "ice110-plain": ["ice110_1"], "ice110-ice": ["ice110_2"],
    "ice110-objective": ["ice110_3"],
    "dense152": ["dense_resnet152_cifar"],
    "ice152-base": ["ice152_0"], "ice152-plain": ["ice152_1"], "ice152-ice": ["ice152_2"],
    "ice152-objective": ["ice152_3"],
    "slr": ["slr"], "autocompress": ["autocompress"], "gradual": ["gradual"],
}
GPU_JOB_MINUTES = {"dense": 2.6, "ice56": 7.5, "ice56-objective": 3.5, "dense110": 5.2,
                   "ice110-base": 9.5, "ice110-plain": 8.5, "ice110-ice": 6.5,
                   "ice110-objective": 6.5, "dense152": 7.3, "ice152-base": 18.5,
                   "ice152-plain": 16.5, "ice152-ice": 11.0, "ice152-objective": 11.0,
                   "slr": 2.5, "autocompress": 3.0, "gradual": 4.5}


def gpu_tier() -> Tier:
    """The paper-scale settings, in jobs that each fit one device call (estimated, see
    GPU_JOB_MINUTES; measured times land in results.json's `jobs`)."""
    return Tier(
        name="full",
        common=["dataset=fashion_mnist", "pretrain.epochs=30", "seed=0", "hardware=cuda",
                "hardware.channel_multiple=1", "dataset.batch_size=256",
                "dataset.in_memory=true"],
        budget="jobs of under 8 minutes each on one H200 (`make verdicts-gpu JOB=...`)",
        notes=["Native 28x28 images; ICE at the paper's depths, resnet56 (27 blocks), resnet110 "
               "(54) and resnet152_cifar (75, the reference's network); resnet56 for the other "
               "three comparisons.",
               "`hardware.channel_multiple=1`: the papers' kept channel counts (ceil(0.7 C) "
               "removed), not the multiples of 8 a GPU deployment would keep."],
        comparisons=comparisons(Budget(
            {"ice56": "resnet56", "ice110": "resnet110", "ice152": "resnet152_cifar"},
            "resnet56", slr_epochs=10, filter_sparsity=0.95, filter_epochs=12, agp_epochs=12)),
        jobs=GPU_JOBS, job_minutes=GPU_JOB_MINUTES)


def smoke_tier() -> Tier:
    """Seconds on digits: exercises every code path of the script (the tests use it), the jobs
    too."""
    return Tier(
        "smoke", ["dataset=digits", "seed=0", "hardware=cpu", "pretrain.epochs=2",
                  "dataset.subset=0.3", "train.progress=false", "hardware.latency.enabled=false",
                  "checkpoint.enabled=false"],
        comparisons(Budget({"ice": "lenet5"}, "lenet5", slr_epochs=1, filter_epochs=2,
                           agp_epochs=2, ice_extra=["method.autotune.trials=2"],
                           agp_extra=["method.frequency=1"])),
        "seconds (a test of the script, not evidence)",
        jobs={"dense": ["dense_lenet5"], "ice": ["ice_0", "ice_1", "ice_2"],
              "ice-objective": ["ice_3"], "slr-admm": ["slr_0"], "slr-slr": ["slr_1"]})


TIERS: Dict[str, Callable[[], Tier]] = {"cpu": cpu_tier, "full": gpu_tier, "smoke": smoke_tier}
