"""Fashion-MNIST loading, augmentation, sharding and fixed evaluation sets."""
import pytest
import torch

from trainer_helpers import FMNIST, needs_fmnist
from stepshot_trainer import data

pytestmark = needs_fmnist


@pytest.fixture(scope="module")
def train():
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
    calib = data.calibration_batches(train, 2, 16, seed=0)
    assert len(calib) == 2 and calib[0].shape == (16, 1, 28, 28)
    assert all(torch.equal(x, y) for x, y in zip(calib, data.calibration_batches(train, 2, 16, seed=0)))
    evalset = data.eval_subset(train, 50, 20)
    assert [len(y) for _, y in evalset] == [20, 20, 10]


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
