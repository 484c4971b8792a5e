"""Data: Fashion-MNIST held in memory, or ImageFolder trees (ImageNet-style) decoded by
DataLoader worker processes.

Every source returns uint8 image batches `[N, C, H, W]`; `normalize` turns them
into float input. All randomness (shuffling, augmentation) comes from
`torch.Generator`s seeded by pure functions of (seed, epoch, step, rank), so a
resumed run sees exactly the batches an uninterrupted run would have seen, and the
number of worker processes changes none of them.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import struct
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from stepshot.datasets import FMNIST_FILES, IMAGE_EXTENSIONS  # the layout on disk (one definition)
from stepshot.errors import StepshotError
from stepshot.sizing import PREFETCH
from stepshot.spec import Spec

DEFAULT_FMNIST = "/usr/share/datasets/fashion-mnist"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    in_memory: bool             # False: decoded per batch (by DataLoader workers), shape image_shape

    def __len__(self) -> int: ...
    def load(self, idx: torch.Tensor, *, train: bool, gen: torch.Generator | None = None) -> torch.Tensor: ...


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    # Standard strides: C=1 batches made by permute/where can carry channels-last strides,
    # which send oneDNN down a channels-last conv path that corrupts the heap in backward
    # (torch 2.13 CPU, odd channel counts).
    x = images.to(torch.float32, memory_format=torch.contiguous_format)
    # In place: the same three elementwise ops in the same order (bit-identical results), without
    # two more batch-sized allocations; halves the cost of a 128 x 224 px batch on a CPU.
    return x.div_(255).sub_(m).div_(s)


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
    in_memory = True

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
    in_memory = False

    def __init__(self, root: str | Path, *, size: int = 224, limit: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"ImageFolder directory {root} not found")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        samples = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
                   if f.suffix.lower() in IMAGE_EXTENSIONS]
        samples = samples[:limit] if limit else samples
        self.files = [str(f) for f, _ in samples]   # strings: cheap to hand to worker processes
        self.labels = torch.tensor([c for _, c in samples], dtype=torch.int64)
        self.num_classes = len(classes)
        self.size = size
        self.image_shape = (3, size, size)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, idx: torch.Tensor, *, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        # All random parameters are drawn first, in order: the batch depends on `gen` alone.
        params = [(torch.rand(6, generator=gen).tolist() if train else None) for _ in idx]
        out = torch.empty((len(idx), *self.image_shape), dtype=torch.uint8)
        if get_worker_info() is not None:
            out.share_memory_()   # a DataLoader worker hands it to the trainer without a copy
        for k, (i, rand) in enumerate(zip(idx.tolist(), params)):
            np.copyto(out[k].permute(1, 2, 0).numpy(), np.asarray(self._decode(self.files[i], rand)))
        return out

    def _decode(self, path: str, rand: list[float] | None):
        """The augmented (or centre-cropped) RGB image, size x size."""
        from PIL import Image  # lazy: Fashion-MNIST runs need no PIL

        with Image.open(path) as img:
            img = img.convert("RGB")
            if rand is None:
                img = _center(img, self.size)
            else:
                img = img.resize((self.size, self.size), Image.BILINEAR, box=_rrc_box(img.size, rand))
                if rand[5] < 0.5:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
            return img


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

def open_source(spec: Spec, split: str) -> ImageSource:
    """The train or eval split named by `spec.dataset` (paths relative to the YAML file)."""
    ds = spec.dataset
    root = spec.resolve(ds.path) if hasattr(spec, "resolve") else Path(ds.path)
    limit = ds.train_limit if split == "train" else ds.eval_limit
    if ds.kind == "fashion-mnist":
        return FashionMNIST(root, "train" if split == "train" else "test", limit)
    folder = root / ("train" if split == "train" else "val")
    return ImageFolder(folder, size=spec.search_space.resolution, limit=limit)


def _on_device(images: torch.Tensor, source: ImageSource, device: torch.device | None) -> torch.Tensor:
    """Normalised input on `device`. Decoded batches travel as uint8 (a quarter of the bytes of
    float) and are normalised there; in-memory sources normalise where their images live, as
    they always have, so their results stay bit-identical."""
    if source.in_memory:
        x = normalize(images, source.mean, source.std)
        return x if device is None else x.to(device, non_blocking=True)
    x = images if device is None else images.to(device, non_blocking=True)
    return normalize(x, source.mean, source.std)


def _labels_on(labels: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return labels if device is None else labels.to(device, non_blocking=True)


def _worker_seeds() -> torch.Generator:
    # DataLoader seeds its workers from this instead of drawing from the global RNG; the
    # augmentation has generators of its own, so the seeds change no batch.
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------- training batches

class StepBatches(Dataset):
    """Item (epoch, step): that step's uint8 images and labels on one rank.

    DistributedSampler-style: the epoch permutation is a function of (seed, epoch), rank r
    takes every world-th index, the augmentation of step s is a function of (seed, epoch, s,
    rank). Each item is thus a pure function of its key: any process, and any number of
    worker processes, builds the same batch. Incomplete batches are dropped so every rank runs
    the same number of steps.
    """

    def __init__(self, source: ImageSource, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = len(source) // (batch_size * world_size)
        self._epoch: int | None = None
        self._local = torch.empty(0, dtype=torch.int64)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's indices of `epoch`, in step order (the last epoch's are kept)."""
        if self._epoch != epoch:
            perm = torch.randperm(len(self.source), generator=generator("shuffle", self.seed, epoch))
            used = perm[: self.steps_per_epoch * self.batch_size * self.world_size]
            self._epoch, self._local = epoch, used[self.rank::self.world_size]
        return self._local

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, step = key
        idx = self.indices(epoch)[step * self.batch_size:(step + 1) * self.batch_size]
        gen = generator("augment", self.seed, epoch, step, self.rank)
        return self.source.load(idx, train=True, gen=gen), take(self.source.labels, idx)


