"""fake: torchvision's FakeData, random images of a given size and class count (for tests)."""
from __future__ import annotations

from dataclasses import dataclass

from prunekit.config import DatasetConfig, schema
from prunekit.data.build import Arrays, image_arrays
from prunekit.data.images import decode_all
from prunekit.errors import at_least


@schema("dataset", "fake")
@dataclass
class FakeDatasetConfig(DatasetConfig):
    num_samples: int = 1000  # train size (test is a fifth of it)
    num_classes: int = 10

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        at_least(cfg, "dataset.num_samples", 10)
        at_least(cfg, "dataset.num_classes", 2)


@image_arrays("fake")
def load_fake(dataset):
    import torchvision  # here, not at import: `prune-run` starts without it

    d = dataset
    size = d.image_size or 32
    n_test = max(d.num_samples // 5, d.num_classes)
    kw = dict(image_size=(3, size, size), num_classes=d.num_classes)
    train = torchvision.datasets.FakeData(size=d.num_samples, random_offset=d.split_seed, **kw)
    test = torchvision.datasets.FakeData(size=n_test, random_offset=d.split_seed + 10**6, **kw)
    return Arrays(decode_all(train), decode_all(test), d.num_classes, "torchvision's FakeData")
