"""Fashion-MNIST and ImageFolder loading, augmentation, sharding, worker processes and
fixed evaluation sets."""
import pytest
import torch

from trainer_helpers import FMNIST, jpeg_folder
from stepshot_trainer import data


@pytest.fixture(scope="module")
def train():
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("apt-get install dataset-fashion-mnist")
    return data.FashionMNIST(FMNIST, "train", limit=256)


def test_decode_limit_and_stats(train):
    assert train.images.shape == (256, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) <= set(range(10))
    assert train.mean[0] == pytest.approx(0.2860, abs=1e-3) and train.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert len(data.FashionMNIST(FMNIST, "test", limit=10)) == 10


def test_missing_dataset_names_apt_package_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        data.FashionMNIST(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_crop_flip_is_seeded_and_shape_preserving(train):
    batch = train.images[:32]
    a = data.crop_flip(batch, padding=4, gen=data.generator(1))
    b = data.crop_flip(batch, padding=4, gen=data.generator(1))
    c = data.crop_flip(batch, padding=4, gen=data.generator(2))
    assert a.shape == batch.shape and a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    flipped = data.crop_flip(batch, padding=0, gen=data.generator(3))
    assert all(torch.equal(f, x) or torch.equal(f, x.flip(-1)) for f, x in zip(flipped, batch))


def test_epoch_order_is_a_function_of_seed_and_epoch(train):
    loader = data.TrainLoader(train, 64, seed=7)
    assert torch.equal(loader.indices(0), data.TrainLoader(train, 64, seed=7).indices(0))
    assert not torch.equal(loader.indices(0), loader.indices(1))
    full = list(loader.batches(1))
    resumed = list(loader.batches(1, start=2))        # resume mid-epoch: same batches as steps 2..
    assert len(full) == 4 and all(torch.equal(a[0], b[0]) for a, b in zip(full[2:], resumed))
    assert full[0][0].dtype == torch.float32 and full[0][0].stride() == (784, 784, 28, 1)


def test_sharding_splits_an_epoch_disjointly(train):
    shards = [data.TrainLoader(train, 32, seed=0, rank=r, world_size=2) for r in range(2)]
    a, b = (s.indices(3) for s in shards)
    assert len(shards[0]) == 4 and len(a) == len(b) == 128 and not set(a.tolist()) & set(b.tolist())


def test_fixed_calibration_and_eval_sets(train):
    calib = list(data.calibration_batches(train, 2, 16, seed=0))
    assert len(calib) == 2 and calib[0].shape == (16, 1, 28, 28)
    assert all(torch.equal(x, y) for x, y in zip(calib, data.calibration_batches(train, 2, 16, seed=0)))
    evalset = data.eval_subset(train, 50, 20)
    assert [len(y) for _, y in evalset] == [20, 20, 10]


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize_equals_the_textbook_formula_bit_for_bit(channels_last):
    """normalize works in place for speed; it must give exactly (x / 255 - mean) / std, which
    Fashion-MNIST results were measured with, and leave the uint8 input as it was."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8, generator=g)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    before = images.clone()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    out = data.normalize(images, mean, std)
    assert torch.equal(out, expected) and out.is_contiguous() and torch.equal(images, before)


def test_streamed_in_memory_batches_equal_the_whole_set_normalised_at_once(train):
    # What evaluation computed before it streamed: normalise every image, then split.
    idx = data._fixed_indices(train, 50, 0, "eval")
    whole = data.normalize(train.load(idx, train=False), train.mean, train.std)
    streamed = list(data.eval_subset(train, 50, 20))
    assert torch.equal(torch.cat([x for x, _ in streamed]), whole)
    assert torch.equal(torch.cat([y for _, y in streamed]), train.labels[idx])


def test_image_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pil.new("RGB", (40 + i, 30), (i * 50, 100, 0)).save(tmp_path / cls / f"{i}.png")
    folder = data.ImageFolder(tmp_path, size=24)
    assert len(folder) == 6 and folder.num_classes == 2 and folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    x = folder.load(torch.arange(6), train=True, gen=data.generator(0))
    assert x.shape == (6, 3, 24, 24) and x.dtype == torch.uint8
    assert torch.equal(x, folder.load(torch.arange(6), train=True, gen=data.generator(0)))
    assert folder.load(torch.arange(2), train=False).shape == (2, 3, 24, 24)


# --------------------------------------------------------------------------- ImageFolder through worker processes

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    pytest.importorskip("PIL")
    return data.ImageFolder(jpeg_folder(tmp_path_factory.mktemp("imagefolder"), 3, 12), size=16)


def _epochs(loader, epochs=(0, 1)):
    return [batch for e in epochs for batch in loader.batches(e)]


def _same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_worker_processes_do_not_change_the_batches(folder):
    inline = data.TrainLoader(folder, 5, seed=3, workers=0)
    assert len(inline) == 7                                     # 36 images, the last one dropped
    reference = _epochs(inline)
    assert reference[0][0].shape == (5, 3, 16, 16) and reference[0][0].dtype == torch.float32
    for workers in (1, 2):
        loader = data.TrainLoader(folder, 5, seed=3, workers=workers)
        assert _same_batches(_epochs(loader), reference)        # persistent workers, two epochs
    assert not torch.equal(reference[0][0], reference[7][0])    # epoch 1 is another permutation


def test_killed_and_resumed_loader_sees_the_uninterrupted_batches(folder):
    uninterrupted = _epochs(data.TrainLoader(folder, 5, seed=3, workers=2))
    killed = data.TrainLoader(folder, 5, seed=3, workers=2)
    seen = []
    for batch in killed.batches(0):                              # stopped after step 3, workers ahead
        seen.append(batch)
        if len(seen) == 3:
            break
    del killed
    resumed = data.TrainLoader(folder, 5, seed=3, workers=2)     # a new process: the checkpoint's (0, 3)
    rest = list(resumed.batches(0, start=3)) + list(resumed.batches(1))
    assert _same_batches(seen + rest, uninterrupted)


def test_ranks_shard_image_folder_batches_identically_with_workers(folder):
    for rank in range(2):
        a = data.TrainLoader(folder, 4, seed=1, rank=rank, world_size=2, workers=0)
        b = data.TrainLoader(folder, 4, seed=1, rank=rank, world_size=2, workers=2)
        assert len(a) == 4 and _same_batches(list(a.batches(2)), list(b.batches(2)))


def test_fixed_batches_stream_decode_once_when_they_fit(folder, monkeypatch):
    reference = list(data.eval_subset(folder, 23, 10))
    assert [len(y) for _, y in reference] == [10, 10, 3] and reference[0][0].dtype == torch.float32
    decoded = []
    load = data.ImageFolder.load
    monkeypatch.setattr(data.ImageFolder, "load", lambda self, idx, **kw: decoded.append(len(idx)) or load(self, idx, **kw))
    fits = data.eval_subset(folder, 23, 10, cache_bytes=23 * 3 * 16 * 16)
    assert fits.cached and fits.cached_bytes == 23 * 768
    assert _same_batches(list(fits), reference) and _same_batches(list(fits), reference)
    assert decoded == [10, 10, 3]                               # the second pass came from the host
    too_big = data.eval_subset(folder, 23, 10, cache_bytes=23 * 768 - 1)
    assert not too_big.cached and too_big.cached_bytes == 0
    assert _same_batches(list(too_big), reference) and _same_batches(list(too_big), reference)
    assert decoded == [10, 10, 3] * 3                           # decoded on every pass
    workers = data.eval_subset(folder, 23, 10, workers=2, cache_bytes=1 << 20)
    assert _same_batches(list(workers), reference) and _same_batches(list(workers), reference)
    calib = list(data.calibration_batches(folder, 2, 8, workers=2))
    assert [x.shape for x in calib] == [(8, 3, 16, 16)] * 2
