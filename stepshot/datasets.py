"""The data sets' layout on disk, as the trainer reads it (stepshot_trainer.data), and the
check that a folder holds it: the files exist, are readable by this process's user, and
have the expected shape. Torch-free: the preflight runs it before any training."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FMNIST_SHAPE = (28, 28)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
IMAGEFOLDER_SPLITS = ("train", "val")


def idx_dims(path: Path) -> tuple[int, ...]:
    """The dimensions in a gzipped unsigned-byte IDX header (reads 16 bytes at most)."""
    with gzip.open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            raise ValueError("shorter than an IDX header")
        zero, dtype, ndim = struct.unpack(">HBB", head)
        if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 3:
            raise ValueError("not an unsigned-byte IDX file")
        return struct.unpack(f">{ndim}I", f.read(4 * ndim))


def fmnist_errors(root: Path) -> list[str]:
    """Why `root` does not hold Fashion-MNIST's four IDX files (file: what is wrong)."""
    if not root.is_dir():
        return [f"{root}: no such directory"]
    errors, missing = [], []
    for images, labels in FMNIST_FILES.values():
        dims = {}
        for name in (images, labels):
            try:
                dims[name] = idx_dims(root / name)
            except FileNotFoundError:
                missing.append(name)
            except (OSError, EOFError, ValueError, struct.error) as exc:
                errors.append(f"{root / name}: unreadable: {exc}")
        if len(dims) == 2 and (dims[images][1:] != FMNIST_SHAPE or len(dims[labels]) != 1
                               or dims[images][0] != dims[labels][0]):
            errors.append(f"{root / images}: shape {list(dims[images])} with labels {list(dims[labels])}: "
                          f"expected [N, 28, 28] images and N labels")
    if missing:
        errors.insert(0, f"{root}: {', '.join(missing)} not found (`apt-get install dataset-fashion-mnist`, "
                         f"or a folder holding the four IDX files)")
    return errors


def imagefolder_errors(root: Path) -> list[str]:
    """Why `root` is not train/ and val/ trees of class folders of images with the same classes."""
    errors, classes = [], {}
    for split in IMAGEFOLDER_SPLITS:
        folder = root / split
        try:
            classes[split] = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        except OSError as exc:
            errors.append(f"{folder}: {'not found' if isinstance(exc, FileNotFoundError) else exc}")
            continue
        first = next((f for c in classes[split] for f in (folder / c).rglob("*")
                      if f.suffix.lower() in IMAGE_EXTENSIONS), None)
        if first is None:
            errors.append(f"{folder}: no class folder holds an image ({', '.join(IMAGE_EXTENSIONS)})")
            continue
        try:
            with open(first, "rb") as f:
                f.read(1)
        except OSError as exc:
            errors.append(f"{first}: unreadable: {exc}")
    if len(classes) == 2 and classes["train"] != classes["val"]:
        errors.append(f"{root / 'val'}: {len(classes['val'])} classes, {root / 'train'} has "
                      f"{len(classes['train'])}: the class folders must be the same")
    return errors


def data_errors(kind: str, root: Path) -> list[str]:
    return fmnist_errors(root) if kind == "fashion-mnist" else imagefolder_errors(root)
