"""`stepshot groundtruth`: stand-alone accuracies of architectures, the ranking's reference.

Each (architecture, seed) trains a fresh static subnet from scratch on the same
data, augmentation and evaluation subset the super-net's evaluation uses. Every
finished run is stored atomically as one small JSON under `<out>.runs/`, so a
killed run picks up where it stopped and finished runs are never retrained.
Runs go to a pool of worker processes (a thread or two each), sized to the
machine's cores; with `--device cuda` the workers share the GPU (tiny nets are
launch-bound, so several processes keep one GPU busy). `--time-limit` stops
handing out runs after that many seconds (a session-sized slice of a long
ground truth); the next invocation continues. The output is the challenge
format plus a summary beside it (`<out stem>.summary.json`): the seed-to-seed Kendall tau is the noise ceiling
of this ground truth, the best any super-net can be expected to reach.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stepshot.archsets import load_codes
from stepshot.errors import RunFailed, StepshotError
from stepshot import uncertainty
from stepshot.space import SearchSpace, complexity, get_space, parse_arch


@dataclass(frozen=True)
class Recipe:
    """Stand-alone training recipe (the official demo's shape, scaled to the data set)."""

    space: str                      # a name: the recipe is written into the summary and sent to workers
    data: str
    epochs: int = 3
    train_limit: int = 0
    eval_images: int = 10000
    batch_size: int = 128
    lr: float = 0.1                 # for batch 256, scaled linearly
    warmup_epochs: float = 0.5
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    threads: int = 1
    device: str = "cpu"

    @property
    def search_space(self) -> SearchSpace:
        return get_space(self.space)


def train_one(code: str, seed: int, recipe: Recipe) -> dict:
    """Train one architecture from scratch; return its top-1 on the evaluation subset."""
    import torch
    import torch.nn.functional as F

    from stepshot_trainer.data import FashionMNIST, TrainLoader, eval_subset
    from stepshot_trainer.evaluate import top1
    from stepshot_trainer.layers import decays
    from stepshot_trainer.provenance import provenance
    from stepshot_trainer.static import build_static

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(seed)
    device = torch.device(recipe.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    arch = parse_arch(code, recipe.search_space)
    net = build_static(recipe.search_space, arch, zero_init_last_bn=True).to(device)
    train = FashionMNIST(recipe.data, "train", recipe.train_limit).to(device)
    loader = TrainLoader(train, recipe.batch_size, seed=seed)
    decay = [p for p in net.parameters() if decays(p)]
    no_decay = [p for p in net.parameters() if not decays(p)]
    lr = recipe.lr * recipe.batch_size / 256
    opt = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    total = recipe.epochs * len(loader)
    warmup = recipe.warmup_epochs * len(loader)
    step = 0
    start = time.monotonic()
    net.train()
    for epoch in range(recipe.epochs):
        for images, labels in loader.batches(epoch):
            # The stand-alone recipe's warmup ((step + 1) / warmup), not the super-net's (from
            # train.WARMUP_START): the committed 512 runs used it; another would make new seeds
            # incomparable with them.
            scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            loss = F.cross_entropy(net(images), labels, label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    test = FashionMNIST(recipe.data, "test").to(device)
    acc = top1(net, eval_subset(test, recipe.eval_images, 1000))   # the evaluation's own top-1
    # Provenance per run: a ground truth built in slices mixes machines and versions.
    return {"arch": code, "seed": seed, "acc": acc, "train_seconds": time.monotonic() - start,
            **provenance(device)}


def _worker(task: tuple[str, int, Recipe, str]) -> dict:
    code, seed, recipe, runs_dir = task
    result = train_one(code, seed, recipe)
    from stepshot_trainer.checkpoint import write_json

    write_json(Path(runs_dir) / f"{code}-s{seed}.json", result)
    return result


def _train_all(todo: list[tuple[str, int]], recipe: Recipe, runs_dir: Path, runs: dict, jobs: int,
               total: int, progress: bool, deadline: float = math.inf, max_attempts: int = 3) -> bool:
    """Train the missing runs in a process pool; False if `deadline` (monotonic) stopped it.

    A worker that dies (a native crash) breaks the pool: the pool is rebuilt and the
    unfinished runs retried, up to `max_attempts`. At the deadline, runs not yet started
    are cancelled and the ones in flight finish."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - len(todo), desc="ground truth", unit="run", disable=not progress)
    for attempt in range(1, max_attempts + 1):
        todo = [t for t in todo if t not in runs]
        if not todo or time.monotonic() > deadline:
            break
        try:
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_worker, (c, s, recipe, str(runs_dir))) for c, s in todo]
                for future in as_completed(futures):
                    if future.cancelled():
                        continue
                    result = future.result()
                    runs[(result["arch"], result["seed"])] = result
                    bar.set_postfix(acc=f"{result['acc']:.2f}")
                    bar.update()
                    if time.monotonic() > deadline:
                        for f in futures:
                            f.cancel()
        except BrokenProcessPool:
            runs.update(_load_runs(runs_dir))  # keep what finished before the crash
            print(f"ground truth: a worker died (attempt {attempt}/{max_attempts}); retrying the rest",
                  file=sys.stderr)
    bar.close()
    missing = [t for t in todo if t not in runs]
    if missing and time.monotonic() > deadline:
        return False
    if missing:
        raise RunFailed(f"{len(missing)} runs failed {max_attempts} times, e.g. {missing[0]}; rerun to retry")
    return True


def _load_runs(runs_dir: Path) -> dict[tuple[str, int], dict]:
    runs = {}
    for path in runs_dir.glob("*.json"):
        try:
            r = json.loads(path.read_text())
            runs[(r["arch"], int(r["seed"]))] = r
        except (ValueError, KeyError):
            continue  # a torn file from a kill: that run is simply redone
    return runs


def summarize(codes: list[str], runs: dict[tuple[str, int], dict], seeds: list[int]) -> dict:
    import numpy as np
    from scipy import stats

    accs = np.array([[runs[(c, s)]["acc"] for s in seeds] for c in codes])
    pairs = {f"{a}-{b}": float(stats.kendalltau(accs[:, i], accs[:, j])[0])
             for (i, a), (j, b) in itertools.combinations(enumerate(seeds), 2)}
    means = accs.mean(1)
    return {
        "n": len(codes), "seeds": seeds,
        "seed_kendall_tau": float(np.mean(list(pairs.values()))) if pairs else None,
        "seed_kendall_tau_pairs": pairs,
        **predictor_ceiling(accs),
        "acc_min": float(means.min()), "acc_max": float(means.max()),
        "acc_mean": float(means.mean()), "acc_std": float(means.std()),
        "seed_std_mean": float(accs.std(1, ddof=1).mean()) if len(seeds) > 1 else None,
        "train_seconds_total": float(sum(r["train_seconds"] for r in runs.values())),
    }


def predictor_ceiling(accs) -> dict:
    """stepshot.uncertainty.predictor_ceiling (one definition: `stepshot run` reports it too),
    with the seeds each target needs."""
    out = uncertainty.predictor_ceiling(accs)
    return {**out, "seeds_needed": seeds_needed(out["seed_pearson"])} if out else {}


TARGET_TAU = 0.8  # the ground-truth quality a benchmark needs to tell methods apart (issue 3)


def seeds_needed(r: float, target: float = TARGET_TAU) -> dict:
    """Seeds per architecture for a ground truth to reach `target`, under predictor_ceiling's
    model with seed-to-seed Pearson r (None: unreachable at any count).

    - `mean_vs_mean`: two independent k-seed means rank alike with tau >= target
      (k = 1 is the plain seed-to-seed tau); needs r_k >= sin(pi*target/2).
    - `predictor_ceiling`: a noise-free predictor reaches tau >= target against the k-seed
      mean; needs sqrt(r_k) >= sin(pi*target/2)."""
    import math

    rho = math.sin(math.pi * target / 2)

    def k_for(q: float) -> int | None:
        if r <= 0:
            return None
        if r >= q:
            return 1
        return math.ceil(q * (1 - r) / (r * (1 - q)) - 1e-9)

    return {"target_kendall_tau": target, "mean_vs_mean": k_for(rho), "predictor_ceiling": k_for(rho * rho)}


def build_output(space: SearchSpace, entries: dict[str, str], runs: dict, seeds: list[int]) -> dict:
    out = {}
    for key, code in entries.items():
        accs = [runs[(code, s)]["acc"] for s in seeds]
        params, macs = complexity(parse_arch(code, space))
        # Rounded so that equal means are equal floats: exact ties, whatever the summation order.
        out[key] = {"arch": code, "acc": round(sum(accs) / len(accs), 9), "accs": accs, "params": params, "macs": macs}
    return out


def run(recipe: Recipe, archs: Path, out: Path, seeds: list[int], jobs: int, progress: bool = True,
        time_limit: float = math.inf, note: str | None = None) -> dict:
    """Train what is missing; write `out` and its summary. Past `time_limit` seconds the
    output is not written and the summary (over the architectures with every seed done)
    says `"complete": false`. `note` (how and where it ran) and the wall time add up over
    invocations, so a ground truth built in slices keeps its whole story."""
    entries = load_codes(archs)
    codes = list(entries.values())
    for code in codes:
        parse_arch(code, recipe.search_space)  # fail before hours of training, not after
    runs_dir = out.with_suffix(".runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs = _load_runs(runs_dir)
    # Seeds of one architecture side by side, so a time-limited slice leaves whole architectures.
    todo = [(c, s) for c in codes for s in seeds if (c, s) not in runs]
    started = time.monotonic()
    complete = not todo or _train_all(todo, recipe, runs_dir, runs, jobs, total=len(codes) * len(seeds),
                                      progress=progress, deadline=started + time_limit)
    from stepshot_trainer.checkpoint import write_json

    if complete:
        write_json(out, build_output(recipe.search_space, entries, runs, seeds))
    done = [c for c in codes if all((c, s) in runs for s in seeds)]
    summary = summarize(done, runs, seeds) if len(done) > 1 else {"n": len(done), "seeds": seeds}
    summary_file = out.with_name(out.stem + ".summary.json")
    previous = _read_summary(summary_file)
    wall = time.monotonic() - started
    provenance = {"recipe": asdict(recipe), "wall_seconds_this_invocation": wall,
                  "wall_seconds_total": round(previous.get("wall_seconds_total", 0.0) + wall, 1),
                  "command": " ".join(["stepshot", *sys.argv[1:]]) if sys.argv[1:2] == ["groundtruth"] else None,
                  "versions": _versions()}
    if not todo:  # nothing trained now: a summary refresh keeps the provenance of the runs
        provenance.update({k: previous[k] for k in provenance if k in previous})
    summary.update(complete=complete, runs_done=sum((c, s) in runs for c in codes for s in seeds),
                   runs_total=len(codes) * len(seeds), devices=sorted({r.get("device", "cpu") for r in runs.values()}),
                   archs=str(archs), how_it_ran=_add_note(previous.get("how_it_ran"), note), **provenance)
    write_json(summary_file, summary)
    return summary


def _add_note(story: str | None, note: str | None) -> str | None:
    """Each distinct note once, in order: slices repeating one command add nothing."""
    if not note or (story and note in story):
        return story
    return f"{story} Then: {note}" if story else note


def _read_summary(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _versions() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count()}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", required=True)
    parser.add_argument("--archs", type=Path, required=True, help="challenge-format JSON or a JSON list of codes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per architecture")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=Recipe.eval_images)
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    parser.add_argument("--lr", type=float, default=Recipe.lr, help="lr for batch 256 (scaled linearly)")
    parser.add_argument("--warmup-epochs", type=float, default=Recipe.warmup_epochs)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (all workers share it)")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 2),
                        help="worker processes (default: one per core)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--time-limit", type=float, default=math.inf, metavar="SECONDS",
                        help="stop handing out runs after this long; rerun to continue")
    parser.add_argument("--note", default=None, help="how and where it ran, kept in the summary across invocations")
    parser.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    space = get_space(args.space).name
    if space != "resnet48-fmnist":
        raise StepshotError("only resnet48-fmnist (Fashion-MNIST) is supported on one machine")
    recipe = Recipe(space=space, data=args.data, epochs=args.epochs, train_limit=args.train_limit,
                    eval_images=args.eval_images, batch_size=args.batch_size, lr=args.lr,
                    warmup_epochs=args.warmup_epochs, threads=args.threads, device=args.device)
    summary = run(recipe, args.archs, args.out, list(range(args.seeds)), args.jobs, time_limit=args.time_limit,
                  note=args.note)
    print(json.dumps({k: summary.get(k) for k in ("n", "seeds", "seed_kendall_tau", "acc_min", "acc_max",
                                                  "seed_std_mean", "runs_done", "runs_total")}))
    if not summary["complete"]:
        print(f"stepshot groundtruth: time limit reached after {summary['runs_done']}/{summary['runs_total']} runs; "
              f"rerun the same command to continue", file=sys.stderr)
        return 3
    return 0
