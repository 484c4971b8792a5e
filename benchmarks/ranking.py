"""Ranking benchmark v2: one-shot vs one-shot -> grouped / partitioned few-shot, paired by seed.

    python benchmarks/ranking.py --preset quick                 # 8 super-net seeds, one at a time
    python benchmarks/ranking.py --preset quick --analyze-only  # report the seeds finished so far

Every method sees the same data and the same epoch budget along any chain of stages:
  oneshot      one one-shot stage of E1 + S*E2 epochs (the whole budget)
  grouped      one-shot E1 epochs, then S grouped steps (G = 2, 3, ...) of E2 epochs each,
               at the paper's few-shot lr: 1/100 of the one-shot lr, 1/50 at G=3 (spec §3.4)
  partitioned  one-shot E1 epochs, then S partition steps of E2 epochs per partition Job
  grouped-10x  grouped at ten times the paper's few-shot lr (the v1 setting), an ablation
The few-shot runs of a seed share its one-shot stage (trained once, copied), so their
differences are the few-shot schedule alone. After every step the ground-truth architectures
are evaluated with inherited weights under the ground truth's own protocol: all 10,000 test
images, BN calibrated on 16 x 256 training images, then folded (the protocol, threads, torch
version and device are recorded in every evaluation report and in <out>.json). Each run is a
plain `stepshot run` work directory, so an interrupted benchmark resumes where it stopped.

Outputs: <out>.json (`runs`: one row per method/seed/stage; `bootstrap`: 95% intervals;
`resolution`: the smallest difference resolved; `group_gains`: accuracy gain per routing group
after each grouped split; wall times), <out>.md (the same as tables) and <out>.png (tau per
stage; predicted vs true accuracy at the final stage).

The full preset selects each stage's checkpoint the paper's way (spec §3.1): Kendall tau after
every epoch on 16 reference architectures drawn once from the ground truth's 64, and every method
is ranked on the other 48 (selection never sees an architecture it is scored on). The quick
preset has nothing to select: its few-shot steps are one epoch, its one-shot stage decays to 0.

The intervals resample the architectures, each architecture's ground-truth seeds and the
super-net seeds (stepshot.uncertainty), paired across methods, so a difference whose interval
excludes 0 is one this benchmark resolves, super-net training noise included.
"""
from __future__ import annotations

import argparse
import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stepshot import local  # noqa: E402
from stepshot.archsets import load_codes  # noqa: E402
from stepshot.correlate import correlate, load_accuracies, load_seed_accuracies  # noqa: E402
from stepshot.partition import build_tree, route  # noqa: E402
from stepshot.plan import build_plan  # noqa: E402
from stepshot.spec import load_file  # noqa: E402
from stepshot.space import get_space, group_caps, parse_arch, route_caps  # noqa: E402
from stepshot.uncertainty import bootstrap_taus, interval, seed_draws, seed_resampled_mean  # noqa: E402
from stepshot.workdir import Layout  # noqa: E402

GROUND_TRUTH = ROOT / "benchmarks" / "groundtruth" / "resnet48-fmnist.json"
ARCHS = ROOT / "benchmarks" / "archs" / "resnet48-fmnist-64.json"  # the ground truth's architectures

VERSION = 2
PRESETS = {
    # E1 one-shot epochs, E2 epochs per few-shot step, S steps, on a slice of the training set.
    # Evaluation on all 10,000 test images (the ground truth's), BN calibrated on 16 x 256.
    "quick": dict(train_limit=8000, e1=3, e2=1, groups=[2, 3], partition_steps=[
        {"dimension": "width", "stage": 4, "parts": 2}, {"dimension": "depth", "stage": 3, "parts": 2}],
        eval_images=10000, calibration_batches=16),
    # The full preset selects each stage's checkpoint as the paper does (spec §3.1): by Kendall
    # tau on `reference_archs` of the ground truth's architectures, after every epoch; every
    # method is then ranked on the other ones. The quick preset has no epoch to choose: its
    # few-shot steps are one epoch each, and its one-shot stage decays to lr 0 in three.
    "full": dict(train_limit=0, e1=12, e2=3, groups=[2, 3, 4], partition_steps=[
        {"dimension": "width", "stage": 4, "parts": 2}, {"dimension": "depth", "stage": 3, "parts": 2},
        {"dimension": "width", "stage": 3, "parts": 2}],
        eval_images=10000, calibration_batches=16, reference_archs=16),
}
REFERENCE_SEED = 0  # the fixed draw of reference architectures
ONE_SHOT_LR = 0.1
# Few-shot learning rates (spec §3.4): the paper restarts each split at 1/100 of the one-shot
# lr (0.002 at G=3). "grouped-10x" is the ablation with ten times that (v1's setting).
FEW_SHOT_LR = {"paper": (ONE_SHOT_LR / 100, {"3": ONE_SHOT_LR / 50}), "10x": (ONE_SHOT_LR / 10, {})}
METHODS = ("oneshot", "grouped", "partitioned", "grouped-10x")
TRAIN_BATCH = 128
SPACE = "resnet48-fmnist"  # the ground truth's space


