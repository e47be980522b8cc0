"""digits: scikit-learn's 1797 handwritten 8x8 digits (offline, shipped with scikit-learn)."""
from __future__ import annotations

import torch

from prunekit.data.build import Arrays, image_arrays
from prunekit.data.images import Images, stratified_split


@image_arrays("digits")
def load_digits(dataset) -> Arrays:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images).float().mul_(255.0 / 16.0).round_().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    full = Images(images.unsqueeze(1), labels)
    # digits has no official test split: a fixed, stratified one (same for every run)
    train_idx, test_idx = stratified_split(labels, dataset.test_fraction, dataset.split_seed + 1)
    return Arrays(full.take(train_idx), full.take(test_idx), 10, "scikit-learn's bundled digits")
