"""Ranking benchmark: one-shot vs one-shot -> grouped few-shot vs one-shot -> partitioned few-shot.

    python benchmarks/ranking.py --preset quick          # 4 seeds, 2 at a time: 47 min on 2 CPU cores
    python benchmarks/ranking.py --preset full --seeds 0 1 2

Every method sees the same data and the same epoch budget along any chain of stages:
  oneshot      one one-shot stage of E1 + S*E2 epochs
  grouped      one-shot E1 epochs, then S grouped steps (G = 2, 3, ...) of E2 epochs each
  partitioned  one-shot E1 epochs, then S partition steps of E2 epochs per partition Job
The grouped and partitioned runs of a seed share the one-shot stage (it is trained once and
copied), so their difference is the few-shot schedule alone. After every step the ground-truth
architectures are evaluated with inherited weights (BN recalibrated) and correlated with the
committed stand-alone ground truth. Each run is a plain `stepshot run` work directory, so an
interrupted benchmark resumes where it stopped.

Outputs: <out>.json (`runs`: one row per method/seed/stage, `ceiling_kendall_tau`, wall times,
`bootstrap`: 95% intervals for the final taus and the differences between methods),
<out>.md (stage x method x seed table with means, then the intervals) and <out>.png (tau per
stage; predicted vs true accuracy at the final stage).

The intervals resample the ground truth's architectures and, per architecture, its seeds
(stepshot.uncertainty), the same resample for every method, so a difference whose interval
excludes 0 is one this ground truth can resolve. Super-net training noise is not in them:
compare the seed columns for that.
"""
from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stepshot import local  # noqa: E402
from stepshot.correlate import correlate, load_accuracies, load_seed_accuracies  # noqa: E402
from stepshot.partition import build_tree, route  # noqa: E402
from stepshot.space import parse_arch  # noqa: E402
from stepshot.uncertainty import bootstrap_taus, interval  # noqa: E402
from stepshot.workdir import Layout  # noqa: E402

GROUND_TRUTH = ROOT / "benchmarks" / "groundtruth" / "resnet48-fmnist.json"
ARCHS = ROOT / "benchmarks" / "archs" / "resnet48-fmnist-64.json"  # the ground truth's architectures

PRESETS = {
    # E1 one-shot epochs, E2 epochs per few-shot step, S steps, on a slice of the training set.
    "quick": dict(train_limit=8000, e1=3, e2=1, groups=[2, 3], partition_steps=[
        {"dimension": "width", "stage": 4, "parts": 2}, {"dimension": "depth", "stage": 3, "parts": 2}],
        eval_images=2000, calibration_batches=4),
    "full": dict(train_limit=0, e1=12, e2=3, groups=[2, 3, 4], partition_steps=[
        {"dimension": "width", "stage": 4, "parts": 2}, {"dimension": "depth", "stage": 3, "parts": 2},
        {"dimension": "width", "stage": 3, "parts": 2}],
        eval_images=10000, calibration_batches=16),
}
METHODS = ("oneshot", "grouped", "partitioned")
SPACE = "resnet48-fmnist"  # the ground truth's space


def make_spec(preset: dict, method: str, seed: int) -> dict:
    steps = len(preset["groups"])
    assert steps == len(preset["partition_steps"]), "grouped and partitioned need the same number of steps"
    one_shot_epochs = preset["e1"] + (steps * preset["e2"] if method == "oneshot" else 0)
    few = {"mode": "none"}
    if method == "grouped":
        few = {"mode": "grouped", "groups": preset["groups"], "epochs": preset["e2"], "lr": 0.01, "lrByGroups": {}}
    elif method == "partitioned":
        few = {"mode": "partitioned", "steps": preset["partition_steps"], "epochs": preset["e2"], "lr": 0.01}
    return {
        "apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
        "metadata": {"name": f"bench-{method}-s{seed}"},
        "spec": {
            "space": SPACE,
            "dataset": {"kind": "fashion-mnist", "trainLimit": preset["train_limit"]},
            "training": {"batchSize": 128, "seed": seed},
            "oneShot": {"epochs": one_shot_epochs, "lr": 0.1, "warmupEpochs": 1},
            "fewShot": few,
            "evaluation": {"archs": str(ARCHS), "groundTruth": str(GROUND_TRUTH), "evalImages": preset["eval_images"],
                           "calibrationBatches": preset["calibration_batches"], "calibrationBatchSize": 256,
                           "everyStage": True},
            "metricsPort": 0,
        },
    }


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