def reference_split(count: int) -> tuple[dict, dict]:
    """The ground truth's architectures as `count` reference ones for checkpoint selection (the
    paper used 30 self-trained) and the rest for the ranking, in challenge format: disjoint, so
    no architecture that picks a checkpoint is scored with it. One fixed draw for every run."""
    archs = load_codes(ARCHS)
    chosen = set(random.Random(REFERENCE_SEED).sample(sorted(archs), count))
    return ({n: {"arch": c} for n, c in archs.items() if n in chosen},
            {n: {"arch": c} for n, c in archs.items() if n not in chosen})


def _selection(preset: dict, root: Path) -> tuple[dict, dict]:
    """(spec.selection, the evaluation's archs) for a preset that selects checkpoints."""
    reference, ranked = reference_split(preset["reference_archs"])
    files = {"reference": root / "reference-archs.json", "ranked": root / "ranked-archs.json"}
    root.mkdir(parents=True, exist_ok=True)
    for name, archs in (("reference", reference), ("ranked", ranked)):
        files[name].write_text(json.dumps(archs, indent=1))
    # The evaluation's protocol: its images, and 16 x 256 calibration images in training batches.
    batches = preset["calibration_batches"] * 256 // TRAIN_BATCH
    return ({"archs": str(files["reference"]), "groundTruth": str(GROUND_TRUTH),
             "evalImages": preset["eval_images"], "calibrationBatches": batches},
            {"archs": str(files["ranked"])})


def make_spec(preset: dict, method: str, seed: int, root: Path | None = None) -> dict:
    """The SupernetTraining of one method and seed; `root` holds the reference and ranked
    architecture files when the preset selects checkpoints."""
    steps = len(preset["groups"])
    assert steps == len(preset["partition_steps"]), "grouped and partitioned need the same number of steps"
    one_shot_epochs = preset["e1"] + (steps * preset["e2"] if method == "oneshot" else 0)
    lr, by_groups = FEW_SHOT_LR["10x" if method.endswith("-10x") else "paper"]
    few = {"mode": "none"}
    if method.startswith("grouped"):
        few = {"mode": "grouped", "groups": preset["groups"], "epochs": preset["e2"], "lr": lr, "lrByGroups": by_groups}
    elif method == "partitioned":
        few = {"mode": "partitioned", "steps": preset["partition_steps"], "epochs": preset["e2"], "lr": lr}
    selection, ranked = {}, {"archs": str(ARCHS)}
    if preset.get("reference_archs"):
        assert root is not None, "a preset that selects checkpoints needs the run root for its archs files"
        selection, ranked = _selection(preset, root)
    spec = {
        "apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
        "metadata": {"name": f"bench-{method}-s{seed}"},
        "spec": {
            "space": SPACE,
            "dataset": {"kind": "fashion-mnist", "trainLimit": preset["train_limit"]},
            "training": {"batchSize": TRAIN_BATCH, "seed": seed},
            "oneShot": {"epochs": one_shot_epochs, "lr": ONE_SHOT_LR, "warmupEpochs": 1},
            "fewShot": few,
            "evaluation": {**ranked, "groundTruth": str(GROUND_TRUTH), "evalImages": preset["eval_images"],
                           "calibrationBatches": preset["calibration_batches"], "calibrationBatchSize": 256,
                           "everyStage": True},
            "metricsPort": 0,
        },
    }
    if selection:
        spec["spec"]["selection"] = selection
    return spec


