"""imagefolder: an ImageNet-layout folder (train/ and val/ class folders) at `dataset.path`,
decoded into memory when it fits, streamed otherwise."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from prunekit.config import DatasetConfig, schema
from prunekit.data.build import DATASETS, tensor_data
from prunekit.data.image_files import (
    IMAGE_EXTENSIONS,
    ImageFiles,
    class_names,
    describe_classes,
    fingerprint,
    index_split,
)
from prunekit.data.images import decode_all, stratified_split, subset_indices
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
def image_folder(dataset, train_cfg, channels: int, device, seed: int, channels_last: bool) -> Data:
    from torchvision import transforms as T  # here, not at import: `prune-run` starts without it

    path = os.path.expanduser(str(dataset.path))
    size = dataset.image_size or 224
    test_dir = os.path.join(path, "val")
    if not os.path.isdir(test_dir):
        raise ConfigError(f"dataset.path={dataset.path} has no val/ folder: the test split is "
                          "read from val/ (ImageNet layout)")
    names = class_names(os.path.join(path, "train"))
    classes = {name: i for i, name in enumerate(names)}
    full = index_split(os.path.join(path, "train"), classes, f"{dataset.path}/train")
    test_full = index_split(test_dir, classes, f"{dataset.path}/val")
    if not full.samples:
        raise ConfigError(f"dataset.path={dataset.path}: train/ holds no images "
                          f"({', '.join(IMAGE_EXTENSIONS)})")
    notes = describe_classes(names, test_full, classes, full.skipped_links +
                             test_full.skipped_links)
    content = fingerprint([full, test_full], path)
    labels, test_labels = full.labels, test_full.labels
    train_idx, val_idx = stratified_split(labels, dataset.val_fraction, dataset.split_seed)
    train_idx = train_idx[subset_indices(labels[train_idx], dataset.subset, dataset.split_seed)]
    val_idx = val_idx[subset_indices(labels[val_idx], dataset.subset, dataset.split_seed)]
    test_idx = subset_indices(test_labels, dataset.subset, dataset.split_seed)
    part = lambda index, idx: [index.samples[i] for i in idx.tolist()]  # noqa: E731
    splits = (part(full, train_idx), part(full, val_idx), part(test_full, test_idx))
    for samples, split in zip(splits, ("train/ (train)", "train/ (validation)", "val/ (test)")):
        if not samples:
            raise ConfigError(f"dataset.subset={dataset.subset} leaves no image in {split}: raise "
                              "dataset.subset or add images")

    in_memory = dataset.in_memory
    estimate = (len(full.samples) + len(test_full.samples)) * 3 * size * size
    if in_memory is None:
        in_memory = estimate < IN_MEMORY_LIMIT_BYTES
    if in_memory:
        resize = T.Compose([T.Resize(int(size * 8 / 7)), T.CenterCrop(size)]
                           + ([T.Grayscale()] if channels == 1 else []))
        train, val, test = (decode_all(ImageFiles(samples, resize)) for samples in splits)
        data = tensor_data("imagefolder", train, val, test, len(names), channels, dataset,
                           train_cfg, device, seed, channels_last, path)
    else:
        data = streamed(dataset, train_cfg, path, splits, len(names), channels, size, device, seed,
                        channels_last)
    return dataclasses.replace(data, content=content, notes=notes)


def streamed(dataset, train_cfg, path: str, splits, classes: int, channels: int, size: int, device,
             seed: int, channels_last: bool) -> Data:
    """An image folder too large for memory, streamed through torch's DataLoader: random
    resized crops (and flips) for training, the centre crop for val and test."""
    from torchvision import transforms as T

    mean, std = ([0.449], [0.226]) if channels == 1 else ([0.485, 0.456, 0.406],
                                                           [0.229, 0.224, 0.225])
    norm = T.Normalize(mean, std)
    g = [T.Grayscale()] if channels == 1 else []
    train_tf = T.Compose(g + [T.RandomResizedCrop(size)]
                         + ([T.RandomHorizontalFlip()] if dataset.augment == "crop_flip" else [])
                         + [T.ToTensor(), norm])
    eval_tf = T.Compose(g + [T.Resize(int(size * 8 / 7)), T.CenterCrop(size), T.ToTensor(), norm])
    train, val, test = splits
    kw = dict(num_workers=dataset.num_workers, device=device, channels_last=channels_last)
    return Data("imagefolder",
                StreamLoader(ImageFiles(train, train_tf), train_cfg.batch_size, train=True,
                             seed=seed, **kw),
                StreamLoader(ImageFiles(val, eval_tf), train_cfg.eval_batch_size, train=False,
                             seed=seed, **kw),
                StreamLoader(ImageFiles(test, eval_tf), train_cfg.eval_batch_size, train=False,
                             seed=seed, **kw),
                classes, channels, size, fast_path=False, source=path)