class StepKeys(Sampler):
    """The (epoch, step) keys still to run in an epoch. Its position is the trainer's (epoch,
    step) pair, which every checkpoint stores: a resumed run starts the sampler there."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.epoch = self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, step) for step in range(self.start, self.steps_per_epoch))

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start


class TrainLoader:
    """One rank's training batches, (normalised images, labels) per step.

    In-memory sources are cut and augmented in-process (on the device they live on). Decoded
    sources (ImageFolder) are built by `workers` DataLoader processes, whole batches at a time,
    PREFETCH batches ahead per worker; the workers stay up across epochs and the batches reach
    the trainer pinned when `device` is a GPU. Worker count never changes a batch (StepBatches).
    """

    def __init__(self, source: ImageSource, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 workers: int = 0, device: str | torch.device | None = None):
        self.source, self.batch_size = source, batch_size
        self.steps = StepBatches(source, batch_size, seed=seed, rank=rank, world_size=world_size)
        self.steps_per_epoch = self.steps.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise DataError(f"{len(source)} images are fewer than one global batch "
                             f"({batch_size} x {world_size} processes)")
        self.workers = 0 if source.in_memory else workers
        self.device = torch.device(device) if device is not None else None
        self.keys = StepKeys(self.steps_per_epoch)
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def indices(self, epoch: int) -> torch.Tensor:
        return self.steps.indices(epoch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalised images, labels) of steps start.. of `epoch` on this rank."""
        self.keys.epoch, self.keys.start = epoch, start
        uint8 = self._data_loader() if self.workers else map(self.steps.__getitem__, self.keys)
        for images, labels in uint8:
            yield _on_device(images, self.source, self.device), _labels_on(labels, self.device)

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            pin = self.device is not None and self.device.type == "cuda"
            self._loader = DataLoader(self.steps, batch_size=None, sampler=self.keys, num_workers=self.workers,
                                      prefetch_factor=PREFETCH, persistent_workers=True, pin_memory=pin,
                                      generator=_worker_seeds())
        return self._loader


# --------------------------------------------------------------------------- fixed evaluation batches

class _Chunks(Dataset):
    """Un-augmented uint8 batches of fixed index chunks."""

    def __init__(self, source: ImageSource, chunks: list[torch.Tensor]):
        self.source, self.chunks = source, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.load(self.chunks[i], train=False), take(self.source.labels, self.chunks[i])


class FixedBatches:
    """Fixed, un-augmented, normalised batches (BN calibration, evaluation), re-iterable.

    They reach `device` one batch at a time, so device memory holds a batch or two whatever
    the number of images. Decoded sources are decoded by `workers` DataLoader processes; the
    uint8 batches are kept on the host (pinned for a GPU) for the next pass when they fit
    `cache_bytes`, and decoded again on every pass otherwise. In-memory sources are cut and
    normalised per batch: the same numbers as normalising the whole set at once.
    """

    def __init__(self, source: ImageSource, idx: torch.Tensor, batch_size: int, *, labels: bool = True,
                 device: str | torch.device | None = None, workers: int = 0, cache_bytes: int = 0):
        self.source, self.with_labels, self.workers = source, labels, workers
        self.chunks = list(idx.split(batch_size))
        self.device = torch.device(device) if device is not None else None
        self.nbytes = 0 if source.in_memory else len(idx) * math.prod(source.image_shape)
        self.cached = not source.in_memory and self.nbytes <= cache_bytes
        self._host: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def images(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def cached_bytes(self) -> int:
        return self.nbytes if self.cached else 0

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator:
        for images, labels in self._host if self._host is not None else self._host_batches():
            x = _on_device(images, self.source, self.device)
            yield (x, _labels_on(labels, self.device)) if self.with_labels else x

    def _host_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chunks = _Chunks(self.source, self.chunks)
        if self.workers and not self.source.in_memory:
            pin = self.device is not None and self.device.type == "cuda"
            batches = DataLoader(chunks, batch_size=None, num_workers=self.workers, prefetch_factor=PREFETCH,
                                 pin_memory=pin, generator=_worker_seeds())
        else:
            batches = (chunks[i] for i in range(len(chunks)))
        kept = []
        for batch in batches:
            if self.cached:
                kept.append(batch)
            yield batch
        if self.cached:   # after a complete pass only
            self._host = kept


def _fixed_indices(source: ImageSource, count: int, seed: int, tag: str) -> torch.Tensor:
    perm = torch.randperm(len(source), generator=generator(tag, seed))
    return perm[: min(count, len(source))]


def calibration_batches(source: ImageSource, batches: int, batch_size: int, seed: int = 0,
                        **stream: object) -> FixedBatches:
    """A fixed set of un-augmented batches for BN recalibration (same for every arch).
    `stream`: FixedBatches' device, workers and cache_bytes."""
    idx = _fixed_indices(source, batches * batch_size, seed, "calibration")
    return FixedBatches(source, idx, batch_size, labels=False, **stream)


def proxy_batch(source: ImageSource, images: int, seed: int = 0, **stream: object) -> FixedBatches:
    """One fixed labelled training minibatch, un-augmented: the zero-cost proxies' input."""
    return FixedBatches(source, _fixed_indices(source, images, seed, "zerocost"), images, **stream)


def eval_subset(source: ImageSource, images: int, batch_size: int, seed: int = 0, **stream: object) -> FixedBatches:
    """A fixed evaluation subset, (images, labels) per batch."""
    idx = _fixed_indices(source, images, seed, "eval")
    return FixedBatches(source, idx, batch_size, **stream)