def _share_oneshot(src: Path, dst: Path) -> None:
    """Give a run the one-shot stage another run of the same seed already trained."""
    have, want = Layout(src), Layout(dst)
    for a, b in ((have.stage_dir("oneshot"), want.stage_dir("oneshot")),
                 (have.snapshot("oneshot"), want.snapshot("oneshot"))):
        if a.exists() and not b.exists():
            shutil.copytree(a, b)
    a, b = have.predictions("step0"), want.predictions("step0")  # same weights, same evaluation
    if a.exists() and not b.exists():
        b.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a, b)


def step_label(method: str, results: list[local.StageResult], step: int) -> str:
    names = [r.stage for r in results if r.step == step]
    if method == "oneshot":
        return "oneshot (whole budget)"
    if method == "partitioned" and step > 0:
        return f"step{step}({len(names)} parts)"
    return names[0]


def run_one(preset: dict, method: str, seed: int, root: Path, threads: int | None = None,
            cores: int | None = None) -> tuple[list[tuple[int, str, str]], float | None]:
    """Train and evaluate one method/seed; (step, stage label, predictions file) per evaluated step,
    and the run's wall time: measured now if a stage trained, else the one recorded by the call
    that trained it (None if none was)."""
    workdir = root / f"{method}-s{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file = workdir / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(make_spec(preset, method, seed, root), sort_keys=False))
    if method in ("partitioned", "grouped-10x"):
        _share_oneshot(root / f"grouped-s{seed}", workdir)
    start = time.monotonic()
    results = local.run(spec_file, workdir, threads, cores)
    seconds = time.monotonic() - start
    wall_file = workdir / "bench-wall-seconds.txt"  # resuming must not report a resume as the run's time
    if any(r.status == "done" for r in results):
        wall_file.write_text(f"{seconds:.1f}\n")
    wall = round(float(wall_file.read_text()), 1) if wall_file.exists() else None
    points: dict[int, tuple[int, str, str]] = {}
    for r in results:
        if r.metrics.get("predictions"):
            points.setdefault(r.step, (r.step, step_label(method, results, r.step), r.metrics["predictions"]))
    return list(points.values()), wall


def run_seed(preset_name: str, seed: int, root: Path, threads: int | None = None,
             cores: int | None = None) -> dict[str, tuple[list[tuple[int, str, str]], float | None]]:
    """Every method of one seed, grouped first: it trains the one-shot stage the others share."""
    out = {}
    for method in ("grouped", "partitioned", "oneshot", "grouped-10x"):
        print(f"== {method}, seed {seed}", flush=True)
        out[method] = run_one(PRESETS[preset_name], method, seed, root, threads, cores)
    return out


def correlate_points(method: str, seed: int, points: list[tuple[int, str, str]]) -> list[dict]:
    truth = load_accuracies(GROUND_TRUTH)
    rows = []
    for step, label, pred in points:
        m = correlate(load_accuracies(pred), truth)
        rows.append({"method": method, "seed": seed, "stage": label, "step": step,
                     **{k: m[k] for k in ("kendall_tau", "spearman", "pearson", "n")}})
    return rows


# The comparisons the benchmark exists for (arm a - arm b), paired by super-net seed.
COMPARISONS = (
    ("grouped final", "one-shot start"), ("partitioned final", "one-shot start"),
    ("grouped-10x final", "one-shot start"),
    ("grouped final", "oneshot (whole budget)"), ("partitioned final", "oneshot (whole budget)"),
    ("grouped final", "partitioned final"),
    ("grouped final", "grouped-10x final"),     # the paper's few-shot lr vs ten times it
)


def arms_of(points: dict[tuple[str, int], list[tuple[int, str, str]]]) -> dict[str, dict[int, tuple]]:
    """Arm name -> {super-net seed: (method, seed, step)}: each method's final step, and the
    one-shot start (step 0, shared by every few-shot method of a seed)."""
    arms: dict[str, dict[int, tuple]] = {}
    for (method, seed), pts in points.items():
        name = "oneshot (whole budget)" if method == "oneshot" else f"{method} final"
        arms.setdefault(name, {})[seed] = (method, seed, max(p[0] for p in pts))
        if any(p[0] == 0 for p in pts) and method != "oneshot":
            arms.setdefault("one-shot start", {}).setdefault(seed, (method, seed, 0))
    return arms


