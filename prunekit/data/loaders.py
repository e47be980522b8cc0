"""Batches for the Trainer: `TensorLoader` (in-memory splits, augmented a whole batch at a time
with tensor ops), `StreamLoader` (a torchvision DataLoader over files), and `Data`, a data set's
three splits."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from prunekit.data.image_files import UnreadableImage, unwrap_worker_error
from prunekit.data.images import Images, subsample


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crops of a zero-padded batch, as one gather (no Python loop)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def augmentation_seed(seed: int, rank: int) -> int:
    """A distributed rank's augmentation seed: its own stream, drawn from the run's seed."""
    return seed * 1009 + rank


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen, device=gen.device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class TensorLoader:
    """Batches from an in-memory split: shuffle, batched augmentation, normalisation.

    Yields float tensors (N, C, H, W) on the split's device, normalised with the training split's
    per-channel mean and std; grayscale images are expanded to `channels` without a copy.
    """

    def __init__(self, split: Images, batch_size: int, *, mean: torch.Tensor, std: torch.Tensor,
                 channels: int, train: bool = False, augment: str = "none", seed: int = 0,
                 channels_last: bool = False):
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.augment = augment if train else "none"
        self.channels = channels
        self.channels_last = channels_last
        device = split.images.device
        self.mean = mean.to(device).view(1, -1, 1, 1)
        self.std = std.to(device).view(1, -1, 1, 1)
        self.pad = max(1, split.images.shape[-1] // 8)  # 4 px at 32 px, as in the CIFAR recipes
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.aug_gen = self.gen  # one process: the shuffle and the augmentation share one
        self.rank, self.world = 0, 1
        # BatchNorm cannot train on a batch of one: drop a trailing partial batch when training.
        self.drop_last = train and len(split) > batch_size

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def reseed(self, seed: int) -> None:
        self.gen.manual_seed(seed)
        if self.aug_gen is not self.gen:
            self.aug_gen.manual_seed(augmentation_seed(seed, self.rank))

    def shard(self, rank: int, world: int) -> "TensorLoader":
        """This rank's share of every batch (`rank`::`world` of its samples): the shuffle is
        drawn alike on every rank (one seed), each rank's augmentation apart."""
        out = copy.copy(self)
        out.rank, out.world = rank, world
        out.gen = torch.Generator(device=self.gen.device).manual_seed(self.gen.initial_seed())
        out.aug_gen = torch.Generator(device=self.gen.device).manual_seed(
            augmentation_seed(self.gen.initial_seed(), rank))
        out.unsharded = self
        return out

    def subset(self, fraction: float, seed: int) -> "TensorLoader":
        """The same loader over a stratified `fraction` of the split."""
        if fraction >= 1.0:
            return self
        out = copy.copy(self)
        out.split = subsample(self.split, fraction, seed)
        out.gen = torch.Generator(device=self.gen.device).manual_seed(seed)
        out.aug_gen = out.gen if self.aug_gen is self.gen else torch.Generator(
            device=self.gen.device).manual_seed(augmentation_seed(seed, self.rank))
        if hasattr(self, "unsharded"):
            out.unsharded = self.unsharded.subset(fraction, seed)
        out.drop_last = self.train and len(out.split) > self.batch_size
        return out

    def fixed_sample(self, fraction: float, seed: int) -> "TensorLoader":
        """A stratified `fraction` of the split read in order, unaugmented: the same batches
        at every pass (what BatchNorm statistics are re-estimated on)."""
        out = copy.copy(self)
        out.split = subsample(self.split, fraction, seed) if fraction < 1.0 else self.split
        out.train, out.augment = False, "none"
        out.drop_last = len(out.split) > self.batch_size  # (BatchNorm: no batch of one)
        return out

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        device = self.split.images.device
        order = (torch.randperm(n, generator=self.gen, device=device) if self.train
                 else torch.arange(n, device=device))
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
            if len(idx) == 0:  # a last batch smaller than the world: nothing for this rank
                continue
            x = self.split.images[idx].float().div_(255.0)
            if self.augment in ("crop", "crop_flip"):
                x = random_crop(x, self.pad, self.aug_gen)
            if self.augment == "crop_flip":
                x = random_flip(x, self.aug_gen)
            x = (x - self.mean) / self.std
            if x.shape[1] != self.channels:
                x = x.expand(-1, self.channels, -1, -1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.split.labels[idx]


class ShareOfBatches(torch.utils.data.Sampler):
    """Rank `rank`'s share (`rank`::`world`) of every batch a BatchSampler draws."""

    def __init__(self, batches, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            share = batch[self.rank::self.world]
            if share:
                yield share


class StreamLoader:
    """A torchvision DataLoader over an image folder, moving batches to the device."""

    def __init__(self, dataset, batch_size: int, *, train: bool, num_workers: int, device,
                 seed: int, channels_last: bool = False, share: Tuple[int, int] = (0, 1),
                 drop_last: Optional[bool] = None):
        self.gen = torch.Generator().manual_seed(seed)
        if drop_last is None:  # BatchNorm cannot train on a batch of one
            drop_last = train and len(dataset) > batch_size
        common = dict(num_workers=num_workers, pin_memory=torch.device(device).type == "cuda",
                      persistent_workers=num_workers > 0)
        self.rank, self.world = share
        if self.world == 1:
            self.loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, shuffle=train, drop_last=drop_last,
                generator=self.gen, **common)
        else:  # every rank draws the same batches (one seed) and loads its share of each
            order = (torch.utils.data.RandomSampler(dataset, generator=self.gen) if train
                     else torch.utils.data.SequentialSampler(dataset))
            batches = torch.utils.data.BatchSampler(order, batch_size, drop_last)
            self.loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=ShareOfBatches(batches, self.rank, self.world), **common)
        self.batch_size = batch_size
        self.device = device
        self.channels_last = channels_last
        self.train = train

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def reseed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def subset(self, fraction: float, seed: int) -> "StreamLoader":
        """The same loader over a random `fraction` of the dataset (no labels to stratify by
        without decoding every image)."""
        if fraction >= 1.0:
            return self
        out = StreamLoader(self._sample(fraction, seed), self.batch_size, train=self.train,
                           num_workers=self.loader.num_workers, device=self.device, seed=seed,
                           channels_last=self.channels_last, share=(self.rank, self.world))
        if hasattr(self, "unsharded"):  # as TensorLoader.subset: the whole batches come along
            out.unsharded = self.unsharded.subset(fraction, seed)
        return out

    def fixed_sample(self, fraction: float, seed: int) -> "StreamLoader":
        """A random `fraction` of the dataset read in order (as TensorLoader.fixed_sample; the
        dataset's own transform still applies)."""
        sample = self._sample(fraction, seed)
        return StreamLoader(sample, self.batch_size, train=False,
                            num_workers=self.loader.num_workers, device=self.device, seed=seed,
                            channels_last=self.channels_last,
                            drop_last=len(sample) > self.batch_size)

    def _sample(self, fraction: float, seed: int):
        ds = self.loader.dataset
        if fraction >= 1.0:
            return ds
        n = max(1, int(round(fraction * len(ds))))
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        return torch.utils.data.Subset(ds, idx.tolist())

    def shard(self, rank: int, world: int) -> "StreamLoader":
        """This rank's share of every batch, as TensorLoader.shard."""
        out = StreamLoader(self.loader.dataset, self.batch_size, train=self.train,
                           num_workers=self.loader.num_workers, device=self.device,
                           seed=self.gen.initial_seed(), channels_last=self.channels_last,
                           share=(rank, world))
        out.unsharded = self
        return out

    def __iter__(self):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            for x, y in self.loader:
                yield (x.to(self.device, non_blocking=True, memory_format=fmt),
                       y.to(self.device, non_blocking=True))
        except UnreadableImage as e:  # from a worker: its traceback is in the message
            raise unwrap_worker_error(e) from None