def run_one(preset: dict, method: str, seed: int, root: Path) -> tuple[list[tuple[int, str, str]], float | None]:
    """Train and evaluate one method/seed; (step, stage label, predictions file) per evaluated step,
    and the run's wall time: measured now if a stage trained, else the one recorded by the call
    that trained it (None if none was)."""
    workdir = root / f"{method}-s{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file = workdir / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(make_spec(preset, method, seed), sort_keys=False))
    if method == "partitioned":
        _share_oneshot(root / f"grouped-s{seed}", workdir)
    start = time.monotonic()
    results = local.run(spec_file, workdir)
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


def run_seed(preset_name: str, seed: int, root: Path) -> dict[str, tuple[list[tuple[int, str, str]], float | None]]:
    """The three methods of one seed, grouped first: it trains the one-shot stage the others share."""
    out = {}
    for method in ("grouped", "partitioned", "oneshot"):
        print(f"== {method}, seed {seed}", flush=True)
        out[method] = run_one(PRESETS[preset_name], method, seed, root)
    return out


def correlate_points(method: str, seed: int, points: list[tuple[int, str, str]]) -> list[dict]:
    truth = load_accuracies(GROUND_TRUTH)
    rows = []
    for step, label, pred in points:
        m = correlate(load_accuracies(pred), truth)
        rows.append({"method": method, "seed": seed, "stage": label, "step": step,
                     **{k: m[k] for k in ("kendall_tau", "spearman", "pearson", "n")}})
    return rows


def significance(points: dict[tuple[str, int], list[tuple[int, str, str]]], replicates: int = 2000) -> dict:
    """Bootstrap 95% intervals for each method's final tau (mean over seeds) and for the
    differences the issue asks about: few-shot vs one-shot, and few-shot vs its own start."""
    preds, final, start = {}, {}, {}
    for (method, seed), pts in points.items():
        for step, _, pred in pts:
            preds[(method, seed, step)] = load_accuracies(pred)
        final.setdefault(method, {})[seed] = (method, seed, max(p[0] for p in pts))
        if method == "grouped":  # step 0 of grouped and partitioned: the same shared one-shot stage
            start[seed] = (method, seed, 0)
    truth = load_seed_accuracies(GROUND_TRUTH)
    # One tau: architectures resampled. Differences: the ground truth's seeds redrawn too, which
    # lowers both sides alike, so their intervals err towards 0 (see stepshot.uncertainty).
    point, boots_archs = bootstrap_taus(preds, truth, replicates, resample_seeds=False)
    _, boots = bootstrap_taus(preds, truth, replicates)
    arms = {f"{m} final" if m != "oneshot" else "oneshot (whole budget)": v for m, v in final.items()}
    if start:
        arms["one-shot start"] = start

    def mean_over_seeds(arm: dict, seeds: list[int], reps: dict) -> tuple[float, object]:
        return (statistics.fmean(point[arm[s]] for s in seeds), sum(reps[arm[s]] for s in seeds) / len(seeds))

    def summary(values, est: float) -> dict:
        lo, hi = interval(values)
        return {"kendall_tau": round(est, 4), "ci95": [round(lo, 4), round(hi, 4)]}

    out = {"replicates": replicates, "resampled": {"final": "architectures",
                                                   "differences": "architectures and each one's ground-truth seeds"},
           "not_included": "super-net training noise (the spread between benchmark seeds)",
           "final": {}, "differences": []}
    for name, arm in arms.items():
        est, vals = mean_over_seeds(arm, sorted(arm), boots_archs)
        out["final"][name] = summary(vals, est)
    pairs = [(f"{m} final", "oneshot (whole budget)") for m in ("grouped", "partitioned")]
    pairs += [(f"{m} final", "one-shot start") for m in ("grouped", "partitioned")]
    pairs += [("grouped final", "partitioned final")]
    for a, b in pairs:
        if a not in arms or b not in arms:
            continue
        seeds = sorted(arms[a].keys() & arms[b].keys())
        (ea, va), (eb, vb) = mean_over_seeds(arms[a], seeds, boots), mean_over_seeds(arms[b], seeds, boots)
        diff = summary(va - vb, ea - eb)
        out["differences"].append({"a": a, "b": b, "seeds": seeds, "difference": diff["kendall_tau"],
                                   "ci95": diff["ci95"], "share_at_or_below_zero": round(float((va - vb <= 0).mean()), 4)})
    return out


