"""Datasets -> train / val / test.

`val` is held out from the training split (stratified, seeded by `dataset.split_seed`, the same for
every run seed) and is what every decision uses; `test` is only for reporting.

Fast path: small datasets are decoded once into uint8 tensors (on the GPU when there is one) and
served by `TensorLoader`, which augments whole batches with tensor ops: no per-sample PIL work and
no worker processes in the hot loop. Large image folders stream through a torchvision DataLoader.

A data set is one entry of `DATASETS`: `@image_arrays("name")` on a function returning the
(train, test, classes) uint8 images of an in-memory set (split, subset, resize and normalisation
shared), or `@DATASETS.register("name")` on a builder of the whole `Data` (`imagefolder`).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms as T

from prunekit.errors import ConfigError
from prunekit.registry import Registry

log = logging.getLogger(__name__)

IN_MEMORY_LIMIT_BYTES = 4 << 30  # decode an image folder into memory below this size


@dataclass
class Images:
    """A decoded split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor) -> "Images":
        return Images(self.images[idx], self.labels[idx])


# --------------------------------------------------------------------------- splitting
def stratified_split(labels: torch.Tensor, fraction: float,
                     seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (rest, held_out) with `fraction` of every class held out.

    Each class contributes round(fraction * n_c) examples (at least one when the class has two or
    more), so tiny subsets keep every class in both parts where possible.
    """
    gen = torch.Generator().manual_seed(seed)
    rest, held = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        k = int(round(fraction * len(members)))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        held.append(members[:k])
        rest.append(members[k:])
    return torch.sort(torch.cat(rest)).values, torch.sort(torch.cat(held)).values


def subset_indices(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a stratified `fraction` of the examples (all of them when fraction >= 1)."""
    if fraction >= 1.0:
        return torch.arange(len(labels))
    return stratified_split(labels, fraction, seed)[1]


def subsample(split: Images, fraction: float, seed: int) -> Images:
    return split.take(subset_indices(split.labels, fraction, seed))


# --------------------------------------------------------------------------- decoding
def _to_uint8_nchw(array, channels_last_input: bool) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(array))
    if t.ndim == 3:  # (N, H, W) grayscale
        t = t.unsqueeze(1)
    elif channels_last_input:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous().to(torch.uint8)


