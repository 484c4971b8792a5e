"""Shared helpers for the trainer tests: tiny Fashion-MNIST specs, one CPU thread."""
import copy
from pathlib import Path

import pytest
from apiserver import free_port  # noqa: F401  (tests/apiserver.py: one free_port for every test package)

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
                                  reason="apt-get install dataset-fashion-mnist")

TINY = {
    "metadata": {"name": "tiny"},
    "spec": {
        "space": "resnet48-fmnist",
        "dataset": {"kind": "fashion-mnist", "path": str(FMNIST), "trainLimit": 64, "evalLimit": 200},
        "training": {"batchSize": 32, "keepCheckpoints": 5},
        "oneShot": {"epochs": 2, "lr": 0.1, "warmupEpochs": 0.5},
        "fewShot": {"mode": "grouped", "groups": [2], "epochs": 1},
        "evaluation": {"calibrationBatches": 2, "calibrationBatchSize": 32, "evalImages": 128, "batchSize": 128},
        "metricsPort": 0,
    },
}


def tiny_spec(**overrides):
    from stepshot import spec as specmod

    doc = copy.deepcopy(TINY)
    for section, values in overrides.items():
        if isinstance(values, dict):
            doc["spec"].setdefault(section, {}).update(values)
        else:
            doc["spec"][section] = values
    return specmod.load(doc)


def jpeg_folder(root: Path, classes: int, per_class: int) -> Path:
    """root/class<c>/<i>.jpg: small noise JPEGs of varied sizes (every crop differs)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            h, w = 30 + 3 * i, 40 + 2 * i
            pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=gen).numpy()
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.jpg", quality=90)
    return root


def randomize_bn(net) -> None:
    """Non-trivial BN affine and running stats, so equivalence checks see them."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def processes_mentioning(text: str) -> list[str]:
    """Processes whose command line contains `text` ("pid: cmdline")."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            out.append(f"{cmdline.parent.name}: {args}")
    return out
