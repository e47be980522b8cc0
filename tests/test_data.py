"""Datasets: splits, the in-memory fast path, and real on-disk formats written by the tests."""
import pickle

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from PIL import Image

from prunekit.data import TensorLoader, build_data, fetch_failure, random_crop, stratified_split
from prunekit.errors import ConfigError

TRAIN = OmegaConf.create({"batch_size": 32, "eval_batch_size": 64})


def dataset_cfg(name="digits", **kw):
    base = {"name": name, "root": "/nonexistent", "path": None, "download": False,
            "image_size": None,
            "val_fraction": 0.1, "test_fraction": 0.2, "subset": 1.0, "split_seed": 0,
            "augment": "crop", "in_memory": None, "num_workers": 0, "num_samples": 100,
            "num_classes": 4}
    base.update(kw)
    return OmegaConf.create(base)


def test_stratified_split_is_disjoint_complete_and_stratified():
    labels = torch.arange(10).repeat_interleave(50)
    rest, held = stratified_split(labels, 0.2, seed=3)
    assert len(set(rest.tolist()) & set(held.tolist())) == 0
    assert sorted(rest.tolist() + held.tolist()) == list(range(500))
    assert torch.bincount(labels[held]).tolist() == [10] * 10
    again, _ = stratified_split(labels, 0.2, seed=3)
    other, _ = stratified_split(labels, 0.2, seed=4)
    assert torch.equal(rest, again) and not torch.equal(rest, other)


def test_digits_splits():
    data = build_data(dataset_cfg(), TRAIN, channels=3)
    n_train, n_val, n_test = (data.train.num_samples, data.val.num_samples, data.test.num_samples)
    assert n_train + n_val + n_test == 1797
    assert n_test == pytest.approx(0.2 * 1797, abs=10)
    assert n_val == pytest.approx(0.1 * (1797 - n_test), abs=10)
    assert data.num_classes == 10 and data.image_size == 8
    x, y = next(iter(data.train))
    assert x.shape == (32, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    # splits depend on split_seed only: every run seed of a sweep sees the same val set
    other = build_data(dataset_cfg(), TRAIN, channels=3, seed=7)
    assert torch.equal(other.val.split.images, data.val.split.images)
    # no image index is shared: val is held out of train (compare as raw bytes per image)
    train_set = {bytes(t.numpy()) for t in data.train.split.images}
    test_set = {bytes(t.numpy()) for t in data.test.split.images}
    val_set = {bytes(t.numpy()) for t in data.val.split.images}
    # digits has a few exact duplicate images; the overlap must be no more than those
    assert len(train_set & val_set) <= 3 and len(train_set & test_set) <= 5


def test_digits_upsampling_subset_and_channels():
    data = build_data(dataset_cfg(image_size=16, subset=0.25), TRAIN, channels=1)
    assert data.image_size == 16 and data.channels == 1
    assert data.train.num_samples == pytest.approx(0.25 * 1295, abs=12)
    x, _ = next(iter(data.test))
    assert x.shape[1:] == (1, 16, 16)


def test_tensor_loader_batches_and_determinism():
    imgs = torch.randint(0, 255, (70, 1, 8, 8), dtype=torch.uint8)
    from prunekit.data import Images
    split = Images(imgs, torch.arange(70) % 3)
    kw = dict(mean=torch.zeros(1), std=torch.ones(1), channels=3)
    train = TensorLoader(split, 32, train=True, augment="crop_flip", seed=1, **kw)
    assert len(train) == 2  # drop_last while training: BatchNorm cannot take a batch of 6
    a = [x for x, _ in train]
    train.reseed(1)
    b = [x for x, _ in train]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert a[0].shape == (32, 3, 8, 8)
    ev = TensorLoader(split, 32, **kw)
    assert len(ev) == 3 and sum(len(y) for _, y in ev) == 70
    first, _ = next(iter(ev))
    assert torch.allclose(first[:, 0], imgs[:32, 0].float() / 255)  # no augmentation, in order


def test_random_crop_takes_shifted_windows():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, 1, gen)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)


