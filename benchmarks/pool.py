"""Pool evaluation rate against its limit, on Fashion-MNIST with the evaluation's protocol.

Per subnet, the pool path (`predict_spans`, the code `stepshot evaluate` runs, parts written to
a temp directory every --checkpoint-every subnets) extracts the static subnet, resets and
re-estimates BN over the calibration batches, folds BN and measures top-1 on the test images.
Its limit is the static network's own forward passes over the same images: the same subnet,
extracted and folded beforehand, forwarded over the same calibration batches (train mode, no
grad) and the same test batches (eval mode), timed in the same run, subnet by subnet,
alternating with the pool path so that drift of a shared machine hits both alike.

Protocol (the spec's defaults): 10,000 test images in batches of 1,000, calibration 16 x 256
training images, BN folded, one process; threads as given (default 1: a figure per core).
The super-net is random (the work per subnet does not depend on the weights).

    OMP_NUM_THREADS=1 python benchmarks/pool.py --archs 30 --out benchmarks/results/pool.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stepshot import pool
from stepshot.archsets import challenge_format, stratified_archs
from stepshot.space import parse_arch
from stepshot.spec import load as load_spec
from stepshot_trainer.entry import _batches
from stepshot_trainer.evaluate import Evaluator, Router, predict_spans, recalibrate_bn
from stepshot_trainer.provenance import cpu_model
from stepshot_trainer.static import fold_batchnorm
from stepshot_trainer.supernet import SuperNet

SPACE = "resnet48-fmnist"
FMNIST = "/usr/share/datasets/fashion-mnist"


@torch.inference_mode()
def _forward_only(net: torch.nn.Module, folded: torch.nn.Module, calibration, evalset) -> float:
    """The limit for one subnet: its calibration forwards (train mode) and test forwards (eval
    mode, the folded net), nothing else. Seconds."""
    start = time.perf_counter()
    net.train()
    for x in calibration:
        net(x)
    folded.eval()
    for x, y in evalset:
        folded(x).argmax(1)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=30, help="subnets (a stratified sample of the space)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = round(os.getloadavg()[0], 2)   # a shared machine: say how busy it was
    spec = load_spec({"metadata": {"name": "pool-bench"},
                      "spec": {"space": SPACE, "dataset": {"kind": "fashion-mnist", "path": FMNIST}}})
    ev = spec.evaluation
    calibration, evalset = _batches(spec, "cpu")
    torch.manual_seed(0)
    space = spec.search_space
    model = SuperNet(space).eval()
    evaluator = Evaluator(Router({"oneshot": model}), calibration, evalset)
    archs = {n: e["arch"] for n, e in challenge_format(stratified_archs(space, args.archs, seed=0)).items()}
    # First pass decodes the images into the host cache; neither path is timed on it.
    predict_spans(evaluator, dict(list(archs.items())[:1]), [range(0, 1)], space, lambda *a: None)
    names = list(archs)
    pool_s, limit_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        save = lambda span, preds, seconds: pool.write_part(Path(tmp), span, preds, seconds)  # noqa: E731
        for i, name in enumerate(names):
            start = time.perf_counter()
            predict_spans(evaluator, archs, [range(i, i + 1)], space, save)
            pool_s.append(time.perf_counter() - start)
            net = model.extract(parse_arch(archs[name], space))
            recalibrate_bn(net, calibration)        # untimed: a folded copy needs statistics
            folded = fold_batchnorm(copy.deepcopy(net))
            limit_s.append(_forward_only(net, folded, calibration, evalset))
    ratio = [p / lim for p, lim in zip(pool_s, limit_s)]
    result = {
        "protocol": {"space": SPACE, "eval_images": evalset.images, "eval_batch": ev.batch_size,
                     "calibration_images": calibration.images, "calibration_batch": ev.calibration_batch_size,
                     "threads": torch.get_num_threads(), "processes": 1, "cpu": cpu_model(),
                     "torch": torch.__version__, "subnets": len(names),
                     "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)}},
        "pool_subnets_per_s": round(len(names) / sum(pool_s), 3),
        "limit_subnets_per_s": round(len(names) / sum(limit_s), 3),
        "pool_over_limit_median": round(statistics.median(ratio), 3),
        "pool_s_median": round(statistics.median(pool_s), 3),
        "limit_s_median": round(statistics.median(limit_s), 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
