"""MNIST and Fashion-MNIST from their IDX files: `dataset.path` when it is named (and only there),
else Debian's package folder or torchvision's layout under `dataset.root` (downloaded there with
`dataset.download`)."""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np
import torch

from prunekit.data.build import Arrays, image_arrays
from prunekit.data.fetch import torchvision_arrays
from prunekit.data.images import Images
from prunekit.errors import ConfigError

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


def _idx_dataset(cls, name: str, dataset, debian: Optional[str] = None) -> Arrays:
    """MNIST-format data from `dataset.path` when one is named (there and nowhere else: a typo
    must not train on other data), else from the first place that has the four IDX files:
    Debian's package folder, torchvision's layout under `dataset.root`; else torchvision's
    download (`dataset.download`)."""
    if dataset.path:
        folder = os.path.expanduser(str(dataset.path))
        files = find_idx([folder])
        if files is None:
            wanted = ", ".join(stem + "[.gz]" for pair in IDX_FILES.values() for stem in pair)
            where = "has" if os.path.isdir(folder) else "is no folder, so it has"
            raise ConfigError(f"dataset.path={dataset.path} {where} not the four IDX files of "
                              f"{name} ({wanted}): point dataset.path at the folder that holds "
                              "them, or leave it unset to search the default places")
        return idx_arrays(files)
    root = os.path.expanduser(str(dataset.root))
    folders = [debian] if debian else []
    folders.append(os.path.join(root, cls.__name__, "raw"))
    files = find_idx(folders)
    if files is not None:
        return idx_arrays(files)
    package = (f"install Debian's package (apt-get install dataset-{name.lower()}, or "
               "`make data`)" if debian else None)
    if not dataset.download:
        raise ConfigError(f"dataset={dataset.name}: {name}'s four IDX files are in none of "
                          f"{', '.join(folders)}: {package + ', ' if package else ''}point "
                          "dataset.path at them, or set dataset.download=true with a network")
    try:
        return torchvision_arrays(cls, name, dataset, False)
    except ConfigError as e:
        if package is None:
            raise
        raise ConfigError(f"{e}; or {package}") from None


def idx_arrays(files: Dict[str, str]) -> Arrays:
    return Arrays(idx_split(files, "train", 10), idx_split(files, "test", 10), 10,
                  os.path.dirname(files[IDX_FILES["train"][0]]))


@image_arrays("mnist")
def load_mnist(dataset):
    import torchvision  # here, not at import: `prune-run` starts without it

    return _idx_dataset(torchvision.datasets.MNIST, "MNIST", dataset)


@image_arrays("fashion_mnist")
def load_fashion_mnist(dataset):
    import torchvision

    return _idx_dataset(torchvision.datasets.FashionMNIST, "Fashion-MNIST", dataset,
                        DEBIAN_FASHION_MNIST)