def within_partitions(points: dict[tuple[str, int], list[tuple[int, str, str]]], steps: list[dict]) -> list[dict]:
    """For each partitioned step: the tau inside its partitions (size-weighted mean), for the
    step and for its one-shot start on the same split. Partitioned evaluation scores each
    architecture with its own sub-supernet, so the overall tau mixes two things: ranking inside
    a partition, and how the sub-supernets' accuracy levels line up (which nothing trains)."""
    from scipy import stats

    truth = load_accuracies(GROUND_TRUTH)
    tree = build_tree(SPACE, steps)

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
                groups.setdefault(route(parse_arch(code, SPACE), tree[step]).id, []).append(code)
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
    lines = ["", f"Bootstrap 95% intervals ({sig['replicates']} replicates, paired across methods; "
             f"not included: {sig['not_included']}).", "",
             f"| final tau (mean over seeds) | tau | 95% interval ({sig['resampled']['final']} resampled) |",
             "|---|---|---|"]
    lines += [f"| {name} | {v['kendall_tau']:.3f} | [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] |"
              for name, v in sig["final"].items()]
    lines += ["", f"| difference | delta tau | 95% interval ({sig['resampled']['differences']} resampled) "
              "| replicates <= 0 |", "|---|---|---|---|"]
    lines += [f"| {d['a']} - {d['b']} | {d['difference']:+.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] "
              f"| {d['share_at_or_below_zero']:.1%} |" for d in sig["differences"]]
    return lines


def markdown(rows: list[dict], ceilings: dict[str, float], sig: dict | None = None,
             within: list[dict] | None = None) -> str:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="seeds trained at once, in separate processes (default: 2)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--wait-for-truth", type=float, default=0, metavar="SECONDS",
                        help="wait this long for the ground truth after training (it may still be running)")
    parser.add_argument("--out", type=Path, default=None, help="output stem (default benchmarks/results/ranking-<preset>)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    out = args.out or ROOT / "benchmarks" / "results" / f"ranking-{args.preset}"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary_file = GROUND_TRUTH.with_name(GROUND_TRUTH.stem + ".summary.json")
    # Cores are shared out between the seeds; results depend on the thread count, so it is recorded.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    root = args.workdir / args.preset
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_seed, args.preset, seed, root) for seed in args.seeds]
            per_seed = dict(zip(args.seeds, (f.result() for f in futures)))
    else:
        per_seed = {seed: run_seed(args.preset, seed, root) for seed in args.seeds}
    points, walls = {}, {}
    for seed, methods in per_seed.items():
        for method, (pts, wall) in methods.items():
            points[(method, seed)] = pts
            walls[f"{method}-s{seed}"] = wall
    wait_for(summary_file, args.wait_for_truth)  # written after the ground truth itself
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    ceilings = {k: summary[k] for k in CEILINGS if summary.get(k) is not None}
    rows = [row for (method, seed), pts in points.items() for row in correlate_points(method, seed, pts)]
    finals = {m: max(points[(m, args.seeds[0])])[2] for m in METHODS if points.get((m, args.seeds[0]))}
    sig = significance(points)
    within = within_partitions(points, preset["partition_steps"])
    result = {"preset": args.preset, "config": preset, "threads": os.environ.get("OMP_NUM_THREADS"), "jobs": args.jobs,
              "seeds": args.seeds,
              "ceiling_kendall_tau": ceilings.get("seed_kendall_tau"),
              "predictor_ceiling_kendall_tau": ceilings.get("predictor_ceiling_kendall_tau"),
              "ground_truth_seeds_needed": summary.get("seeds_needed"),
              "wall_seconds": walls, "runs": rows, "bootstrap": sig, "within_partitions": within,
              "ground_truth_wall_seconds": summary.get("wall_seconds_total"),
              "ground_truth_devices": summary.get("devices")}
    Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(rows, ceilings, sig, within))
    plot(rows, finals, Path(f"{out}.png"), ceilings)
    print(markdown(rows, ceilings, sig, within))
    print(f"wrote {out}.json, {out}.md, {out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
