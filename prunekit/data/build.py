"""The data-set registry and what every in-memory data set shares: the validation split, the
subset, resizing, channel matching and normalisation."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, NamedTuple, Tuple

import torch

from prunekit.data.images import (
    Images,
    match_channels,
    resize_images,
    stratified_split,
    subsample,
)
from prunekit.data.loaders import Data, TensorLoader
from prunekit.registry import Registry


class Arrays(NamedTuple):
    """What an in-memory data set's loader returns: uint8 NCHW train and test images, the class
    count, and where the images came from (a folder, a package), which the run's data line says."""

    train: Images
    test: Images
    num_classes: int
    source: str


# A builder: (dataset_cfg, train_cfg, channels, device, seed, channels_last) -> Data.
DATASETS: Registry[Callable[..., "Data"]] = Registry("dataset")


def image_arrays(name: str) -> Callable:
    """Register `load(dataset_cfg) -> Arrays` (uint8 NCHW train and test images) as data set
    `name`; the validation split, subset, resize and normalisation are the shared ones."""
    def wrap(load: Callable) -> Callable:
        def build(dataset_cfg, train_cfg, channels, device, seed, channels_last) -> Data:
            return in_memory_data(name, load(dataset_cfg), dataset_cfg, train_cfg, channels, device,
                              seed, channels_last)

        DATASETS.register(name)(build)
        return load
    return wrap


def mean_std(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
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


def tensor_data(name, train: Images, val: Images, test: Images, num_classes: int, channels: int,
                 dataset, train_cfg, device, seed: int, channels_last: bool, source: str) -> Data:
    mean, std = mean_std(train.images)
    if train.images.shape[1] != channels:  # grayscale served to an RGB model
        mean, std = mean.expand(channels).clone(), std.expand(channels).clone()
    splits = [Images(s.images.to(device), s.labels.to(device)) for s in (train, val, test)]
    common = dict(mean=mean, std=std, channels=channels, channels_last=channels_last)
    return Data(
        name,
        TensorLoader(splits[0], train_cfg.batch_size, train=True, augment=dataset.augment,
                     seed=seed, **common),
        TensorLoader(splits[1], train_cfg.eval_batch_size, **common),
        TensorLoader(splits[2], train_cfg.eval_batch_size, **common),
        num_classes, channels, train.images.shape[-1], fast_path=True, source=source)


def in_memory_data(name, arrays: Arrays, dataset_cfg, train_cfg, channels: int, device, seed: int,
               channels_last: bool) -> Data:
    """A data set held as uint8 tensors: resized, channels matched, split, subsampled. Read from
    the user's files (`dataset.path`), its content is fingerprinted for the dense cache key."""
    train_full, test, num_classes, source = arrays
    content = images_digest(train_full, test) if dataset_cfg.get("path") else ""
    size = dataset_cfg.image_size
    prepared = []
    for split in (train_full, test):
        imgs = match_channels(resize_images(split.images, size), channels)
        prepared.append(Images(imgs, split.labels))
    train_full, test = prepared
    train_idx, val_idx = stratified_split(train_full.labels, dataset_cfg.val_fraction,
                                          dataset_cfg.split_seed)
    train, val = train_full.take(train_idx), train_full.take(val_idx)
    s, seed_split = dataset_cfg.subset, dataset_cfg.split_seed
    train, val, test = (subsample(x, s, seed_split) for x in (train, val, test))
    data = tensor_data(name, train, val, test, num_classes, channels, dataset_cfg, train_cfg,
                       device, seed, channels_last, source)
    return dataclasses.replace(data, content=content)


def images_digest(*splits: Images) -> str:
    """sha256 over the splits' images and labels: what the files held."""
    h = hashlib.sha256()
    for split in splits:
        for t in (split.images, split.labels):
            h.update(f"{tuple(t.shape)}|".encode())
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def build_data(dataset_cfg, train_cfg, channels: int, device="cpu", seed: int = 0,
               channels_last: bool = False) -> Data:
    """Build the train / val / test loaders of `dataset_cfg` for a model taking `channels`."""
    build = DATASETS.choose(dataset_cfg.name, "dataset.name")
    return build(dataset_cfg, train_cfg, channels, device, seed, channels_last)
