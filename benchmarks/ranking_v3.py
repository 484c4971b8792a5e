"""Ranking benchmark v3: the paper's few-shot schedule as a branch-paired test against its
equal-budget control, from a one-shot start on all 60,000 images, beside the free baselines.

    python benchmarks/ranking_v3.py run --seeds 0 1 2 3 4 5 6 7   # the pilot (resumable)
    python benchmarks/ranking_v3.py analyze                        # results/ranking-v3.{json,md,png}

Design (pre-registered in benchmarks/README.md before the main run):
  start    one-shot, all 60,000 training images, E1 epochs (1 warm-up, cosine to 0), checkpoint
           selected by Kendall tau on 16 reference architectures after every epoch (the paper's
           selection, spec §3.1), which also records the tau-versus-epoch curve of every seed
  A paper  from that checkpoint: grouped steps G = 2, 3, E2 epochs each, the paper's few-shot lrs
           (1/100 of the one-shot lr, 1/50 at G=3), no warm-up
  B control from the same checkpoint: the unsplit super-net (`fewShot.mode: continued`) for the
           same steps, epochs and lrs
  Both branches use `training.seedScope: step`, so step k draws the same batches, the same
  subnets and the same dropout in A and B: the difference is the split alone.
Primary endpoint: tau(A) - tau(B) on the 48 ranked architectures (the 64 of the ground truth
minus the 16 references), against the 8-seed mean stand-alone accuracies. Everything else is
secondary. Each seed is a pair of plain `stepshot run` work directories, so an interrupted
benchmark resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from stepshot import local  # noqa: E402
from ranking import GROUND_TRUTH, ONE_SHOT_LR, SPACE, TRAIN_BATCH, _share_oneshot, reference_split  # noqa: E402

PRESETS = {
    "pilot": dict(train_limit=0, e1=4, e2=1, groups=[2, 3], eval_images=10000, calibration_batches=16,
                  reference_archs=16, selection_images=10000),
    # The same pipeline in seconds (the tests): a slice, one epoch, few images.
    "tiny": dict(train_limit=512, e1=1, e2=1, groups=[2, 3], eval_images=256, calibration_batches=1,
                 reference_archs=16, selection_images=256),
}
PRESET = PRESETS["pilot"]
ARMS = {"paper": "grouped", "control": "continued"}
FEW_SHOT_LR, LR_BY_GROUPS = ONE_SHOT_LR / 100, {"3": ONE_SHOT_LR / 50}   # spec §3.4
DEFAULT_ROOT = ROOT / "runs" / "ranking-v3"


def archs_files(root: Path) -> dict[str, Path]:
    """The fixed draw of 16 reference and 48 ranked architectures, written once under `root`."""
    reference, ranked = reference_split(PRESET["reference_archs"])
    files = {"reference": root / "reference-archs.json", "ranked": root / "ranked-archs.json"}
    root.mkdir(parents=True, exist_ok=True)
    for name, archs in (("reference", reference), ("ranked", ranked)):
        if not files[name].exists():
            files[name].write_text(json.dumps(archs, indent=1))
    return files


def make_spec(arm: str, seed: int, root: Path) -> dict:
    files = archs_files(root)
    batches = PRESET["calibration_batches"] * 256 // TRAIN_BATCH   # 16 x 256 images in training batches
    return {
        "apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
        "metadata": {"name": f"v3-{arm}-s{seed}"},
        "spec": {
            "space": SPACE,
            "dataset": {"kind": "fashion-mnist", "trainLimit": PRESET["train_limit"]},
            "training": {"batchSize": TRAIN_BATCH, "seed": seed, "seedScope": "step"},
            "oneShot": {"epochs": PRESET["e1"], "lr": ONE_SHOT_LR, "warmupEpochs": 1},
            "fewShot": {"mode": ARMS[arm], "groups": PRESET["groups"], "epochs": PRESET["e2"],
                        "lr": FEW_SHOT_LR, "lrByGroups": LR_BY_GROUPS},
            "selection": {"archs": str(files["reference"]), "groundTruth": str(GROUND_TRUTH),
                          "evalImages": PRESET["selection_images"], "calibrationBatches": batches},
            "evaluation": {"archs": str(files["ranked"]), "groundTruth": str(GROUND_TRUTH),
                           "evalImages": PRESET["eval_images"], "calibrationBatches": PRESET["calibration_batches"],
                           "calibrationBatchSize": 256},
            "metricsPort": 0,
        },
    }


def evaluate_start(spec_file: Path, workdir: Path, out: Path, threads: int) -> None:
    """The start's predictions on the ranked architectures, under the same protocol."""
    if out.exists():
        return
    cmd = [sys.executable, "-m", "stepshot.cli", "evaluate", str(spec_file), "--workdir", str(workdir),
           "--stages", "oneshot", "--out", str(out), "--threads", str(threads), "--processes", "1"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def run_seed(seed: int, root: Path, threads: int) -> None:
    """Branch A (which trains the shared start), the start's evaluation, then branch B."""
    seed_dir = root / f"s{seed}"
    walls = {}
    for arm in ("paper", "control"):
        workdir = seed_dir / arm
        workdir.mkdir(parents=True, exist_ok=True)
        spec_file = workdir / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(make_spec(arm, seed, root), sort_keys=False))
        if arm == "control":
            _share_oneshot(seed_dir / "paper", workdir)   # the same start, byte for byte
            evaluate_start(seed_dir / "paper" / "spec.yaml", seed_dir / "paper", seed_dir / "start-predictions.json",
                           threads)
        print(f"== seed {seed}: {arm} ({ARMS[arm]})", flush=True)
        start = time.monotonic()
        results = local.run(spec_file, workdir, threads, cores=1)
        if any(r.status == "done" for r in results):
            walls[arm] = round(time.monotonic() - start, 1)
    wall_file = seed_dir / "wall-seconds.json"
    recorded = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    wall_file.write_text(json.dumps({**recorded, **walls}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate seeds (resumable)")
    run.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--workdir", type=Path, default=DEFAULT_ROOT)
    run.add_argument("--preset", choices=sorted(PRESETS), default="pilot")
    analyze = sub.add_parser("analyze", help="write results/ranking-v3.{json,md,png}")
    analyze.add_argument("--workdir", type=Path, default=DEFAULT_ROOT)
    analyze.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ranking-v3")
    analyze.add_argument("--keep", type=Path, default=None, metavar="DIR",
                         help="also copy the analysed inputs there (benchmarks/results/ranking-v3-runs)")
    args = parser.parse_args()
    if args.command == "run":
        PRESET.update(PRESETS[args.preset])
        os.environ.setdefault("STEPSHOT_NO_PROGRESS", "1")
        for seed in args.seeds:
            run_seed(seed, args.workdir, args.threads)
        return 0
    from ranking_v3_report import write_report   # numpy/scipy/matplotlib only when analysing
    write_report(args.workdir, args.out)
    if args.keep:
        keep_inputs(args.workdir, args.keep)
    return 0


def keep_inputs(root: Path, dest: Path) -> None:
    """Copy what the analysis reads (archs files, predictions, start curves) to `dest`, a tree
    `analyze --workdir` reads the same way: the committed record of every finished seed."""
    for rel in ["reference-archs.json", "ranked-archs.json", *[str(p.relative_to(root)) for p in sorted(
            [*root.glob("s[0-9]*/start-*.json"), *root.glob("s[0-9]*/*/eval/step2-predictions.json"),
             *root.glob("s[0-9]*/wall-seconds.json")])]]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)


if __name__ == "__main__":
    sys.exit(main())
