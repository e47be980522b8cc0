"""The training loop's costs, side by side in one process on one model, data and batch size.

    python scripts/bench_loop.py [--quick] [--json FILE] [--model resnet18] [--device cpu]
                                 [--steps N] [--rounds N] [--data-size N]

Every ratio compares two things measured alternately, several rounds each, with the median taken
(so drift on a shared machine hits both sides):

- `loop_vs_plain`: images/s of prunekit's Trainer.fit, with its progress bar, loss accumulation,
  NaN check and LR schedule, over images/s of a minimal hand-written PyTorch loop (SGD, cross
  entropy, `zero_grad(set_to_none=True)`), on the same in-memory batches (target ≥ 0.97);
- `masked_step_overhead`: Trainer step time with 90 % unstructured masks re-applied after every step
  over the same without masks (target ≤ 1.05);
- `data_speedup`: images/s of the in-memory tensor path (uint8 on the device, whole-batch crop and
  flip) over a torchvision DataLoader with per-sample PIL transforms (RandomCrop, flip, ToTensor,
  Normalize), 32×32 FakeData, data only;
- `structured_step_speedup`: step time of the dense model over that of its filter-pruned,
  compacted copy at sparsity 0.5: why structured pipelines get faster as they prune.

`--modes` (CPU) adds the precision modes, each trained side by side by the plain loop and by
Trainer.fit on `--modes-model` (resnet32, 1×16×16 inputs, batch 128: issue 44's measurement):
fp32, fp32 channels_last, bf16 autocast, bf16 autocast channels_last, and (with `--compile`)
the compiled step in bf16 channels_last; `mode_<name>_images_s` (plain), `mode_<name>_x_fp32`,
`mode_<name>_loop_vs_plain`, and which mode `hardware=cpu` chooses here (`default_mode`).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torchvision
import torchvision.transforms as T
from benchutil import alternate, emit, plain_epoch
from omegaconf import OmegaConf

from prunekit.config import TrainConfig
from prunekit.data import Images, TensorLoader
from prunekit.hardware import Hardware, bf16_matrix_units, training_precision
from prunekit.models import build_model, prunable_layers, residual_blocks
from prunekit.sparsity.pruner import Pruner, PruneSpec
from prunekit.train import Trainer


class Batches:
    """The same list of batches every epoch: both loops see identical data at no data cost."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class BenchData:
    """What Trainer reads of its data here: the training batches, and an example batch (the
    compiled step is warmed on it)."""

    def __init__(self, batches: Batches):
        self.train = batches

    def example_input(self, batch_size: int) -> torch.Tensor:
        return self.train.batches[0][0][:batch_size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about a minute on 2 CPU cores")
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--image-size", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed epoch")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per comparison")
    ap.add_argument("--data-size", type=int, default=None, help="images for the data comparison")
    ap.add_argument("--modes", action="store_true", help="the CPU precision modes too")
    ap.add_argument("--modes-model", default="resnet32")
    ap.add_argument("--modes-size", type=int, default=16)
    ap.add_argument("--modes-batch", type=int, default=128)
    ap.add_argument("--compile", action="store_true", help="--modes: the compiled bf16 step too")
    args = ap.parse_args()
    steps, rounds = (10, 3) if args.quick else (30, 5)
    steps, rounds = args.steps or steps, args.rounds or rounds
    device = torch.device(args.device)
    hw = Hardware(args.device, device, None, False)
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": args.model, "in_channels": 3, "small_input": None})
    model = build_model(cfg, 10, args.image_size).to(device)
    batches = Batches([(torch.randn(args.batch, 3, args.image_size, args.image_size, device=device),
                        torch.randint(0, 10, (args.batch,), device=device)) for _ in range(steps)])
    data = BenchData(batches)
    train_cfg = OmegaConf.structured(TrainConfig(batch_size=args.batch, lr_schedule="cosine",
                                                 progress=True))
    trainer = Trainer(data, train_cfg, hw, progress=True)

    def plain(m) -> float:
        return plain_epoch(m, m, batches, hw)

    def prunekit_fit(m, masks=None) -> float:
        hw.sync()
        t0 = time.perf_counter()
        trainer.fit(m, 1, 1e-3, masks=masks, desc="bench")
        hw.sync()
        return (time.perf_counter() - t0) / len(batches)

    out = {"model": args.model, "image_size": args.image_size, "batch": args.batch,
           "device": args.device, "threads": torch.get_num_threads(), "steps": steps,
           "rounds": rounds}
    with trainer:
        plain(model), prunekit_fit(model)  # warm-up
        t_plain, t_fit = alternate(rounds, lambda: plain(model), lambda: prunekit_fit(model))
        out.update(plain_step_ms=1e3 * t_plain, trainer_step_ms=1e3 * t_fit,
                   loop_vs_plain=t_plain / t_fit)

        masked = copy.deepcopy(model)
        p = Pruner(masked, PruneSpec("unstructured"), prunable_layers(masked),
                   batches.batches[0][0][:1])
        p.prune_to(0.9)
        prunekit_fit(masked, p.masks)
        t_dense, t_masked = alternate(rounds, lambda: prunekit_fit(model),
                                      lambda: prunekit_fit(masked, p.masks))
        out["masked_step_overhead"] = t_masked / t_dense

        small = copy.deepcopy(model)
        p = Pruner(small, PruneSpec("filter"), prunable_layers(small), batches.batches[0][0][:1],
                   blocks=list(residual_blocks(small)))
        p.prune_to(0.5)
        p.compact()
        prunekit_fit(small)
        t_dense, t_small = alternate(rounds, lambda: prunekit_fit(model),
                                     lambda: prunekit_fit(small))
        out.update(dense_step_ms=1e3 * t_dense, pruned_step_ms=1e3 * t_small,
                   structured_step_speedup=t_dense / t_small)

    # data: the in-memory tensor path against a per-sample torchvision pipeline
    n = args.data_size or (1024 if args.quick else 4096)
    fake = torchvision.datasets.FakeData(size=n, image_size=(3, 32, 32), num_classes=10)
    to_tensor = T.PILToTensor()
    images = torch.stack([to_tensor(img) for img, _ in fake]).to(device)
    labels = torch.tensor([int(y) for _, y in fake], device=device)
    mean = images.float().mean((0, 2, 3)) / 255
    std = images.float().std((0, 2, 3)) / 255
    tensors = TensorLoader(Images(images, labels), 128, mean=mean, std=std, channels=3,
                           train=True, augment="crop_flip", seed=0)
    pil = torchvision.datasets.FakeData(size=n, image_size=(3, 32, 32), num_classes=10,
                                        transform=T.Compose([
                                            T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                            T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)]))
    loader = torch.utils.data.DataLoader(pil, batch_size=128, shuffle=True, num_workers=0)

    def images_per_s(it) -> float:
        t0 = time.perf_counter()
        count = sum(int(x.shape[0]) for x, _ in it)
        hw.sync()
        return count / (time.perf_counter() - t0)

    fast, slow = alternate(rounds, lambda: images_per_s(tensors), lambda: images_per_s(loader))
    out.update(data_tensor_images_s=fast, data_dataloader_images_s=slow, data_speedup=fast / slow)
    if args.modes:
        out.update(precision_modes(args, steps, rounds))
    emit(out, args.json)