def _resize(images: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    if size is None or images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in torch.split(images, 4096):  # bounded memory for large sets
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < chunk.shape[-1])
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grayscale -> RGB is done lazily per batch (expand); RGB -> grayscale here (luma)."""
    if images.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if images.shape[1] not in (1, channels):
        raise ConfigError(f"model.in_channels={channels} cannot take {images.shape[1]}-channel "
                          "images: set model.in_channels to 1 or 3")
    return images


# What a failed fetch says, somewhere in its (multi-line, chained) message -> what it means
FETCH_FAILURES = (
    (("name resolution", "name or service not known", "nodename nor servname",
      "getaddrinfo failed"), "no network: the download host's name could not be resolved"),
    (("network is unreachable", "no route to host"), "no network: the host is unreachable"),
    (("connection refused",), "the download host refused the connection"),
    (("timed out",), "the download timed out"),
    (("certificate verify failed",), "the download host's TLS certificate was refused"),
    (("dataset not found",), "the files are not there and dataset.download=false"),
    (("md5", "integrity", "corrupt"), "a file there is corrupt (checksum mismatch)"),
)


def fetch_failure(err: BaseException) -> str:
    """Why a dataset could not be fetched, in a few words: the known causes by name (anywhere in
    the chain of errors), else the last line of the first error that has one that is not a
    heading (torchvision puts the cause below "Error downloading x:")."""
    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(x) for x in chain).lower()
    for needles, meaning in FETCH_FAILURES:
        if any(n in text for n in needles):
            return meaning
    for x in chain:
        lines = [ln.strip() for ln in str(x).splitlines()
                 if ln.strip() and not ln.strip().endswith(":")]
        if lines:
            return lines[-1][:160]
    return type(err).__name__


def _download_error(name: str, root: str, err: Exception) -> ConfigError:
    return ConfigError(f"dataset.root={root}: {name} is not there and could not be fetched "
                       f"({fetch_failure(err)}); put the files there, or run once with network "
                       "access and dataset.download=true")


# A builder: (dataset_cfg, train_cfg, channels, device, seed, channels_last) -> Data.
DATASETS: Registry[Callable[..., "Data"]] = Registry("dataset")


def image_arrays(name: str) -> Callable:
    """Register `load(dataset_cfg) -> (train, test, num_classes)` (uint8 NCHW Images) as data set
    `name`; the validation split, subset, resize and normalisation are the shared ones."""
    def wrap(load: Callable) -> Callable:
        def build(dataset_cfg, train_cfg, channels, device, seed, channels_last) -> Data:
            return _in_memory(name, load(dataset_cfg), dataset_cfg, train_cfg, channels, device,
                              seed, channels_last)

        DATASETS.register(name)(build)
        return load
    return wrap


@image_arrays("digits")
def load_digits(cfg) -> Tuple[Images, Images, int]:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images).float().mul_(255.0 / 16.0).round_().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    full = Images(images.unsqueeze(1), labels)
    # digits has no official test split: a fixed, stratified one (same for every run)
    train_idx, test_idx = stratified_split(labels, cfg.test_fraction, cfg.split_seed + 1)
    return full.take(train_idx), full.take(test_idx), 10


def _torchvision_arrays(cls, name: str, cfg, channels_last_input: bool):
    root = os.path.expanduser(str(cfg.root))
    try:
        train = cls(root, train=True, download=cfg.download)
        test = cls(root, train=False, download=cfg.download)
    except Exception as e:  # offline, missing files, corrupt archive
        raise _download_error(name, root, e) from e
    classes = len(train.classes)

    def split(ds) -> Images:
        return Images(_to_uint8_nchw(ds.data, channels_last_input),
                      torch.as_tensor(np.asarray(ds.targets)).long())

    return split(train), split(test), classes


@image_arrays("cifar10")
def load_cifar10(cfg):
    return _torchvision_arrays(torchvision.datasets.CIFAR10, "CIFAR-10", cfg, True)


@image_arrays("cifar100")
def load_cifar100(cfg):
    return _torchvision_arrays(torchvision.datasets.CIFAR100, "CIFAR-100", cfg, True)


# ------------------------------------------------------------------ IDX files (MNIST's format)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist


def read_idx(path: str) -> np.ndarray:
    """One IDX file (LeCun's format: two zero bytes, a type code, the number of dimensions, the
    dimensions as big-endian int32, then the data), gzip-compressed or not; uint8 data only.
    A truncated or corrupt file is a one-line ConfigError that names it."""
    import gzip
    import zlib

    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ConfigError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}): fetch it "
                          "again") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ConfigError(f"{path} is not an IDX file of bytes (its header is {raw[:4].hex()}): "
                          "fetch it again")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start, count = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) != start + count:
        raise ConfigError(f"{path} is truncated or corrupt: its header says {dims} "
                          f"({count} bytes), it holds {len(raw) - start}: fetch it again")
    return np.frombuffer(raw, np.uint8, count, start).reshape(dims)


def find_idx(folders) -> Optional[Dict[str, str]]:
    """{file stem: path} from the first folder holding all four IDX files, gzipped or not."""
    stems = [stem for pair in IDX_FILES.values() for stem in pair]
    for folder in folders:
        found = {}
        for stem in stems:
            for name in (stem + ".gz", stem):
                if os.path.isfile(os.path.join(folder, name)):
                    found[stem] = os.path.join(folder, name)
                    break
        if len(found) == len(stems):
            return found
    return None


def idx_split(files: Dict[str, str], split: str, num_classes: int) -> Images:
    """A split from its images and labels files, checked: (N, H, W) images, one per label,
    labels in [0, num_classes)."""
    images_file, labels_file = (files[stem] for stem in IDX_FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1:
        raise ConfigError(f"{images_file}, {labels_file}: expected (N, H, W) images and (N,) "
                          f"labels, got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise ConfigError(f"{images_file} holds {len(images)} images but {labels_file} "
                          f"{len(labels)} labels: one of them is truncated")
    if len(labels) and int(labels.max()) >= num_classes:
        raise ConfigError(f"{labels_file} has label {int(labels.max())}, "
                          f"outside 0..{num_classes - 1}")
    return Images(torch.from_numpy(images.copy()).unsqueeze(1),
                  torch.from_numpy(labels.astype(np.int64)))


def _idx_dataset(cls, name: str, cfg, debian: Optional[str] = None):
    """MNIST-format data from the first place that has the four IDX files: `dataset.path`,
    Debian's package folder, torchvision's layout under `dataset.root`; else torchvision's
    download (`dataset.download`)."""
    root = os.path.expanduser(str(cfg.root))
    folders = [os.path.expanduser(str(cfg.path))] if cfg.path else []
    folders += [debian] if debian else []
    folders.append(os.path.join(root, cls.__name__, "raw"))
    files = find_idx(folders)
    if files is not None:
        log.info("%s: IDX files in %s", name, os.path.dirname(files[IDX_FILES["train"][0]]))
        return idx_split(files, "train", 10), idx_split(files, "test", 10), 10
    package = (f"install Debian's package (apt-get install dataset-{name.lower()}, or "
               "`make data`)" if debian else None)
    if not cfg.download:
        raise ConfigError(f"dataset={cfg.name}: {name}'s four IDX files are in none of "
                          f"{', '.join(folders)}: {package + ', ' if package else ''}point "
                          "dataset.path at them, or set dataset.download=true with a network")
    try:
        return _torchvision_arrays(cls, name, cfg, False)
    except ConfigError as e:
        if package is None:
            raise
        raise ConfigError(f"{e}; or {package}") from None


@image_arrays("mnist")
def load_mnist(cfg):
    return _idx_dataset(torchvision.datasets.MNIST, "MNIST", cfg)


@image_arrays("fashion_mnist")
def load_fashion_mnist(cfg):
    return _idx_dataset(torchvision.datasets.FashionMNIST, "Fashion-MNIST", cfg,
                        DEBIAN_FASHION_MNIST)


def _decode_all(dataset) -> Images:
    to_tensor = T.PILToTensor()
    images, labels = [], []
    for img, label in dataset:
        images.append(to_tensor(img.convert("RGB") if img.mode not in ("L", "RGB") else img))
        labels.append(int(label))
    return Images(torch.stack(images).to(torch.uint8), torch.tensor(labels, dtype=torch.long))


@image_arrays("fake")
def load_fake(cfg):
    size = cfg.image_size or 32
    n_test = max(cfg.num_samples // 5, cfg.num_classes)
    kw = dict(image_size=(3, size, size), num_classes=cfg.num_classes)
    train = torchvision.datasets.FakeData(size=cfg.num_samples, random_offset=cfg.split_seed, **kw)
    test = torchvision.datasets.FakeData(size=n_test, random_offset=cfg.split_seed + 10**6, **kw)
    return _decode_all(train), _decode_all(test), cfg.num_classes


# --------------------------------------------------------------------------- loaders
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

    def subset(self, fraction: float, seed: int) -> "TensorLoader":
        """The same loader over a stratified `fraction` of the split."""
        if fraction >= 1.0:
            return self
        out = copy.copy(self)
        out.split = subsample(self.split, fraction, seed)
        out.gen = torch.Generator(device=self.gen.device).manual_seed(seed)
        out.drop_last = self.train and len(out.split) > self.batch_size
        return out

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        device = self.split.images.device
        order = (torch.randperm(n, generator=self.gen, device=device) if self.train
                 else torch.arange(n, device=device))
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.split.images[idx].float().div_(255.0)
            if self.augment in ("crop", "crop_flip"):
                x = random_crop(x, self.pad, self.gen)
            if self.augment == "crop_flip":
                x = random_flip(x, self.gen)
            x = (x - self.mean) / self.std
            if x.shape[1] != self.channels:
                x = x.expand(-1, self.channels, -1, -1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.split.labels[idx]


class StreamLoader:
    """A torchvision DataLoader over an image folder, moving batches to the device."""

    def __init__(self, dataset, batch_size: int, *, train: bool, num_workers: int, device,
                 seed: int, channels_last: bool = False):
        self.gen = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=num_workers, pin_memory=torch.device(device).type == "cuda",
            generator=self.gen, persistent_workers=num_workers > 0)
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
        ds, loader = self.loader.dataset, self.loader
        n = max(1, int(round(fraction * len(ds))))
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        return StreamLoader(torch.utils.data.Subset(ds, idx.tolist()), loader.batch_size,
                            train=self.train, num_workers=loader.num_workers, device=self.device,
                            seed=seed, channels_last=self.channels_last)

    def __iter__(self):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in self.loader:
            yield (x.to(self.device, non_blocking=True, memory_format=fmt),
                   y.to(self.device, non_blocking=True))


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

    def describe(self) -> str:
        path = "in-memory tensors" if self.fast_path else "streaming DataLoader"
        return (f"{self.name}: {self.train.num_samples} train / {self.val.num_samples} val / "
                f"{self.test.num_samples} test, {self.num_classes} classes, {self.channels}x"
                f"{self.image_size}x{self.image_size}, {path}")

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        x, _ = next(iter(self.val))
        return x[:batch_size]

    def subset(self, train: float = 1.0, val: float = 1.0, seed: int = 0) -> "Data":
        """A view with fractions of the train and val splits (tuning trials, cheap decisions);
        the test split is left whole and untouched."""
        return dataclasses.replace(self, train=self.train.subset(train, seed),
                                   val=self.val.subset(val, seed))


def _mean_std(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks (CIFAR-10 as float32
    would be half a gigabyte at once)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for chunk in torch.split(images, 4096):
        x = chunk.double().div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.pow(2).sum(dim=(0, 2, 3))
    n = images.numel() / images.shape[1]
    mean = total / n
    std = (total_sq / n - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-3)
    return mean.float(), std.float()


@DATASETS.register("imagefolder")
def image_folder(cfg, train_cfg, channels: int, device, seed: int, channels_last: bool) -> Data:
    path = os.path.expanduser(str(cfg.path))
    size = cfg.image_size or 224
    folder = torchvision.datasets.ImageFolder
    full = folder(os.path.join(path, "train"))
    test_dir = os.path.join(path, "val")
    if not os.path.isdir(test_dir):
        raise ConfigError(f"dataset.path={cfg.path} has no val/ folder: the test split is "
                          "read from val/ (ImageNet layout)")
    test_full = folder(test_dir)
    labels, test_labels = torch.tensor(full.targets), torch.tensor(test_full.targets)
    train_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
    train_idx = train_idx[subset_indices(labels[train_idx], cfg.subset, cfg.split_seed)]
    val_idx = val_idx[subset_indices(labels[val_idx], cfg.subset, cfg.split_seed)]
    test_idx = subset_indices(test_labels, cfg.subset, cfg.split_seed)

    in_memory = cfg.in_memory
    estimate = (len(full) + len(test_full)) * 3 * size * size
    if in_memory is None:
        in_memory = estimate < IN_MEMORY_LIMIT_BYTES
    gray = channels == 1
    if in_memory:
        resize = T.Compose([T.Resize(int(size * 8 / 7)), T.CenterCrop(size)]
                           + ([T.Grayscale()] if gray else []))
        full.transform = resize
        test_full.transform = resize
        decoded = _decode_all(torch.utils.data.Subset(full, train_idx.tolist() + val_idx.tolist()))
        n_train = len(train_idx)
        train = Images(decoded.images[:n_train], decoded.labels[:n_train])
        val = Images(decoded.images[n_train:], decoded.labels[n_train:])
        test = _decode_all(torch.utils.data.Subset(test_full, test_idx.tolist()))
        return _tensor_data("imagefolder", train, val, test, len(full.classes), channels, cfg,
                            train_cfg, device, seed, channels_last)

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    if gray:
        mean, std = [0.449], [0.226]
    norm = T.Normalize(mean, std)
    g = [T.Grayscale()] if gray else []
    train_tf = T.Compose(g + [T.RandomResizedCrop(size)]
                         + ([T.RandomHorizontalFlip()] if cfg.augment == "crop_flip" else [])
                         + [T.ToTensor(), norm])
    eval_tf = T.Compose(g + [T.Resize(int(size * 8 / 7)), T.CenterCrop(size), T.ToTensor(), norm])
    train_dir = os.path.join(path, "train")
    train_set = torch.utils.data.Subset(folder(train_dir, train_tf), train_idx.tolist())
    val_set = torch.utils.data.Subset(folder(train_dir, eval_tf), val_idx.tolist())
    test_set = torch.utils.data.Subset(folder(test_dir, eval_tf), test_idx.tolist())
    kw = dict(num_workers=cfg.num_workers, device=device, channels_last=channels_last)
    return Data("imagefolder",
                StreamLoader(train_set, train_cfg.batch_size, train=True, seed=seed, **kw),
                StreamLoader(val_set, train_cfg.eval_batch_size, train=False, seed=seed, **kw),
                StreamLoader(test_set, train_cfg.eval_batch_size, train=False, seed=seed, **kw),
                len(full.classes), channels, size, fast_path=False)


def _tensor_data(name, train: Images, val: Images, test: Images, num_classes: int, channels: int,
                 cfg, train_cfg, device, seed: int, channels_last: bool) -> Data:
    mean, std = _mean_std(train.images)
    if train.images.shape[1] != channels:  # grayscale served to an RGB model
        mean, std = mean.expand(channels).clone(), std.expand(channels).clone()
    splits = [Images(s.images.to(device), s.labels.to(device)) for s in (train, val, test)]
    common = dict(mean=mean, std=std, channels=channels, channels_last=channels_last)
    return Data(
        name,
        TensorLoader(splits[0], train_cfg.batch_size, train=True, augment=cfg.augment, seed=seed,
                     **common),
        TensorLoader(splits[1], train_cfg.eval_batch_size, **common),
        TensorLoader(splits[2], train_cfg.eval_batch_size, **common),
        num_classes, channels, train.images.shape[-1], fast_path=True)


def _in_memory(name, arrays, dataset_cfg, train_cfg, channels: int, device, seed: int,
               channels_last: bool) -> Data:
    """A data set held as uint8 tensors: resized, channels matched, split, subsampled."""
    train_full, test, num_classes = arrays
    size = dataset_cfg.image_size
    prepared = []
    for split in (train_full, test):
        imgs = _match_channels(_resize(split.images, size), channels)
        prepared.append(Images(imgs, split.labels))
    train_full, test = prepared
    train_idx, val_idx = stratified_split(train_full.labels, dataset_cfg.val_fraction,
                                          dataset_cfg.split_seed)
    train, val = train_full.take(train_idx), train_full.take(val_idx)
    s, seed_split = dataset_cfg.subset, dataset_cfg.split_seed
    train, val, test = (subsample(x, s, seed_split) for x in (train, val, test))
    return _tensor_data(name, train, val, test, num_classes, channels, dataset_cfg, train_cfg,
                        device, seed, channels_last)


def build_data(dataset_cfg, train_cfg, channels: int, device="cpu", seed: int = 0,
               channels_last: bool = False) -> Data:
    """Build the train / val / test loaders of `dataset_cfg` for a model taking `channels`."""
    build = DATASETS.choose(dataset_cfg.name, "dataset.name")
    return build(dataset_cfg, train_cfg, channels, device, seed, channels_last)
