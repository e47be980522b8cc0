"""The files of an image folder (ImageNet layout: one folder per class), indexed so that it cannot
mislabel: labels come from train/'s class names (val/ is read with train's labels, by name), a
directory link is followed only into new ground (a loop, or a link into another class's folder,
is skipped and said), and an image that cannot be decoded is named. The index also fingerprints
the files (names, sizes, mtimes), which keys the dense cache by what the folder holds."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

from prunekit.errors import ConfigError, first_line

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnreadableImage(ConfigError):
    """An image file that cannot be decoded (truncated, not an image), by its path."""


@dataclass
class FolderIndex:
    """One split's images: (path, label) pairs, and the directory links left unfollowed."""

    samples: List[Tuple[str, int]]
    skipped_links: List[str] = field(default_factory=list)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)


def class_names(split_dir: str) -> List[str]:
    """The class folders of a split, sorted by name (a linked class folder counts)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and
                  not e.name.startswith("."))


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def index_split(split_dir: str, classes: Dict[str, int], what: str) -> FolderIndex:
    """Every image under `split_dir`'s class folders, labelled by `classes` (train's names);
    a class folder that `classes` lacks is a ConfigError naming it. A directory link is
    followed once, and only where it leads neither above its own folder (a loop) nor into
    another class's folder."""
    root = os.path.realpath(split_dir)
    samples: List[Tuple[str, int]] = []
    skipped: List[str] = []
    seen = set()
    for name in class_names(split_dir):
        if name not in classes:
            raise ConfigError(f"{what}/{name} is a class that train/ does not have (train has "
                              f"{len(classes)}): every val/ class must be a train/ class")
        class_dir = os.path.join(split_dir, name)
        home = os.path.realpath(class_dir)
        seen.add(home)
        for folder, dirnames, filenames in os.walk(class_dir, followlinks=True):
            kept = []
            for d in sorted(dirnames):
                real = os.path.realpath(os.path.join(folder, d))
                if real in seen or inside(home, real) or (inside(real, root) and
                                                          not inside(real, home)):
                    skipped.append(os.path.relpath(os.path.join(folder, d), split_dir))
                    continue
                seen.add(real)
                kept.append(d)
            dirnames[:] = kept
            samples += [(os.path.join(folder, f), classes[name]) for f in sorted(filenames)
                        if f.lower().endswith(IMAGE_EXTENSIONS)]
    return FolderIndex(samples, skipped)


def fingerprint(indexes: List[FolderIndex], base: str) -> str:
    """sha256 over every file's path (below `base`), size and mtime: what the folder holds."""
    h = hashlib.sha256()
    for index in indexes:
        for path, label in index.samples:
            st = os.stat(path)
            h.update(f"{os.path.relpath(path, base)}|{label}|{st.st_size}|{st.st_mtime_ns}\n"
                     .encode())
    return h.hexdigest()[:16]


def read_image(path: str):
    """An image file as an RGB (or greyscale) PIL image, or UnreadableImage naming the file."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
    except Exception as e:  # truncated, not an image, unreadable
        raise UnreadableImage(f"{path} cannot be read as an image ({first_line(e, 80)}): "
                              "replace or remove it") from None


class ImageFiles(torch.utils.data.Dataset):
    """The images of a FolderIndex (or a part of it), each through `transform`."""

    def __init__(self, samples: List[Tuple[str, int]], transform=None):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = read_image(path)
        return (self.transform(img) if self.transform is not None else img), label


def unwrap_worker_error(e: UnreadableImage) -> UnreadableImage:
    """A DataLoader worker's UnreadableImage arrives re-raised with the worker's traceback as its
    message: its own one line again."""
    text = str(e)
    tag = f"{UnreadableImage.__name__}: "
    return UnreadableImage(text.rsplit(tag, 1)[1].strip()) if tag in text else e


def describe_classes(train: List[str], val_index: FolderIndex, classes: Dict[str, int],
                     skipped: List[str]) -> str:
    """What the data line adds: train classes val/ lacks, directory links not followed."""
    notes = []
    present = {label for _, label in val_index.samples}
    missing = [name for name in train if classes[name] not in present]
    if missing:
        notes.append(f"val/ lacks {len(missing)} class(es) ({', '.join(missing[:3])}"
                     f"{', ...' if len(missing) > 3 else ''}): labels still by name")
    if skipped:
        notes.append(f"{len(skipped)} directory link(s) not followed (a loop or another class's "
                     f"folder: {', '.join(skipped[:2])}{', ...' if len(skipped) > 2 else ''})")
        log.warning("imagefolder: %s", notes[-1])
    return "; ".join(notes)
