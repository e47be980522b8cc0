"""Datasets -> train / val / test.

`val` is held out from the training split (stratified, seeded by `dataset.split_seed`, the same for
every run seed) and is what every decision uses; `test` is only for reporting.

Fast path: small datasets are decoded once into uint8 tensors (on the GPU when there is one) and
served by `TensorLoader`, which augments whole batches with tensor ops: no per-sample PIL work and
no worker processes in the hot loop. Large image folders stream through a torchvision DataLoader.

A data set is one module of this package, imported (and so registered in `DATASETS`) with the
package: `@image_arrays("name")` on a function returning the (train, test, classes) uint8 images of
an in-memory set (split, subset, resize and normalisation shared), or `@DATASETS.register("name")`
on a builder of the whole `Data` (see imagefolder.py).
"""
from prunekit.data.build import DATASETS, build_data, image_arrays
from prunekit.data.fetch import fetch_failure
from prunekit.data.images import Images, stratified_split, subsample, subset_indices
from prunekit.data.loaders import Data, StreamLoader, TensorLoader, random_crop, random_flip
from prunekit.registry import import_all

import_all(__name__, __path__)

__all__ = ["DATASETS", "Data", "Images", "StreamLoader", "TensorLoader", "build_data",
           "fetch_failure", "image_arrays", "random_crop", "random_flip", "stratified_split",
           "subsample", "subset_indices"]
