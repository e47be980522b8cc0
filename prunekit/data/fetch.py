"""Fetching a data set through torchvision, and saying in a few words why it failed."""
from __future__ import annotations

import os

import numpy as np
import torch

from prunekit.data.build import Arrays
from prunekit.data.images import Images, to_uint8_nchw
from prunekit.errors import ConfigError

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


def download_error(name: str, root: str, err: Exception) -> ConfigError:
    return ConfigError(f"dataset.root={root}: {name} is not there and could not be fetched "
                       f"({fetch_failure(err)}); put the files there, or run once with network "
                       "access and dataset.download=true")


def torchvision_arrays(cls, name: str, dataset, channels_last_input: bool):
    root = os.path.expanduser(str(dataset.root))
    try:
        train = cls(root, train=True, download=dataset.download)
        test = cls(root, train=False, download=dataset.download)
    except Exception as e:  # offline, missing files, corrupt archive
        raise download_error(name, root, e) from e
    classes = len(train.classes)

    def split(ds) -> Images:
        return Images(to_uint8_nchw(ds.data, channels_last_input),
                      torch.as_tensor(np.asarray(ds.targets)).long())

    return Arrays(split(train), split(test), classes, root)
