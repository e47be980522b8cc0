"""CIFAR-10 and CIFAR-100, through torchvision (downloaded into `dataset.root`)."""
from __future__ import annotations

from prunekit.data.build import image_arrays
from prunekit.data.fetch import torchvision_arrays


@image_arrays("cifar10")
def load_cifar10(dataset):
    import torchvision  # here, not at import: `prune-run` starts without it

    return torchvision_arrays(torchvision.datasets.CIFAR10, "CIFAR-10", dataset, True)


@image_arrays("cifar100")
def load_cifar100(dataset):
    import torchvision

    return torchvision_arrays(torchvision.datasets.CIFAR100, "CIFAR-100", dataset, True)
