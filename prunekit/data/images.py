"""Decoded splits: uint8 images with their labels, stratified splitting and subsets, resizing and
channel conversion, shared by every data set."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from prunekit.errors import ConfigError


@dataclass
class Images:
    """A decoded split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor) -> "Images":
        return Images(self.images[idx], self.labels[idx])


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


def to_uint8_nchw(array, channels_last_input: bool) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(array))
    if t.ndim == 3:  # (N, H, W) grayscale
        t = t.unsqueeze(1)
    elif channels_last_input:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous().to(torch.uint8)


def resize_images(images: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    if size is None or images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in torch.split(images, 4096):  # bounded memory for large sets
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < chunk.shape[-1])
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grayscale -> RGB is done lazily per batch (expand); RGB -> grayscale here (luma)."""
    if images.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if images.shape[1] not in (1, channels):
        raise ConfigError(f"model.in_channels={channels} cannot take {images.shape[1]}-channel "
                          "images: set model.in_channels to 1 or 3")
    return images


def decode_all(dataset) -> Images:
    from torchvision.transforms import PILToTensor  # here: `prune-run` starts without torchvision

    to_tensor = PILToTensor()
    images, labels = [], []
    for img, label in dataset:
        images.append(to_tensor(img.convert("RGB") if img.mode not in ("L", "RGB") else img))
        labels.append(int(label))
    return Images(torch.stack(images).to(torch.uint8), torch.tensor(labels, dtype=torch.long))
