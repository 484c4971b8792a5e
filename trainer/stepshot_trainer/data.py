"""Data: Fashion-MNIST held in memory, or minimal ImageFolder trees (ImageNet-style).

Every source returns uint8 image batches `[N, C, H, W]`; `normalize` turns them
into float input. All randomness (shuffling, augmentation) comes from
`torch.Generator`s seeded by pure functions of (seed, epoch, step, rank), so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from stepshot.errors import StepshotError

DEFAULT_FMNIST = "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DataError(StepshotError, FileNotFoundError):
    """The data set is missing or not what the spec says."""


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of its parts (stable across processes)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


class ImageSource(Protocol):
    labels: torch.Tensor        # int64 [N]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int: ...
    def load(self, idx: torch.Tensor, *, train: bool, gen: torch.Generator | None = None) -> torch.Tensor: ...


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    # Standard strides: C=1 batches made by permute/where can carry channels-last strides,
    # which send oneDNN down a channels-last conv path that corrupts the heap in backward
    # (torch 2.13 CPU, odd channel counts).
    x = images.to(torch.float32, memory_format=torch.contiguous_format)
    return (x.div_(255) - m) / s


def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[idx] for a CPU index into a tensor on any device (the index travels without a sync)."""
    return t[idx.to(t.device, non_blocking=True)]


# --------------------------------------------------------------------------- Fashion-MNIST