def significance(points: dict[tuple[str, int], list[tuple[int, str, str]]], replicates: int = 2000) -> dict:
    """Bootstrap 95% intervals for each arm's tau (mean over super-net seeds) and for the
    COMPARISONS, with three sources of noise resampled at once: the architectures, each
    architecture's ground-truth seeds (differences only: it lowers both sides alike) and the
    super-net seeds (paired: both arms of a difference get the same seed draws)."""
    preds = {(m, s, step): load_accuracies(f) for (m, s), pts in points.items() for step, _, f in pts}
    truth = load_seed_accuracies(GROUND_TRUTH)
    point, boots_archs = bootstrap_taus(preds, truth, replicates, resample_seeds=False)
    _, boots = bootstrap_taus(preds, truth, replicates)
    arms = arms_of(points)

    def arm(name: str, seeds: list[int], reps: dict) -> tuple[float, np.ndarray]:
        draws = seed_draws(len(seeds), replicates)
        return (statistics.fmean(point[arms[name][s]] for s in seeds),
                seed_resampled_mean([reps[arms[name][s]] for s in seeds], draws))

    out = {"replicates": replicates, "architectures": len(set(truth).intersection(*preds.values())),
           "resampled": {"final": "architectures and super-net seeds",
                         "differences": "architectures, each one's ground-truth seeds and super-net seeds (paired)"},
           "final": {}, "differences": []}
    for name in arms:
        est, vals = arm(name, sorted(arms[name]), boots_archs)
        lo, hi = interval(vals)
        out["final"][name] = {"kendall_tau": round(est, 4), "ci95": [round(lo, 4), round(hi, 4)],
                              "seeds": sorted(arms[name])}
    for a, b in COMPARISONS:
        seeds = sorted(arms.get(a, {}).keys() & arms.get(b, {}).keys())
        if len(seeds) < 2:
            continue  # one seed cannot show the super-net seed noise
        (ea, va), (eb, vb) = arm(a, seeds, boots), arm(b, seeds, boots)
        lo, hi = interval(va - vb)
        out["differences"].append({
            "a": a, "b": b, "seeds": seeds, "difference": round(ea - eb, 4), "ci95": [round(lo, 4), round(hi, 4)],
            # A difference is resolved at 95% when it exceeds the interval's half-width.
            "resolves": round((hi - lo) / 2, 4), "resolved": bool(lo > 0 or hi < 0),
            "share_at_or_below_zero": round(float((va - vb <= 0).mean()), 4)})
    return out


def resolution_line(sig: dict) -> str:
    """The smallest tau difference the benchmark resolves at 95%, in words."""
    diffs = sorted(sig["differences"], key=lambda d: d["resolves"])
    if not diffs:
        return "Resolution: fewer than two super-net seeds per comparison; nothing is resolved."
    best, worst = diffs[0], diffs[-1]
    seeds = len(best["seeds"])
    archs = f"{sig['architectures']} architectures" if "architectures" in sig else "the architectures"
    return (f"Resolution at 95% ({seeds} super-net seeds, {archs}, the ground truth's seeds): "
            f"differences in Kendall tau smaller than {best['resolves']:.3f} ({best['a']} - {best['b']}) "
            f"to {worst['resolves']:.3f} ({worst['a']} - {worst['b']}) are not resolved.")