@dataclass
class Data:
    """The three splits of one dataset, ready for a model with `channels` input channels."""

    name: str
    train: object
    val: object
    test: object
    num_classes: int
    channels: int
    image_size: int
    fast_path: bool
    source: str = ""  # where the images came from: a folder, a package
    content: str = ""  # a fingerprint of the user's files it read (the dense cache keys it)
    notes: str = ""  # what the data line adds (a class val/ lacks, links not followed)

    def describe(self) -> str:
        path = "in-memory tensors" if self.fast_path else "streaming DataLoader"
        return (f"{self.name}: {self.train.num_samples} train / {self.val.num_samples} val / "
                f"{self.test.num_samples} test, {self.num_classes} classes, {self.channels}x"
                f"{self.image_size}x{self.image_size}, {path}"
                + (f", from {self.source}" if self.source else "")
                + (f"; {self.notes}" if self.notes else ""))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """The first val images (the same on every rank of a distributed run)."""
        x, _ = next(iter(getattr(self.val, "unsharded", self.val)))
        return x[:batch_size]

    def shard(self, rank: int, world: int) -> "Data":
        """Each split as rank `rank` of `world` sees it (its share of every batch)."""
        if world == 1:
            return self
        return dataclasses.replace(self, train=self.train.shard(rank, world),
                                   val=self.val.shard(rank, world),
                                   test=self.test.shard(rank, world))

    def calibration(self, images: int, seed: int):
        """`images` train images (a fixed sample; all when the split has fewer) read in order
        without augmentation, whole batches on every rank: BatchNorm statistics re-estimated on
        them are the same at every call and on every rank."""
        train = getattr(self.train, "unsharded", self.train)
        return train.fixed_sample(min(1.0, images / train.num_samples), seed)

    def subset(self, train: float = 1.0, val: float = 1.0, seed: int = 0) -> "Data":
        """A view with fractions of the train and val splits (tuning trials, cheap decisions);
        the test split is left whole and untouched."""
        return dataclasses.replace(self, train=self.train.subset(train, seed),
                                   val=self.val.subset(val, seed))
