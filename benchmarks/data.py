"""The imagefolder pipeline against the decode limit: images/s per worker count, and on a GPU
the training step and the streaming evaluation fed by it.

Generates (once, cached under --cache) a synthetic ImageFolder of JPEGs with ImageNet-like
sizes: --distinct images around 500x375 px encoded once, hard-linked --images times into
--classes classes (train/ and val/). Then, in one run:

  decode limit   one core decoding + augmenting (RandomResizedCrop + flip to 224 px) in-process,
                 measured right before each pipeline measurement (the median is reported)
  decoders       as many independent in-process decoders as workers, all at once, no loader:
                 the machine's own ceiling for that many cores (hyper-threads, all-core clocks)
  pipeline       TrainLoader batches (workers, prefetch, pinned on CUDA, normalised on the device)
                 at each --workers count, next to workers x the decode limit and the decoders;
                 these three run back to back, --rounds times per worker count, and each figure
                 and ratio is the median over the rounds (a shared machine drifts between windows)
  step           (phase `step`) the trainer's sandwich step on the super-net (resnet48, 224 px)
                 fed by the pipeline at the largest worker count vs the same step on one batch
                 already on the device, both after a first pass over the same steps in memory
                 (its rate is reported too: what meeting each step's shapes first costs)
  evaluation     (phase `eval`) predict() over --eval-archs subnets with streamed calibration and
                 test batches: the first pass decodes, the others read the host cache

    python benchmarks/data.py --phases pipeline --workers 1 2 --seconds 20 --out benchmarks/results/data.json
    python benchmarks/data.py --device cuda --workers 1 2 4 8 14 16 --seconds 6 --rounds 2 --out data-gpu.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from stepshot.plan import build_plan
from stepshot.space import get_space, sample_arch
from stepshot.spec import load as load_spec
from stepshot_trainer import data
from stepshot_trainer.evaluate import Router, predict
from stepshot_trainer.provenance import cpu_model, threads_per_core
from stepshot_trainer.train import Dist, StageTrainer

SPACE = "resnet48"


# --------------------------------------------------------------------------- the synthetic ImageFolder

def _jpeg(task: tuple[int, int, Path]) -> int:
    """A photo-like JPEG (smooth colour fields + texture, so it compresses like a photo)."""
    from PIL import Image

    seed, quality, path = task
    rng = np.random.default_rng(seed)
    w, h = int(rng.normal(500, 40)), int(rng.normal(375, 30))
    w, h = (h, w) if rng.random() < 0.2 else (w, h)            # some portraits, as in ImageNet
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    texture = rng.normal(0, 12, (h, w, 3))
    pixels = np.clip(np.asarray(coarse, dtype=np.float64) + texture, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=quality)
    return path.stat().st_size


def image_folder(cache: Path, images: int, eval_images: int, distinct: int, classes: int) -> tuple[Path, dict]:
    """<cache>/<key>/{train,val}/<class>/<n>.jpg and what it holds; built once per key."""
    root = cache / f"imagefolder-n{images}-v{eval_images}-d{distinct}-c{classes}"
    info_path = root / "info.json"
    if info_path.exists():
        return root, json.loads(info_path.read_text())
    (root / "distinct").mkdir(parents=True, exist_ok=True)
    sources = [root / "distinct" / f"{i}.jpg" for i in range(distinct)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        sizes = list(pool.map(_jpeg, [(i, 90, p) for i, p in enumerate(sources)]))
    for split, count in (("train", images), ("val", eval_images)):
        for n in range(count):
            folder = root / split / f"c{n % classes:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{n}.jpg"
            if not target.exists():
                os.link(sources[n % distinct], target)
    from PIL import Image

    dims = [Image.open(p).size for p in sources]
    info = {"count": images, "eval_count": eval_images, "distinct_jpegs": distinct, "classes": classes,
            "mean_width": round(float(np.mean([w for w, _ in dims]))),
            "mean_height": round(float(np.mean([h for _, h in dims]))),
            "min_size": list(min(dims)), "max_size": list(max(dims)),
            "mean_jpeg_bytes": round(float(np.mean(sizes))), "jpeg_quality": 90}
    info_path.write_text(json.dumps(info, indent=2))
    return root, info


# --------------------------------------------------------------------------- measurements

def decode_limit(folder: data.ImageFolder, batch: int, seconds: float, seed: int = 0) -> float:
    """Images/s of one core decoding and augmenting, in-process (no workers)."""
    loader = data.StepBatches(folder, batch, seed=seed)
    done, start, step = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or step < 2:
        done += len(loader[(0, step % len(loader))][1])
        step += 1
    return done / (time.perf_counter() - start)


def _decoder(task: tuple[data.ImageFolder, int, float, float, int]) -> float:
    """One of parallel_limit's processes: decode_limit from a common start time, its own batches."""
    folder, batch, seconds, start_at, seed = task
    torch.set_num_threads(1)
    time.sleep(max(0.0, start_at - time.time()))
    return decode_limit(folder, batch, seconds, seed)