def group_gains(points: dict[tuple[str, int], list[tuple[int, str, str]]], groups: list[int]) -> list[dict]:
    """After each grouped split (G = groups[k-1] at step k): the mean change of inherited accuracy,
    in points, of the architectures routed to each group of each network stage, averaged over
    the seeds. A split that helps some groups more than others reorders the architectures
    across groups, which shows here before it shows in the tau."""
    sp = get_space(SPACE)
    gains: dict[tuple, list[float]] = {}
    for (method, seed), pts in points.items():
        if not method.startswith("grouped"):
            continue
        preds = {step: load_accuracies(f) for step, _, f in pts}
        for step in sorted(k for k in preds if k > 0 and k - 1 in preds):
            g = groups[step - 1]
            caps = tuple(group_caps(sp, s, g) for s in range(sp.num_stages))     # the trainer's groups at G
            for code in sorted(set(preds[step]) & set(preds[step - 1])):
                gain = preds[step][code] - preds[step - 1][code]
                for stage, group in enumerate(route_caps(caps, parse_arch(code, sp))):
                    cap = caps[stage][group]
                    kind = "catch-all" if group == 0 and len(sp.stage_widths(stage)) > len(caps[stage]) else (
                        "max" if group == len(caps[stage]) - 1 else "singleton")
                    gains.setdefault((method, step, g, stage + 1, cap, kind, seed), []).append(gain)
    rows: dict[tuple, dict] = {}
    for (method, step, g, stage, cap, kind, seed), values in sorted(gains.items()):
        row = rows.setdefault((method, step, stage, cap), {
            "method": method, "step": step, "groups": g, "stage": stage, "cap": cap, "kind": kind,
            "archs": len(values), "per_seed": []})
        row["per_seed"].append(statistics.fmean(values))
    for row in rows.values():
        row["gain_mean"] = round(statistics.fmean(row["per_seed"]), 4)
        row["gain_seed_sd"] = round(statistics.stdev(row["per_seed"]), 4) if len(row["per_seed"]) > 1 else None
        row["per_seed"] = [round(v, 4) for v in row["per_seed"]]
    return list(rows.values())


def within_partitions(points: dict[tuple[str, int], list[tuple[int, str, str]]], steps: list[dict]) -> list[dict]:
    """For each partitioned step: the tau inside its partitions (size-weighted mean), for the
    step and for its one-shot start on the same split. Partitioned evaluation scores each
    architecture with its own sub-supernet, so the overall tau mixes two things: ranking inside
    a partition, and how the sub-supernets' accuracy levels line up (which nothing trains)."""
    from scipy import stats

    truth = load_accuracies(GROUND_TRUTH)
    sp = get_space(SPACE)
    tree = build_tree(sp, steps)

    def within(pred: dict[str, float], groups: dict[str, list[str]]) -> float:
        taus = [(len(c), stats.kendalltau([pred[x] for x in c], [truth[x] for x in c]).statistic)
                for c in groups.values() if len(c) > 2]
        taus = [(n, t) for n, t in taus if t == t]  # nan: a constant side
        return sum(n * t for n, t in taus) / sum(n for n, _ in taus)

    rows = []
    for (method, seed), pts in sorted(points.items()):
        if method != "partitioned":
            continue
        preds = {step: load_accuracies(f) for step, _, f in pts}
        common = sorted(set(truth).intersection(*preds.values()))
        for step in sorted(k for k in preds if k > 0):
            groups: dict[str, list[str]] = {}
            for code in common:
                groups.setdefault(route(parse_arch(code, sp), tree[step]).id, []).append(code)
            rows.append({"seed": seed, "step": step, "partitions": len(groups),
                         "within_kendall_tau": round(within(preds[step], groups), 4),
                         "start_within_kendall_tau": round(within(preds[0], groups), 4)})
    return rows


def markdown_within(rows: list[dict]) -> list[str]:
    lines = ["", "Partitioned runs, Kendall tau inside the partitions (size-weighted mean) after each step, and "
             "for the one-shot start on the same split:", "",
             "| seed | step | partitions | within, after the step | within, one-shot start |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['step']} | {r['partitions']} | {r['within_kendall_tau']:.3f} "
              f"| {r['start_within_kendall_tau']:.3f} |" for r in rows]
    by_step: dict[int, list[dict]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r)
    lines += [f"| mean | {step} | {rs[0]['partitions']} | {statistics.fmean(r['within_kendall_tau'] for r in rs):.3f} "
              f"| {statistics.fmean(r['start_within_kendall_tau'] for r in rs):.3f} |" for step, rs in by_step.items()]
    return lines