# (name, autocast dtype, channels_last, compiled): issue 44's table, in its order
MODES = [("fp32", None, False, False), ("fp32_cl", None, True, False),
         ("bf16", torch.bfloat16, False, False), ("bf16_cl", torch.bfloat16, True, False),
         ("bf16_cl_compiled", torch.bfloat16, True, True)]


def precision_modes(args, steps: int, rounds: int) -> dict:
    """Images/s of the plain loop and of Trainer.fit in each CPU precision mode, the two
    alternating within a mode; each mode over fp32's plain loop."""
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": args.modes_model, "in_channels": 1, "small_input": None})
    dense = build_model(cfg, 10, args.modes_size)
    x = [(torch.randn(args.modes_batch, 1, args.modes_size, args.modes_size),
          torch.randint(0, 10, (args.modes_batch,))) for _ in range(steps)]
    hw_cfg = OmegaConf.create({"device": "cpu", "precision": "auto", "channels_last": None})
    chosen = training_precision(hw_cfg)
    out = {"modes_model": args.modes_model, "modes_image_size": args.modes_size,
           "modes_batch": args.modes_batch, "bf16_matrix_units": bf16_matrix_units(),
           "default_mode": chosen.name + ("_cl" if chosen.channels_last else "")}
    for name, dtype, cl, compiled in MODES:
        if compiled and not args.compile:
            continue
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = copy.deepcopy(dense).to(memory_format=fmt)
        batches = Batches([(a.contiguous(memory_format=fmt), b) for a, b in x])
        hw = Hardware("cpu", torch.device("cpu"), dtype, cl, compile=compiled)
        net = torch.compile(model) if compiled else model
        train_cfg = OmegaConf.structured(TrainConfig(batch_size=args.modes_batch,
                                                     lr_schedule="cosine", progress=False))
        trainer = Trainer(BenchData(batches), train_cfg, hw, progress=False)

        def fit() -> float:
            t0 = time.perf_counter()
            trainer.fit(model, 1, 1e-3, desc="bench")
            return (time.perf_counter() - t0) / len(batches)
        with trainer:
            plain_epoch(model, net, batches, hw), fit()  # warm-up (and compilation)
            t_plain, t_fit = alternate(rounds, lambda: plain_epoch(model, net, batches, hw), fit)
        out[f"mode_{name}_images_s"] = args.modes_batch / t_plain
        out[f"mode_{name}_trainer_images_s"] = args.modes_batch / t_fit
        out[f"mode_{name}_loop_vs_plain"] = t_plain / t_fit
        out[f"mode_{name}_x_fp32"] = out[f"mode_{name}_images_s"] / out["mode_fp32_images_s"]
    return out


if __name__ == "__main__":
    main()