def parallel_limit(folder: data.ImageFolder, batch: int, processes: int, seconds: float) -> float:
    """Images/s of `processes` independent decoders running at once, without a loader: what the
    machine itself gives that many cores (hyper-threads, all-core clocks, memory bandwidth),
    the ceiling of any pipeline with that many workers."""
    start_at = time.time() + 1.0 + 0.05 * processes      # every process has forked and imported
    tasks = [(folder, batch, seconds, start_at, seed) for seed in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        return sum(pool.map(_decoder, tasks))


def pipeline_rate(folder: data.ImageFolder, batch: int, workers: int, device: torch.device, seconds: float) -> float:
    """Images/s out of TrainLoader.batches (normalised, on the device), from its first batch on."""
    loader = data.TrainLoader(folder, batch, seed=0, workers=workers, device=device)
    done, start = 0, None
    for epoch in range(1000):
        for x, _ in loader.batches(epoch):
            if start is None:                       # worker start-up is not throughput
                start = time.perf_counter()
                continue
            _sync(device)
            done += len(x)
            if time.perf_counter() - start >= seconds and done >= 4 * workers * batch:
                return done / (time.perf_counter() - start)
    raise RuntimeError("unreachable")


def pipeline_round(folder: data.ImageFolder, batch: int, workers: int, device: torch.device,
                   seconds: float) -> dict[str, float]:
    """One decode limit, `workers` decoders at once and the pipeline, back to back, with the
    pipeline's ratios to both (taken within about a minute, so under much the same load)."""
    limit = decode_limit(folder, batch, seconds)
    together = parallel_limit(folder, batch, workers, seconds)
    rate = pipeline_rate(folder, batch, workers, device, seconds)
    return {"images_per_s": round(rate, 1), "decode_limit_just_before": round(limit, 1),
            "vs_limit_x_workers": round(rate / (limit * workers), 3),
            "decoders_at_once_images_per_s": round(together, 1), "vs_decoders_at_once": round(rate / together, 3)}


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (ratios are medians of each round's own ratio)."""
    return {k: round(statistics.median(r[k] for r in rounds), 3 if k.startswith("vs_") else 1) for k in rounds[0]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _spec(root: Path, batch: int, workers: int):
    return load_spec({"metadata": {"name": "bench"}, "spec": {
        "space": SPACE, "dataset": {"kind": "imagefolder", "path": str(root)},
        "resources": {"cpu": str(workers + 1)},
        "training": {"batchSize": batch, "workers": workers},
        "oneShot": {"epochs": 1}, "fewShot": {"mode": "none"}, "metricsPort": 0}})


def train_step_rates(root: Path, batch: int, workers: int, device: torch.device, warm: int, steps: int,
                     workdir: Path) -> dict:
    """The trainer's own step fed by the pipeline vs fed one batch already on the device."""
    spec = _spec(root, batch, workers)
    plan = build_plan(spec)
    trainer = StageTrainer(spec, plan.stage("oneshot"), workdir, None, Dist(device=device))
    if 1 + warm + steps > len(trainer.loader):
        raise SystemExit(f"--images gives {len(trainer.loader)} steps per epoch; the step phase needs {1 + warm + steps}")
    batches = trainer.loader.batches(0)
    x, y = next(batches)

    def timed(feed) -> float:
        """Images/s of `steps` steps after `warm` (the allocator, the workers' first batches); both
        feeds replay the same step numbers, so the same sandwiches of subnets."""
        trainer.step = 0
        for _ in range(warm):
            trainer.train_step(*feed())
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(*feed())   # ends in loss.item(): the GPU has finished the step
        return steps * batch / (time.perf_counter() - start)

    # Every step samples new subnets, so the first pass over a step pays for its new shapes
    # (cuDNN execution plans, allocator growth); on the H200 a pipeline-first order measured
    # 0.57-0.61 of the in-memory rate at 6, 10 and 14 workers while the pipeline alone
    # delivered 2-4x the step's need. So both feeds are compared after a first pass over the
    # same steps, in memory; that pass's own rate is kept: it is what first sight costs.
    first = timed(lambda: (x, y))
    piped = timed(lambda: next(batches))
    memory = timed(lambda: (x, y))
    trainer.metrics.close()
    return {"workers": workers, "batch_size": batch, "warm_steps": warm, "timed_steps": steps,
            "first_sight_in_memory_images_per_s": round(first, 1),
            "pipeline_images_per_s": round(piped, 1), "in_memory_images_per_s": round(memory, 1),
            "ratio": round(piped / memory, 3), "model": trainer.model}


def evaluation_rate(root: Path, model, archs: int, eval_images: int, calib_batches: int, batch: int,
                    workers: int, device: torch.device) -> dict:
    """predict() with streamed batches: the first subnet decodes (and caches), the rest reuse."""
    space = get_space(SPACE)
    stream = {"device": device, "workers": workers, "cache_bytes": 1 << 40}
    calibration = data.calibration_batches(data.ImageFolder(root / "train"), calib_batches, batch, **stream)
    evalset = data.eval_subset(data.ImageFolder(root / "val"), eval_images, batch, **stream)
    rng = random.Random(0)
    codes = {f"arch{i}": sample_arch(space, rng).encode() for i in range(archs + 1)}
    router = Router({"oneshot": model.eval()})
    first = dict([codes.popitem()])
    _, first_timing = predict(router, first, space, calibration, evalset)
    _, timing = predict(router, codes, space, calibration, evalset)
    return {"workers": workers, "eval_images": evalset.images,
            "calibration_images": calibration.images, "batch_size": batch,
            "first_subnet_seconds_with_decode": first_timing["seconds"],
            "subnets": timing["subnets"], "subnets_per_s": timing["subnets_per_second"],
            "cached_host_bytes": calibration.cached_bytes + evalset.cached_bytes}


# --------------------------------------------------------------------------- the run

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--phases", nargs="+", default=["pipeline", "step", "eval"],
                        choices=["pipeline", "step", "eval"])
    parser.add_argument("--images", type=int, default=10000, help="training images")
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=64, help="distinct JPEGs, hard-linked to --images")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=8.0, help="per decode-limit and pipeline measurement")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline measurements per worker count (medians reported)")
    parser.add_argument("--warm-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per feed")
    parser.add_argument("--eval-archs", type=int, default=8)
    parser.add_argument("--calibration-batches", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/stepshot-bench-data"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--note", default="", help="free text stored with the figures (e.g. machine load)")
    args = parser.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = torch.device(args.device)
    wall = time.perf_counter()
    root, info = image_folder(args.cache, args.images, args.eval_images, args.distinct, args.classes)
    folder = data.ImageFolder(root / "train", size=get_space(SPACE).resolution)
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_model": cpu_model(), "cpu_cores": len(os.sched_getaffinity(0)),
        "threads_per_core": threads_per_core(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "note": args.note,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "images": info, "image_size": folder.size, "batch_size": args.batch_size,
    }
    # Each round measures the limit, the decoders at once and the pipeline back to back, and
    # the ratios are taken within a round: on a shared machine the load drifts by +-15% between
    # windows a minute apart. The medians over rounds are reported, each round kept beside them.
    limits = []
    if "pipeline" in args.phases:
        result["pipeline"] = []
        for w in args.workers:
            rounds = [pipeline_round(folder, args.batch_size, w, device, args.seconds) for _ in range(args.rounds)]
            limits += [r["decode_limit_just_before"] for r in rounds]
            entry = {"workers": w, **_medians(rounds)}
            result["pipeline"].append({**entry, "rounds": rounds})
            print(f"pipeline: {w} workers {entry['images_per_s']:.1f} images/s, limit "
                  f"{entry['decode_limit_just_before']:.1f}/core ({entry['vs_limit_x_workers']:.2f} x limit x "
                  f"workers); {w} decoders at once {entry['decoders_at_once_images_per_s']:.1f} "
                  f"({entry['vs_decoders_at_once']:.2f} of that); medians of {args.rounds} rounds", flush=True)
    else:
        limits.append(decode_limit(folder, args.batch_size, args.seconds))
    result["decode_limit_images_per_s_per_core"] = round(statistics.median(limits), 1)
    model = None
    if "step" in args.phases:
        with tempfile.TemporaryDirectory() as workdir:
            step = train_step_rates(root, args.batch_size, max(args.workers), device, args.warm_steps, args.steps,
                                    Path(workdir))
        model = step.pop("model")
        result["train_step"] = step
        print(f"train step: {step}", flush=True)
    if "eval" in args.phases:
        if model is None:
            from stepshot_trainer.supernet import SuperNet
            model = SuperNet(get_space(SPACE)).to(device)
        evaluation = evaluation_rate(root, model, args.eval_archs, args.eval_images, args.calibration_batches,
                                     args.batch_size, max(args.workers), device)
        result["evaluation"] = evaluation
        print(f"evaluation: {evaluation}", flush=True)
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