def read_idx(path: Path, limit: int = 0) -> np.ndarray:
    """Decode a gzipped IDX file (ubyte data only); `limit` reads just the first N items."""
    with gzip.open(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise DataError(f"{path}: not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        count = min(dims[0], limit) if limit else dims[0]
        item = math.prod(dims[1:])
        data = np.frombuffer(f.read(count * item), dtype=np.uint8)
    return data.reshape(count, *dims[1:])


def _fmnist_file(root: Path, name: str) -> Path:
    path = root / name
    if not path.exists():
        raise DataError(
            f"Fashion-MNIST file {path} not found; install it with `apt-get install dataset-fashion-mnist` "
            f"or set spec.dataset.path")
    return path


class FashionMNIST:
    """A split of Fashion-MNIST decoded into memory: uint8 [N, 1, 28, 28]."""

    num_classes = 10

    def __init__(self, root: str | Path = DEFAULT_FMNIST, split: str = "train", limit: int = 0):
        root = Path(root)
        images, labels = FMNIST_FILES[split]
        self.images = torch.from_numpy(read_idx(_fmnist_file(root, images), limit).copy()).unsqueeze(1)
        self.labels = torch.from_numpy(read_idx(_fmnist_file(root, labels), limit).astype(np.int64))
        self.mean, self.std = _fmnist_stats(root)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: str | torch.device) -> "FashionMNIST":
        """Keep the split on `device` (all of it fits a GPU): batches are then cut and augmented
        there, with the same random draws as on the CPU."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def load(self, idx: torch.Tensor, *, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        batch = take(self.images, idx)
        return crop_flip(batch, padding=4, gen=gen) if train else batch


_STATS: dict[Path, tuple[tuple[float], tuple[float]]] = {}


def _fmnist_stats(root: Path) -> tuple[tuple[float], tuple[float]]:
    """Mean/std of the full training split (independent of `limit`, so every run normalises alike)."""
    if root not in _STATS:
        counts = np.bincount(read_idx(_fmnist_file(root, FMNIST_FILES["train"][0])).ravel(), minlength=256)
        values = np.arange(256) / 255.0
        mean = float((counts * values).sum() / counts.sum())
        var = float((counts * values**2).sum() / counts.sum()) - mean**2
        _STATS[root] = ((mean,), (math.sqrt(var),))
    return _STATS[root]


def crop_flip(batch: torch.Tensor, *, padding: int, gen: torch.Generator | None) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip, batch-wise on a uint8 tensor.

    The draws come from the CPU generator whatever the batch's device, so a GPU run
    augments exactly as a CPU run does."""
    n, _, h, w = batch.shape
    dev = batch.device
    padded = F.pad(batch, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(dev, non_blocking=True)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(dev, non_blocking=True)
    flip = (torch.rand(n, generator=gen) < 0.5).to(dev, non_blocking=True)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]           # [n, h, 1]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]           # [n, 1, w]
    out = padded.permute(0, 2, 3, 1)[torch.arange(n, device=dev)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()


# --------------------------------------------------------------------------- ImageFolder

class ImageFolder:
    """`root/<class>/<image>` (classes sorted), decoded with PIL on demand.

    Train: RandomResizedCrop(size) + flip (spec §3.1); eval: Resize(size*8/7) + CenterCrop(size).
    """

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root: str | Path, *, size: int = 224, limit: int = 0, workers: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"ImageFolder directory {root} not found")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        samples = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
                   if f.suffix.lower() in IMAGE_EXTENSIONS]
        samples = samples[:limit] if limit else samples
        self.files = [f for f, _ in samples]
        self.labels = torch.tensor([c for _, c in samples], dtype=torch.int64)
        self.num_classes = len(classes)
        self.size = size
        self.workers = workers

    def __len__(self) -> int:
        return len(self.files)

    def load(self, idx: torch.Tensor, *, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        # Random parameters are drawn here, in order, so threads cannot change them.
        params = [(torch.rand(6, generator=gen).tolist() if train else None) for _ in idx]
        jobs = [(self.files[i], p) for i, p in zip(idx.tolist(), params)]
        if self.workers > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                images = list(pool.map(lambda job: self._decode(*job), jobs))
        else:
            images = [self._decode(*job) for job in jobs]
        return torch.stack(images)

    def _decode(self, path: Path, rand: list[float] | None) -> torch.Tensor:
        from PIL import Image  # lazy: Fashion-MNIST runs need no PIL

        with Image.open(path) as img:
            img = img.convert("RGB")
            if rand is None:
                img = _center(img, self.size)
            else:
                img = img.resize((self.size, self.size), Image.BILINEAR, box=_rrc_box(img.size, rand))
                if rand[5] < 0.5:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
            return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def _rrc_box(wh: tuple[int, int], rand: list[float], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop's box from five uniforms (one try; falls back to the largest centred crop)."""
    w, h = wh
    area = w * h * (scale[0] + rand[0] * (scale[1] - scale[0]))
    aspect = math.exp(math.log(ratio[0]) + rand[1] * (math.log(ratio[1]) - math.log(ratio[0])))
    cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if not (0 < cw <= w and 0 < ch <= h):
        cw = ch = min(w, h)
    x0 = int(rand[2] * (w - cw + 1)) if rand[2] < 1 else w - cw
    y0 = int(rand[3] * (h - ch + 1)) if rand[3] < 1 else h - ch
    return (x0, y0, x0 + cw, y0 + ch)


def _center(img, size: int):
    from PIL import Image

    w, h = img.size
    short = round(size * 8 / 7)
    scale = short / min(w, h)
    img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


# --------------------------------------------------------------------------- sources from a spec

def open_source(spec, split: str) -> ImageSource:
    """The train or eval split named by `spec.dataset` (paths relative to the YAML file)."""
    ds = spec.dataset
    root = spec.resolve(ds.path) if hasattr(spec, "resolve") else Path(ds.path)
    limit = ds.train_limit if split == "train" else ds.eval_limit
    if ds.kind == "fashion-mnist":
        return FashionMNIST(root, "train" if split == "train" else "test", limit)
    folder = root / ("train" if split == "train" else "val")
    return ImageFolder(folder, limit=limit, workers=spec.training.workers)


# --------------------------------------------------------------------------- batching

class TrainLoader:
    """DistributedSampler-style sharded, per-epoch shuffled, augmented training batches.

    The epoch permutation is a function of (seed, epoch); rank r takes every world-th index;
    the augmentation of step s is a function of (seed, epoch, s, rank). Incomplete batches are
    dropped so every rank runs the same number of steps.
    """

    def __init__(self, source: ImageSource, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = len(source) // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise DataError(f"{len(source)} images are fewer than one global batch "
                             f"({batch_size} x {world_size} processes)")

    def __len__(self) -> int:
        return self.steps_per_epoch

    def indices(self, epoch: int) -> torch.Tensor:
        perm = torch.randperm(len(self.source), generator=generator("shuffle", self.seed, epoch))
        used = perm[: self.steps_per_epoch * self.batch_size * self.world_size]
        return used[self.rank::self.world_size]

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalised images, labels) of steps start.. of `epoch` on this rank."""
        local = self.indices(epoch)
        for step in range(start, self.steps_per_epoch):
            idx = local[step * self.batch_size:(step + 1) * self.batch_size]
            gen = generator("augment", self.seed, epoch, step, self.rank)
            images = self.source.load(idx, train=True, gen=gen)
            yield normalize(images, self.source.mean, self.source.std), take(self.source.labels, idx)


def _fixed_indices(source: ImageSource, count: int, seed: int, tag: str) -> torch.Tensor:
    perm = torch.randperm(len(source), generator=generator(tag, seed))
    return perm[: min(count, len(source))]


def calibration_batches(source: ImageSource, batches: int, batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    """A fixed set of un-augmented, normalised batches for BN recalibration (same for every arch)."""
    idx = _fixed_indices(source, batches * batch_size, seed, "calibration")
    images = normalize(source.load(idx, train=False), source.mean, source.std)
    return list(images.split(batch_size))


def eval_subset(source: ImageSource, images: int, batch_size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, normalised evaluation subset, split into batches."""
    idx = _fixed_indices(source, images, seed, "eval")
    x = normalize(source.load(idx, train=False), source.mean, source.std)
    return list(zip(x.split(batch_size), take(source.labels, idx).split(batch_size)))
