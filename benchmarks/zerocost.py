"""Zero-cost proxies of the ground truth's 64 architectures, at initialisation, per init seed.

    OMP_NUM_THREADS=1 python benchmarks/zerocost.py --seeds 0 1 2 3

Writes benchmarks/results/zerocost-resnet48-fmnist.json: for each init seed (which also draws
the minibatch), every proxy of stepshot_trainer.zerocost for every architecture, plus params and
MACs (stepshot.space.complexity, seed-free). benchmarks/ranking_v3_report.py scores them against
the ground truth with the same intervals as the super-net.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stepshot.archsets import load_codes  # noqa: E402
from stepshot.space import complexity, get_space, parse_arch  # noqa: E402
from stepshot.spec import load  # noqa: E402
from stepshot_trainer import zerocost  # noqa: E402
from stepshot_trainer.data import open_source  # noqa: E402

ARCHS = ROOT / "benchmarks" / "archs" / "resnet48-fmnist-64.json"
OUT = ROOT / "benchmarks" / "results" / "zerocost-resnet48-fmnist.json"
SPACE = "resnet48-fmnist"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sp = get_space(SPACE)
    codes = sorted(set(load_codes(ARCHS).values()))
    spec = load({"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining", "metadata": {"name": "zc"},
                 "spec": {"space": SPACE, "dataset": {"kind": "fashion-mnist"}}})
    source = open_source(spec, "train")
    out = json.loads(args.out.read_text()) if args.out.exists() else {"seeds": {}}
    out.update({"space": SPACE, "archs": str(ARCHS.relative_to(ROOT)), "batch_images": zerocost.BATCH_IMAGES,
                "threads": 1, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                "complexity": {c: dict(zip(("params", "macs"), complexity(parse_arch(c, sp)))) for c in codes}})
    for seed in args.seeds:
        if str(seed) in out["seeds"]:
            continue
        start = time.monotonic()
        x, y = zerocost.minibatch(source, seed)
        out["seeds"][str(seed)] = {c: zerocost.scores(sp, parse_arch(c, sp), x, y, seed) for c in codes}
        print(f"seed {seed}: {len(codes)} architectures in {time.monotonic() - start:.0f} s", flush=True)
        args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
