"""Checkpoint selection on disjoint reference architectures, measured on the ranking benchmark's runs.

    python benchmarks/selection.py                  # evaluate the kept epochs, then analyse
    python benchmarks/selection.py --analyze-only   # analyse what is evaluated

The paper picks each stage's checkpoint by Kendall tau on 30 self-trained reference
architectures (spec §3.1). Does that pick a better checkpoint for the *other* architectures
than simply taking the last epoch? This reads the quick preset's finished runs
(benchmarks/ranking.py) and, for the one-shot stage of each super-net seed, evaluates every
epoch checkpoint the run kept (3 per stage) with the ground truth's own protocol through
`stepshot evaluate` on all 64 architectures; candidate sets:
  one-shot start  the shared 3-epoch one-shot stage (epochs 1-3; lr warms up in epoch 1)
  whole budget    the 5-epoch one-shot run (epochs 3-5 kept)
Then, per seed: select the epoch with the best tau on 16 reference architectures (the rule of
`stepshot_trainer.train.select_epoch`; ties to the later epoch), and score the selected and
the last epoch on the other 48. Reference sets: the ranking benchmark's fixed draw, and 1,000
random draws of 16 (the effect of which 16 the reference happens to be); reference truth:
the 8-seed mean, or one stand-alone run (the first seed), as a team that trains its reference once has.

Outputs benchmarks/results/selection-quick.{json,md}: per candidate set, how often the
selected epoch is the last, the held-out tau of selected minus last (mean over seeds, 95%
interval over seeds and draws), and what the best epoch in hindsight would have gained.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import ranking  # noqa: E402
from stepshot.correlate import load_accuracies, load_seed_accuracies  # noqa: E402
from stepshot.uncertainty import interval, kendall_tau_b  # noqa: E402
from stepshot.workdir import Layout  # noqa: E402
from stepshot_trainer import checkpoint  # noqa: E402
from stepshot_trainer.train import select_epoch  # noqa: E402

# candidate set -> (the ranking benchmark's run, its stage whose kept epochs are the candidates)
CANDIDATES = {"one-shot start": ("grouped", "oneshot"), "whole budget": ("oneshot", "oneshot")}
REFERENCE = ranking.PRESETS["full"]["reference_archs"]   # the full preset's reference set
DRAWS = 1000


def predictions_file(out: Path, run: Path, stage: str, epoch: int) -> Path:
    return out / f"{run.name}-{stage}-e{epoch}.json"


def evaluated_epochs(out: Path, run: Path, stage: str) -> dict[int, Path]:
    """Epoch -> predictions file of the kept checkpoints evaluated so far."""
    kept = checkpoint.list_checkpoints(Layout(run).checkpoints(stage))
    return {epoch: f for epoch, _ in kept if (f := predictions_file(out, run, stage, epoch)).exists()}


def candidate_predictions(run: Path, stage: str, out: Path, processes: int) -> dict[int, Path]:
    """Epoch -> predictions of that kept checkpoint, evaluated as `stepshot evaluate` does a
    snapshot (the checkpoint is snapshotted into a scratch work directory); the last epoch is
    the run's own snapshot, whose predictions the benchmark already made."""
    kept = checkpoint.list_checkpoints(Layout(run).checkpoints(stage))
    last = max(epoch for epoch, _ in kept)
    found = {}
    for epoch, pt in kept:
        pred = predictions_file(out, run, stage, epoch)
        if epoch == last and not pred.exists():
            shutil.copy2(Layout(run).predictions("step0"), pred)
        elif not pred.exists():
            scratch = out / "scratch" / f"{run.name}-e{epoch}"
            checkpoint.snapshot(pt, Layout(scratch).snapshot(stage))
            subprocess.run([sys.executable, "-m", "stepshot.cli", "evaluate", str(run / "spec.yaml"),
                            "--workdir", str(scratch), "--stages", stage, "--out", str(pred),
                            "--threads", "1", "--processes", str(processes)], check=True)
            shutil.rmtree(scratch)
        found[epoch] = pred
    return found


def analyse(per_seed: dict[int, dict[int, dict[str, float]]], truth_mean: dict[str, float],
            truth_once: dict[str, float], fixed: list[str], rng: np.random.Generator) -> dict:
    """Selected vs last epoch on the held-out architectures, per reference truth and draw kind."""
    codes = sorted(truth_mean)
    index = {c: i for i, c in enumerate(codes)}
    draws = np.array([rng.permutation(len(codes)) for _ in range(DRAWS)])
    chosen = set(fixed)
    fixed_row = np.array([index[c] for c in fixed] + [index[c] for c in codes if c not in chosen])
    truth = np.array([truth_mean[c] for c in codes])
    out = {}
    for ref_name, ref_truth in (("8-seed mean", truth), ("one run (first seed)", np.array([truth_once[c] for c in codes]))):
        for kind, rows in (("fixed draw", fixed_row[None]), ("random draws", draws)):
            ref, held = rows[:, :REFERENCE], rows[:, REFERENCE:]
            diffs, last_picked, hindsight = [], [], []
            for seed, epochs in sorted(per_seed.items()):
                preds = {e: np.array([p[c] for c in codes]) for e, p in epochs.items()}
                sel_taus = {e: kendall_tau_b(p[ref], ref_truth[ref]) for e, p in preds.items()}
                held_taus = {e: kendall_tau_b(p[held], truth[held]) for e, p in preds.items()}
                last = max(preds)
                picked = [select_epoch({e: float(t[d]) for e, t in sel_taus.items()}, last)[0] for d in range(len(rows))]
                chosen = np.array([held_taus[e][d] for d, e in enumerate(picked)])
                diffs.append(chosen - held_taus[last])
                last_picked.append(np.mean([e == last for e in picked]))
                hindsight.append(np.max(np.stack(list(held_taus.values())), 0) - held_taus[last])
            diffs = np.stack(diffs)            # seeds x draws
            boot = _seed_bootstrap(diffs, rng)
            out[f"{ref_name}, {kind}"] = {
                "reference_truth": ref_name, "reference_draws": kind, "draws": len(rows),
                "seeds": sorted(per_seed), "last_epoch_selected_share": round(float(np.mean(last_picked)), 3),
                "selected_minus_last": round(float(diffs.mean()), 4),
                "ci95": [round(v, 4) for v in interval(boot)],
                "per_seed": [round(float(d.mean()), 4) for d in diffs],
                "hindsight_best_minus_last": round(float(np.stack(hindsight).mean()), 4)}
    return out


