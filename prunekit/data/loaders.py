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
        self.batch, self.started, self.pending = 0, None, None  # the pass under way

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

    def position(self) -> dict:
        """Where the pass under way is (resume_at continues it there): its batch and the
        generators' states at its start and now."""
        return {"batch": self.batch, "start": self.started,
                "now": [g.get_state() for g in self.generators()]}

    def resume_at(self, position: dict) -> None:
        """The next pass continues the one `position` describes: the same order, the same
        augmentation draws, from its next batch (a run stopped mid-epoch)."""
        self.pending = position

    def generators(self) -> list:
        return [self.gen] if self.aug_gen is self.gen else [self.gen, self.aug_gen]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        device = self.split.images.device
        resumed, self.pending = self.pending, None
        if resumed is not None:
            self.gen.set_state(resumed["start"])
        self.started, self.batch = self.gen.get_state(), 0
        order = (torch.randperm(n, generator=self.gen, device=device) if self.train
                 else torch.arange(n, device=device))
        if resumed is not None:
            for g, state in zip(self.generators(), resumed["now"]):
                g.set_state(state)
            self.batch = resumed["batch"]
        while self.batch < len(self):
            b = self.batch
            self.batch += 1
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


def sample_seed(epoch_seed: int, index: int) -> int:
    """The seed of sample `index`'s augmentation in a pass: its own, whichever worker loads it."""
    return (epoch_seed * 1_000_003 + index * 7_919) % (1 << 62)


class SeededSamples(torch.utils.data.Dataset):
    """A dataset whose item (index, seed) is drawn with torch's RNG seeded to `seed` (and the
    caller's RNG left as it was): augmentation depends on the sample and the pass alone, not on
    the worker count or where a pass was resumed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):  # (the CPU generator alone: transforms draw
            torch.random.default_generator.manual_seed(seed)  # there, and CUDA's is the run's)
            return self.dataset[index]


class PassPlan(torch.utils.data.Sampler):
    """The batches of the pass under way (set by StreamLoader before each pass): one
    DataLoader, with persistent workers, serves every pass."""

    def __init__(self):
        self.batches: list = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class StreamLoader:
    """Image files through a DataLoader's workers, moving batches to the device. A training pass
    draws its order and its seed from `gen`; each sample is augmented from its own seed
    (SeededSamples), so a pass is the same with any number of workers, and a pass stopped
    mid-way continues where it stopped (position / resume_at). In a distributed run every rank
    draws the same batches and loads its share (`rank`::`world`) of each."""

    def __init__(self, dataset, batch_size: int, *, train: bool, num_workers: int, device,
                 seed: int, channels_last: bool = False, share: Tuple[int, int] = (0, 1),
                 drop_last: Optional[bool] = None):
        self.gen = torch.Generator().manual_seed(seed)
        self.dataset = dataset
        if drop_last is None:  # BatchNorm cannot train on a batch of one
            drop_last = train and len(dataset) > batch_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.rank, self.world = share
        self.plan = PassPlan()
        self.loader = torch.utils.data.DataLoader(  # (its own generator: the workers' base
            SeededSamples(dataset), batch_sampler=self.plan, num_workers=num_workers,  # seed
            pin_memory=torch.device(device).type == "cuda", persistent_workers=num_workers > 0,
            generator=torch.Generator())  # draws none of the run's random numbers)
        self.batch_size = batch_size
        self.device = device
        self.channels_last = channels_last
        self.train = train
        self.batch, self.pending, self.epoch_seed = 0, None, 0

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def reseed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def position(self) -> dict:
        """Where the pass under way is: its seed (order and augmentation) and batch."""
        return {"batch": self.batch, "seed": self.epoch_seed, "now": self.gen.get_state()}

    def resume_at(self, position: dict) -> None:
        self.pending = position

    def subset(self, fraction: float, seed: int) -> "StreamLoader":
        """The same loader over a random `fraction` of the dataset (no labels to stratify by
        without decoding every image)."""
        if fraction >= 1.0:
            return self
        out = self.like(self._sample(fraction, seed), seed=seed)
        if hasattr(self, "unsharded"):  # as TensorLoader.subset: the whole batches come along
            out.unsharded = self.unsharded.subset(fraction, seed)
        return out

    def fixed_sample(self, fraction: float, seed: int) -> "StreamLoader":
        """A random `fraction` of the dataset read in order (as TensorLoader.fixed_sample; the
        dataset's own transform still applies)."""
        sample = self._sample(fraction, seed)
        return self.like(sample, seed=seed, train=False, share=(0, 1),
                         drop_last=len(sample) > self.batch_size)

    def like(self, dataset, **changes) -> "StreamLoader":
        """A loader as this one over `dataset`, with `changes` to its settings."""
        settings = dict(train=self.train, num_workers=self.num_workers, device=self.device,
                        seed=self.gen.initial_seed(), channels_last=self.channels_last,
                        share=(self.rank, self.world))
        return StreamLoader(dataset, self.batch_size, **{**settings, **changes})

    def _sample(self, fraction: float, seed: int):
        ds = self.dataset
        if fraction >= 1.0:
            return ds
        n = max(1, int(round(fraction * len(ds))))
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        return torch.utils.data.Subset(ds, idx.tolist())

    def shard(self, rank: int, world: int) -> "StreamLoader":
        """This rank's share of every batch, as TensorLoader.shard."""
        out = self.like(self.dataset, share=(rank, world))
        out.unsharded = self
        return out

    def plan_pass(self) -> None:
        """This pass's seed and batches (a resumed pass: the stopped one's, from its batch)."""
        resumed, self.pending = self.pending, None
        n = len(self.dataset)
        if resumed is not None:
            self.epoch_seed, self.batch = resumed["seed"], resumed["batch"]
            self.gen.set_state(resumed["now"])
        else:
            self.batch = 0
            self.epoch_seed = (int(torch.randint(0, 1 << 62, (1,), generator=self.gen))
                               if self.train else 0)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.epoch_seed))
                 if self.train else torch.arange(n)).tolist()
        batches = [order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
                   for b in range(self.batch, len(self))]
        self.plan.batches = [[(i, sample_seed(self.epoch_seed, i)) for i in batch]
                             for batch in batches if batch]

    def __iter__(self):
        self.plan_pass()
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            for x, y in self.loader:
                self.batch += 1
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
