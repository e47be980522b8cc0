"""imagefolder: an ImageNet-layout folder (train/ and val/ class folders) at `dataset.path`,
decoded into memory when it fits, streamed otherwise."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from prunekit.config import DatasetConfig, schema
from prunekit.data.build import DATASETS, tensor_data
from prunekit.data.images import Images, decode_all, stratified_split, subset_indices
from prunekit.data.loaders import Data, StreamLoader
from prunekit.errors import ConfigError

IN_MEMORY_LIMIT_BYTES = 4 << 30  # decode an image folder into memory below this size


@schema("dataset", "imagefolder")
@dataclass
class ImageFolderConfig(DatasetConfig):
    """dataset.path: a folder with train/ and val/ class folders."""

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        d = cfg.dataset
        if not d.path:
            raise ConfigError("dataset.path is not set: imagefolder needs dataset.path=DIR "
                              "(a folder with train/ and val/ class folders)")
        if not os.path.isdir(os.path.join(os.path.expanduser(str(d.path)), "train")):
            raise ConfigError(f"dataset.path={d.path} has no train/ folder: point it at a folder "
                              "with train/ and val/ class folders (ImageNet layout)")


@DATASETS.register("imagefolder")
def image_folder(cfg, train_cfg, channels: int, device, seed: int, channels_last: bool) -> Data:
    import torchvision  # here, not at import: `prune-run` starts without it
    from torchvision import transforms as T

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
        decoded = decode_all(torch.utils.data.Subset(full, train_idx.tolist() + val_idx.tolist()))
        n_train = len(train_idx)
        train = Images(decoded.images[:n_train], decoded.labels[:n_train])
        val = Images(decoded.images[n_train:], decoded.labels[n_train:])
        test = decode_all(torch.utils.data.Subset(test_full, test_idx.tolist()))
        return tensor_data("imagefolder", train, val, test, len(full.classes), channels, cfg,
                           train_cfg, device, seed, channels_last, path)

    return streamed(cfg, train_cfg, path, (train_idx, val_idx, test_idx), len(full.classes),
                    channels, size, device, seed, channels_last)


def streamed(cfg, train_cfg, path: str, indices, classes: int, channels: int, size: int, device,
             seed: int, channels_last: bool) -> Data:
    """An image folder too large for memory, streamed through torchvision's DataLoader: random
    resized crops (and flips) for training, the centre crop for val and test."""
    import torchvision
    from torchvision import transforms as T

    mean, std = ([0.449], [0.226]) if channels == 1 else ([0.485, 0.456, 0.406],
                                                           [0.229, 0.224, 0.225])
    norm = T.Normalize(mean, std)
    g = [T.Grayscale()] if channels == 1 else []
    train_tf = T.Compose(g + [T.RandomResizedCrop(size)]
                         + ([T.RandomHorizontalFlip()] if cfg.augment == "crop_flip" else [])
                         + [T.ToTensor(), norm])
    eval_tf = T.Compose(g + [T.Resize(int(size * 8 / 7)), T.CenterCrop(size), T.ToTensor(), norm])
    folder = torchvision.datasets.ImageFolder
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "val")
    train_idx, val_idx, test_idx = indices
    train_set = torch.utils.data.Subset(folder(train_dir, train_tf), train_idx.tolist())
    val_set = torch.utils.data.Subset(folder(train_dir, eval_tf), val_idx.tolist())
    test_set = torch.utils.data.Subset(folder(test_dir, eval_tf), test_idx.tolist())
    kw = dict(num_workers=cfg.num_workers, device=device, channels_last=channels_last)
    return Data("imagefolder",
                StreamLoader(train_set, train_cfg.batch_size, train=True, seed=seed, **kw),
                StreamLoader(val_set, train_cfg.eval_batch_size, train=False, seed=seed, **kw),
                StreamLoader(test_set, train_cfg.eval_batch_size, train=False, seed=seed, **kw),
                classes, channels, size, fast_path=False, source=path)