def wait_for(path: Path, timeout: float) -> None:
    """Training needs no ground truth, only the correlation does (it may still be running)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} not found: run `stepshot groundtruth` first (see README)")
        print(f"waiting for {path} ...", flush=True)
        time.sleep(30)


# summary key -> (sentence for the markdown, legend of the plot's reference line)
CEILINGS = {
    "seed_kendall_tau": ("Ground-truth seed-to-seed Kendall tau", "ground-truth seed-to-seed Kendall tau"),
    "predictor_ceiling_kendall_tau": ("Estimated tau of a noise-free predictor against the ground-truth mean",
                                      "noise-free predictor against the ground-truth mean"),
}


def markdown_significance(sig: dict) -> list[str]:
    lines = ["", f"Bootstrap 95% intervals ({sig['replicates']} replicates).", "",
             f"| arm (mean over seeds) | seeds | tau | 95% interval ({sig['resampled']['final']} resampled) |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {len(v['seeds'])} | {v['kendall_tau']:.3f} | [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] |"
              for name, v in sig["final"].items()]
    lines += ["", f"| difference | seeds | delta tau | 95% interval ({sig['resampled']['differences']} resampled) "
              "| resolved | smallest resolved |", "|---|---|---|---|---|---|"]
    lines += [f"| {d['a']} - {d['b']} | {len(d['seeds'])} | {d['difference']:+.3f} "
              f"| [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {'yes' if d['resolved'] else 'no'} "
              f"| {d['resolves']:.3f} |" for d in sig["differences"]]
    return lines + ["", resolution_line(sig)]


def markdown_gains(rows: list[dict]) -> list[str]:
    lines = ["", "Inherited accuracy gain after each grouped split, by the group an architecture routes to "
             "(points; mean over architectures, then over seeds, with the seeds' SD):", "",
             "| method | step (G) | stage | group cap | kind | archs/seed | gain | seed SD |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sd = "-" if r["gain_seed_sd"] is None else f"{r['gain_seed_sd']:.3f}"
        lines.append(f"| {r['method']} | {r['step']} ({r['groups']}) | S{r['stage']} | {r['cap']} | {r['kind']} "
                     f"| {r['archs']} | {r['gain_mean']:+.3f} | {sd} |")
    return lines


def markdown(rows: list[dict], ceilings: dict[str, float], sig: dict | None = None,
             within: list[dict] | None = None, gains: list[dict] | None = None) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = ["| method | stage | " + " | ".join(f"tau s{s}" for s in seeds) + " | mean tau | mean spearman | mean pearson |",
             "|---|---|" + "---|" * (len(seeds) + 3)]
    keys = []
    for r in rows:
        if (r["method"], r["step"]) not in keys:
            keys.append((r["method"], r["step"]))
    for method, step in keys:
        group = [r for r in rows if r["method"] == method and r["step"] == step]
        by_seed = {r["seed"]: r for r in group}
        cells = [f"{by_seed[s]['kendall_tau']:.3f}" if s in by_seed else "-" for s in seeds]
        mean = lambda k: statistics.fmean(r[k] for r in group)  # noqa: E731
        lines.append(f"| {method} | {group[0]['stage']} | " + " | ".join(cells)
                     + f" | {mean('kendall_tau'):.3f} | {mean('spearman'):.3f} | {mean('pearson'):.3f} |")
    lines.append("")
    lines += [f"{CEILINGS[k][0]}: {v:.3f}  " for k, v in ceilings.items()]
    if sig:
        lines += markdown_significance(sig)
    if within:
        lines += markdown_within(within)
    if gains:
        lines += markdown_gains(gains)
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], finals: dict[str, str], out: Path, ceilings: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(finals), figsize=(5 * (1 + len(finals)), 4.2))
    ax = axes[0]
    last = max(r["step"] for r in rows)
    for method in METHODS:
        # The one-shot-only run spends the whole budget, so it sits at the last step.
        pts = sorted({(last if method == "oneshot" else r["step"], r["seed"], r["kendall_tau"])
                      for r in rows if r["method"] == method})
        if not pts:
            continue
        steps = sorted({p[0] for p in pts})
        means = [statistics.fmean(p[2] for p in pts if p[0] == s) for s in steps]
        line, = ax.plot(steps, means, marker="D" if method == "oneshot" else "o",
                        label="oneshot (whole budget)" if method == "oneshot" else method)
        ax.scatter([p[0] for p in pts], [p[2] for p in pts], color=line.get_color(), alpha=0.35, s=12)
    for (key, value), style in zip(ceilings.items(), ("--", ":")):
        ax.axhline(value, color="gray", ls=style, label=CEILINGS[key][1])
    ax.set(xlabel="step (0 = one-shot)", ylabel="Kendall tau", title="ranking correlation per stage",
           xticks=range(last + 1))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    truth = load_accuracies(GROUND_TRUTH)
    for ax, (method, pred_file) in zip(axes[1:], finals.items()):
        pred = load_accuracies(pred_file)
        common = sorted(set(pred) & set(truth))
        ax.scatter([truth[c] for c in common], [pred[c] for c in common], s=12)
        ax.set(xlabel="stand-alone accuracy (%)", ylabel="inherited accuracy (%)", title=f"{method}, final stage")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def complete_seeds(preset_name: str, seeds: list[int], root: Path) -> list[int]:
    """Seeds whose every method has its final predictions (for --analyze-only)."""
    done = []
    for seed in seeds:
        finals = []
        for method in METHODS:
            spec_file = root / f"{method}-s{seed}" / "spec.yaml"
            if not spec_file.exists():
                break
            last = max(s[0].step for s in build_plan(load_file(spec_file)).steps if s[0].is_train)
            finals.append(Layout(spec_file.parent).predictions(f"step{last}").exists())
        if len(finals) == len(METHODS) and all(finals):
            done.append(seed)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds trained at once, in separate processes (default: 1)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--analyze-only", action="store_true",
                        help="train nothing: report the seeds whose runs are complete")
    parser.add_argument("--wait-for-truth", type=float, default=0, metavar="SECONDS",
                        help="wait this long for the ground truth after training (it may still be running)")
    parser.add_argument("--out", type=Path, default=None, help="output stem (default benchmarks/results/ranking-<preset>)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    out = args.out or ROOT / "benchmarks" / "results" / f"ranking-{args.preset}"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary_file = GROUND_TRUTH.with_name(GROUND_TRUTH.stem + ".summary.json")
    # Cores are shared out between the seeds; results depend on the thread count, so it is recorded.
    cores = max(1, (os.cpu_count() or 1) // args.jobs)
    os.environ.setdefault("OMP_NUM_THREADS", str(cores))
    threads = int(os.environ["OMP_NUM_THREADS"])
    root = args.workdir / args.preset
    seeds = complete_seeds(args.preset, args.seeds, root) if args.analyze_only else args.seeds
    if not seeds:
        raise SystemExit(f"no complete seed under {root}")
    if args.jobs > 1 and not args.analyze_only:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_seed, args.preset, seed, root, threads, cores) for seed in seeds]
            per_seed = dict(zip(seeds, (f.result() for f in futures)))
    else:  # complete seeds only re-read their results
        per_seed = {seed: run_seed(args.preset, seed, root, threads, cores) for seed in seeds}
    points, walls = {}, {}
    for seed, methods in per_seed.items():
        for method, (pts, wall) in methods.items():
            points[(method, seed)] = pts
            walls[f"{method}-s{seed}"] = wall
    wait_for(summary_file, args.wait_for_truth)  # written after the ground truth itself
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    ceilings = {k: summary[k] for k in CEILINGS if summary.get(k) is not None}
    rows = [row for (method, seed), pts in points.items() for row in correlate_points(method, seed, pts)]
    finals = {m: max(points[(m, seeds[0])])[2] for m in METHODS if points.get((m, seeds[0]))}
    sig = significance(points)
    within = within_partitions(points, preset["partition_steps"])
    gains = group_gains(points, preset["groups"])
    protocol = local.evaluation_protocol(Path(next(iter(finals.values())))).get("protocol")
    result = {"version": VERSION, "preset": args.preset, "config": preset, "methods": list(METHODS),
              "few_shot_lr": FEW_SHOT_LR, "threads": threads, "jobs": args.jobs, "seeds": seeds,
              "evaluation_protocol": protocol,
              "ceiling_kendall_tau": ceilings.get("seed_kendall_tau"),
              "predictor_ceiling_kendall_tau": ceilings.get("predictor_ceiling_kendall_tau"),
              "ground_truth_seeds": len(summary.get("seeds", [])),
              "ground_truth_seeds_needed": summary.get("seeds_needed"),
              "wall_seconds": walls, "runs": rows, "bootstrap": sig, "resolution": resolution_line(sig),
              "within_partitions": within, "group_gains": gains,
              "ground_truth_wall_seconds": summary.get("wall_seconds_total"),
              "ground_truth_devices": summary.get("devices")}
    text = markdown(rows, ceilings, sig, within, gains)
    Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{out}.md").write_text(text)
    plot(rows, finals, Path(f"{out}.png"), ceilings)
    print(text)
    print(f"wrote {out}.json, {out}.md, {out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