def _seed_bootstrap(diffs: np.ndarray, rng: np.random.Generator, replicates: int = 2000) -> np.ndarray:
    """Means over resampled super-net seeds and reference draws (seeds x draws)."""
    s = rng.integers(0, diffs.shape[0], size=(replicates, diffs.shape[0]))
    d = rng.integers(0, diffs.shape[1], size=(replicates, diffs.shape[0]))
    return diffs[s, d].mean(1)


def per_epoch_table(evaluated: dict[str, dict[int, dict[int, dict[str, float]]]], truth: dict[str, float]) -> list[dict]:
    codes = sorted(truth)
    t = np.array([truth[c] for c in codes])
    rows = []
    for name, per_seed in evaluated.items():
        for epoch in sorted({e for epochs in per_seed.values() for e in epochs}):
            vals = [float(kendall_tau_b(np.array([p[epoch][c] for c in codes]), t))
                    for p in per_seed.values() if epoch in p]
            rows.append({"candidates": name, "epoch": epoch, "seeds": len(vals),
                         "kendall_tau_64_mean": round(statistics.fmean(vals), 4)})
    return rows


def markdown(result: dict) -> str:
    lines = ["# Checkpoint selection on 16 reference architectures, scored on the other 48", "",
             f"Quick preset runs of `benchmarks/ranking.py`, super-net seeds {result['seeds']}; evaluation protocol "
             "as the benchmark's (10,000 test images, 16 x 256 calibration, BN folded, 1 thread).", "",
             "Kendall tau on all 64 architectures per kept epoch (mean over seeds):", "",
             "| candidates | epoch | seeds | tau (64) |", "|---|---|---|---|"]
    lines += [f"| {r['candidates']} | {r['epoch']} | {r['seeds']} | {r['kendall_tau_64_mean']:.3f} |"
              for r in result["per_epoch"]]
    lines += ["", "Selected minus last epoch, held-out tau (48 architectures):", "",
              "| candidates | reference truth, draws | last epoch picked | selected - last [95%] | best in hindsight - last |",
              "|---|---|---|---|---|"]
    for name, rows in result["selection"].items():
        for key, r in rows.items():
            lines.append(f"| {name} | {key} | {r['last_epoch_selected_share']:.0%} | {r['selected_minus_last']:+.4f} "
                         f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | {r['hindsight_best_minus_last']:+.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench" / "quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--processes", type=int, default=1, help="evaluating processes (1 thread each)")
    parser.add_argument("--analyze-only", action="store_true", help="evaluate nothing: use what is there")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection-quick")
    args = parser.parse_args()
    preds_dir = args.workdir.parent / "selection"
    preds_dir.mkdir(parents=True, exist_ok=True)
    evaluated: dict[str, dict[int, dict[int, dict[str, float]]]] = {}
    for name, (method, stage) in CANDIDATES.items():
        for seed in args.seeds:
            run = args.workdir / f"{method}-s{seed}"
            files = evaluated_epochs(preds_dir, run, stage) if args.analyze_only else \
                candidate_predictions(run, stage, preds_dir, args.processes)
            if len(files) > 1:
                evaluated.setdefault(name, {})[seed] = {e: load_accuracies(p) for e, p in files.items()}
    gt = ranking.GROUND_TRUTH
    seeds_gt = load_seed_accuracies(gt)
    truth_mean = {c: statistics.fmean(v) for c, v in seeds_gt.items()}
    truth_once = {c: v[0] for c, v in seeds_gt.items()}
    fixed = [entry["arch"] for entry in ranking.reference_split(REFERENCE)[0].values()]
    rng = np.random.default_rng(0)
    result = {"reference_archs": REFERENCE, "random_draws": DRAWS, "seeds": args.seeds,
              "candidates": {k: {"run": m, "stage": s} for k, (m, s) in CANDIDATES.items()},
              "per_epoch": per_epoch_table(evaluated, truth_mean),
              "selection": {name: analyse(per_seed, truth_mean, truth_once, fixed, rng)
                            for name, per_seed in evaluated.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