def write_cifar10(root, n_per_batch=10):
    """CIFAR-10's python format: pickled dicts with a (N, 3072) uint8 'data' and 'labels'."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 200, (n_per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n_per_batch)]
        if name == "test_batch":
            data[0] = 0
            data[0, 1] = 255  # red channel, row 0, column 1
            data[0, 1024 + 32] = 254  # green channel, row 1, column 0
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def test_cifar10_from_real_pickle_files(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    # torchvision checks the md5 of the files it knows; these are the test's own files
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    data = build_data(dataset_cfg("cifar10", root=str(tmp_path), augment="crop_flip"), TRAIN,
                      channels=3)
    assert data.num_classes == 10 and data.image_size == 32
    assert data.train.num_samples + data.val.num_samples == 50
    assert data.test.num_samples == 10
    img = data.test.split.images[0]
    assert img.shape == (3, 32, 32)
    assert img[0, 0, 1] == 255 and img[1, 1, 0] == 254 and int(img.sum()) == 255 + 254


def test_missing_download_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root=.*CIFAR-10 is not there") as e:
        build_data(dataset_cfg("cifar10", root=str(tmp_path)), TRAIN, channels=3)
    assert "\n" not in str(e.value)


def torchvision_mirror_error(reason: str) -> RuntimeError:
    """What torchvision's MNIST raises when every mirror fails: the reason is on later lines."""
    return RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n"
                        f"Tried https://mirror-a/, got:\n<urlopen error {reason}>\n"
                        f"Tried https://mirror-b/, got:\n<urlopen error {reason}>\n")


@pytest.mark.parametrize("err, says", [
    (torchvision_mirror_error("[Errno -3] Temporary failure in name resolution"),
     "no network: the download host's name could not be resolved"),
    (torchvision_mirror_error("[Errno 101] Network is unreachable"),
     "no network: the host is unreachable"),
    (torchvision_mirror_error("timed out"), "the download timed out"),
    (RuntimeError("Dataset not found or corrupted. You can use download=True to download it"),
     "the files are not there and dataset.download=false"),
    (torchvision_mirror_error("HTTP Error 503: Service Unavailable"),
     "<urlopen error HTTP Error 503: Service Unavailable>"),
])
def test_a_failed_fetch_says_why(err, says):
    assert fetch_failure(err) == says


def test_an_offline_mnist_names_what_failed(tmp_path, monkeypatch):
    """torchvision's own download code, its network call failing as it does offline."""
    from urllib.error import URLError

    import torchvision.datasets.utils as tv_utils

    def offline(*a, **k):
        raise URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(tv_utils, "_urlretrieve", offline)
    with pytest.raises(ConfigError, match="no network: the download host's name could not be "
                                          "resolved") as e:
        build_data(dataset_cfg("mnist", root=str(tmp_path), download=True), TRAIN, channels=1)
    assert "\n" not in str(e.value) and "()" not in str(e.value)


def test_fake_data():
    data = build_data(dataset_cfg("fake", image_size=16, num_samples=80, num_classes=4,
                                  augment="none"), TRAIN, channels=3)
    assert data.num_classes == 4 and data.image_size == 16
    assert data.train.num_samples + data.val.num_samples == 80 and data.test.num_samples == 16


def write_image_folder(root, n=6, size=12):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


@pytest.mark.parametrize("in_memory", [True, False])
def test_image_folder(tmp_path, in_memory):
    write_image_folder(tmp_path)
    cfg = dataset_cfg("imagefolder", path=str(tmp_path), image_size=8, in_memory=in_memory,
                      val_fraction=0.34)
    data = build_data(cfg, OmegaConf.create({"batch_size": 4, "eval_batch_size": 4}), channels=3)
    assert data.fast_path == in_memory
    assert data.num_classes == 2
    assert data.train.num_samples + data.val.num_samples == 12 and data.test.num_samples == 12
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 8, 8) and set(y.tolist()) <= {0, 1}


# ---------------------------------------------------------------- MNIST-format (IDX) files
def write_idx(path, array, compress=True):
    """An IDX file as LeCun's and Zalando's are: zero, zero, 0x08 (bytes), ndim, big-endian dims."""
    import gzip

    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_fashion(folder, n_train=60, n_test=20, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)),
                  compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)


@pytest.mark.parametrize("where", ["path", "debian", "torchvision_layout"])
def test_fashion_mnist_from_idx_files_offline(tmp_path, monkeypatch, where):
    import prunekit.data.idx as data_mod

    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    folder = {"path": tmp_path / "mine", "debian": tmp_path / "debian",
              "torchvision_layout": tmp_path / "root" / "FashionMNIST" / "raw"}[where]
    write_fashion(folder, compress=where != "torchvision_layout")  # torchvision unpacks them
    cfg = dataset_cfg("fashion_mnist", root=str(tmp_path / "root"), augment="none",
                      path=str(folder) if where == "path" else None)
    data = build_data(cfg, TRAIN, channels=1)
    assert data.num_classes == 10 and data.image_size == 28
    assert data.train.num_samples + data.val.num_samples == 60 and data.test.num_samples == 20
    assert data.test.split.images.shape == (20, 1, 28, 28)
    assert data.test.split.labels.tolist() == [i % 10 for i in range(20)]
    assert data.source == str(folder) and f"from {folder}" in data.describe()  # the data line


@pytest.mark.parametrize("named", ["empty folder", "no such folder"])
def test_a_named_path_is_the_only_place_looked_at(tmp_path, monkeypatch, named):
    """A typo in dataset.path must not train on Debian's copy: one line naming the path and
    the files it lacks, though the files are in the default places."""
    import prunekit.data.idx as data_mod

    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    write_fashion(tmp_path / "debian")
    write_fashion(tmp_path / "root" / "FashionMNIST" / "raw")
    folder = tmp_path / "mine"
    if named == "empty folder":
        folder.mkdir()
    cfg = dataset_cfg("fashion_mnist", root=str(tmp_path / "root"), path=str(folder))
    with pytest.raises(ConfigError) as e:
        build_data(cfg, TRAIN, channels=1)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"dataset.path={folder} ")
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert ("is no folder" in msg) == (named == "no such folder")
    cfg.path = None  # unnamed: the search order finds Debian's copy
    assert build_data(cfg, TRAIN, channels=1).source == str(tmp_path / "debian")


@pytest.mark.parametrize("damage, says", [
    ("truncate", "is truncated or corrupt"),
    ("labels", "has label 12, outside 0..9"),
    ("count", "holds 60 images but"),
    ("header", "is not an IDX file of bytes"),
])
def test_a_damaged_idx_file_is_named_in_one_line(tmp_path, damage, says):
    write_fashion(tmp_path, compress=False)
    labels, images = tmp_path / "train-labels-idx1-ubyte", tmp_path / "train-images-idx3-ubyte"
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "labels":
        write_idx(labels, np.full(60, 12), compress=False)
    elif damage == "count":
        write_idx(labels, np.zeros(59), compress=False)
    else:
        images.write_bytes(b"\x1f\x8b" + images.read_bytes()[2:])
    cfg = dataset_cfg("fashion_mnist", root=str(tmp_path / "root"), path=str(tmp_path))
    with pytest.raises(ConfigError, match=says) as e:
        build_data(cfg, TRAIN, channels=1)
    assert "\n" not in str(e.value) and "train-" in str(e.value)


def test_fashion_mnist_absent_offline_says_how_to_get_it(tmp_path, monkeypatch):
    import prunekit.data.idx as data_mod

    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    cfg = dataset_cfg("fashion_mnist", root=str(tmp_path / "root"))
    with pytest.raises(ConfigError, match=r"apt-get install dataset-fashion-mnist.*make data.*"
                                          r"dataset.download=true") as e:
        build_data(cfg, TRAIN, channels=1)
    assert "\n" not in str(e.value)


def test_calibration_sample_is_fixed_unaugmented_whole_batches_and_never_a_batch_of_one():
    data = build_data(dataset_cfg(), TRAIN, channels=3)  # 1295 train images, augment=crop
    calib = data.calibration(70, seed=0)  # ~70 images: two batches of 32, no trailing one
    first, again = list(calib), list(calib)
    assert [len(y) for _, y in first] == [32, 32]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))  # the same every pass
    images = data.train.split.images.float().div(255.0)
    mean, std = data.train.mean, data.train.std
    # unaugmented: every calibration image is a train image exactly as normalised, uncropped
    pool = ((images - mean) / std).expand(-1, 3, -1, -1).flatten(1)
    x = first[0][0].flatten(1)
    exact = torch.cdist(x, pool, compute_mode="donot_use_mm_for_euclid_dist")  # (mm: ~4e-3 off)
    assert exact.min(1).values.max() < 1e-5
    assert sum(len(y) for _, y in data.calibration(10_000, seed=0)) <= data.train.num_samples
    # a distributed rank calibrates on the whole batches, as every other rank does
    shard = data.shard(1, 2)
    assert [len(y) for _, y in shard.calibration(70, seed=0)] == [32, 32]
