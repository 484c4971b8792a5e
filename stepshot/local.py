"""`stepshot run`: the whole SupernetTraining schedule on this machine.

The same YAML the operator takes, the same plan, the same commands its Jobs run:
every training stage through `torchrun --standalone`, then its snapshot, then
evaluation. State lives only in the work directory (a stage is finished when
`<stage>/DONE` exists and its snapshot is in place), so rerunning the command
after Ctrl-C or a kill resumes the unfinished stage from its last checkpoint
and never reruns a finished one.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from stepshot import correlate as corr, scoreboard
from stepshot.commands import StageCommands
from stepshot.cpus import checked_count, evaluation_split, threads_per_process
from stepshot.errors import ChildReported, RunFailed, StepshotError
from stepshot.plan import Plan, Stage, build_plan
from stepshot.preflight import check_inputs
from stepshot.spec import Spec, load_file
from stepshot.workdir import Layout, evaluations_file


@dataclass
class StageResult:
    stage: str
    step: int
    status: str = "pending"           # done | skipped (finished earlier) | failed
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)


def commands(spec_file: Path, workdir: Path) -> StageCommands:
    return StageCommands(sys.executable, str(spec_file), str(workdir))


FORWARDED = (signal.SIGTERM, signal.SIGHUP)


def _run(cmd: list[str], threads: int) -> int:
    """Run a child in its own process group so Ctrl-C stops all torchrun workers, not half.

    SIGTERM and SIGHUP to `stepshot run` (a closed terminal, `kill`, a batch system's stop)
    go to the whole group too: the trainer checkpoints mid-epoch, every process exits, and
    the run stops with RunFailed; nothing is left behind."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        os.killpg(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        _stop(proc, signal.SIGINT)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise RunFailed(f"stopped by {signal.Signals(received[0]).name} (the stage saved its progress); "
                        f"rerun the same command to resume")
    return rc


def _stop(proc: subprocess.Popen, signum: int) -> None:
    os.killpg(proc.pid, signum)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_stage(spec_file: Path, stage: Stage, workdir: Path, threads: int | None = None,
              cores: int | None = None) -> int:
    cmds = commands(spec_file, workdir)
    launcher = ("--standalone", "--nnodes", "1", "--nproc-per-node", str(stage.procs_per_node))
    rc = _run(cmds.train(stage.name, launcher), threads_per_process(threads, stage.procs_per_node, cores))
    if rc == 0:
        rc = _run(cmds.snapshot(stage.name), threads_per_process(threads, cores=cores))
    return rc


def evaluate_step(spec_file: Path, spec: Spec, leaves: tuple[str, ...], workdir: Path, tag: str,
                  threads: int | None = None, cores: int | None = None) -> dict:
    out = Layout(workdir).predictions(tag)
    if not out.exists():
        processes, each = evaluation_split(threads, cores)
        cmds, ev = commands(spec_file, workdir), spec.evaluation
        # The spec's shards one after another, then their merge: the cluster's slices and files.
        # Each saves its parts as it goes, so a rerun resumes where the evaluation stopped.
        runs = [cmds.evaluate(processes, each, leaves, str(out), shard=str(i), shards=ev.shards,
                              checkpoint_every=ev.checkpoint_every) for i in range(ev.shards)]
        if ev.shards > 1:
            runs.append(cmds.merge(leaves, str(out)))
        for cmd in runs:
            rc = _run(cmd, each)
            if rc == StepshotError.exit_code:
                raise ChildReported(rc)
            if rc != 0:
                raise RunFailed(f"evaluation of {tag} failed (exit {rc}); rerun the same command to resume")
    protocol = evaluation_protocol(out)
    truth = spec.resolve(spec.evaluation.get("ground_truth"))
    if truth is None or not truth.exists():
        if truth is not None:
            print(f"warning: ground truth {truth} not found: predictions only", file=sys.stderr)
        return {"predictions": str(out), **protocol}
    metrics = corr.correlate(corr.load_accuracies(out), corr.load_accuracies(truth))
    return {"predictions": str(out), **{k: metrics[k] for k in ("n", "kendall_tau", "spearman", "pearson")},
            "ci95": scoreboard.tau_interval(out, truth), **scoreboard.free_rows(out), **protocol}


def evaluation_protocol(predictions: Path) -> dict:
    """The evaluation's protocol entry from its report (images, calibration, threads, device)."""
    try:
        entry = json.loads(evaluations_file(predictions).read_text())["evaluations"][predictions.stem]
        return {"protocol": entry["protocol"]}
    except (OSError, ValueError, KeyError):
        return {}  # predictions from before protocols were recorded


def _eval_points(spec: Spec, plan: Plan) -> dict[int, tuple[str, ...]]:
    """Steps after which to evaluate -> the leaves that represent the super-net there."""
    train_steps = [s for s in plan.steps if s[0].is_train]
    if spec.evaluation.every_stage:
        return {step[0].step: tuple(s.name for s in step) for step in train_steps}
    return {train_steps[-1][0].step: plan.leaves}


def run(spec_file: Path, workdir: Path, threads: int | None = None, cores: int | None = None) -> list[StageResult]:
    """Train and evaluate every stage not finished yet; `threads` per process, on `cores` (default all)."""
    spec = load_file(spec_file)
    plan = build_plan(spec)
    check_inputs(spec, workdir, "--workdir")   # before anything starts: a bad input is one line, exit 2
    evals = _eval_points(spec, plan)
    results: list[StageResult] = []
    train_total = len(plan.train_stages)
    done_count = 0
    for step in plan.steps:
        if not step[0].is_train:
            continue
        for stage in step:
            done_count += 1
            result = StageResult(stage.name, stage.step)
            results.append(result)
            if Layout(workdir).stage_finished(stage.name):
                result.status = "skipped"
                print(f"[{done_count}/{train_total}] {stage.name}: finished earlier, not rerun", flush=True)
                continue
            print(f"[{done_count}/{train_total}] {stage.name}: training "
                  f"({stage.epochs} epochs, lr {stage.lr:g}, from {stage.parent or 'scratch'})", flush=True)
            start = time.monotonic()
            rc = run_stage(spec_file, stage, workdir, threads, cores)
            result.seconds = time.monotonic() - start
            if rc != 0:
                result.status = "failed"
                if rc == StepshotError.exit_code:    # bad input, said by the stage's process
                    raise ChildReported(rc)
                raise RunFailed(f"stage {stage.name} failed (exit {rc}); rerun the same command to resume")
            result.status = "done"
        leaves = evals.get(step[0].step)
        if leaves:
            print(f"evaluating after step {step[0].step} ({', '.join(leaves)})", flush=True)
            metrics = evaluate_step(spec_file, spec, leaves, workdir, f"step{step[0].step}", threads, cores)
            for r in results:
                if r.step == step[0].step:
                    r.metrics = metrics
    return results


def stage_table(results: list[StageResult]) -> str:
    head = (f"{'stage':<16} {'step':>4} {'status':<8} {'time':>8} {'n':>4} {'kendall':>8} {'95% interval':>16} "
            f"{'spearman':>8} {'pearson':>8}")
    rows = [head, "-" * len(head)]
    for r in results:
        m = r.metrics
        fmt = (lambda k: f"{m[k]:>8.3f}" if isinstance(m.get(k), (int, float)) else f"{'-':>8}")
        ci = f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if m.get("ci95") else "-"
        rows.append(f"{r.stage:<16} {r.step:>4} {r.status:<8} {r.seconds:>7.0f}s {m.get('n', '-'):>4} "
                    f"{fmt('kendall_tau')} {ci:>16} {fmt('spearman')} {fmt('pearson')}")
    return "\n".join(rows)


def write_report(spec: Spec, results: list[StageResult], workdir: Path) -> dict:
    final = next((r.metrics for r in reversed(results) if r.metrics), {})
    truth = spec.resolve(spec.evaluation.get("ground_truth"))
    known = truth is not None and truth.exists()
    report = {
        "name": spec.name, "space": spec.space, "mode": spec.few_shot.mode, "spec_hash": spec.spec_hash,
        "stages": [r.__dict__ for r in results], "final": final,
        "ceiling_kendall_tau": scoreboard.ceiling(truth) if known else None,
    }
    Layout(workdir).run_report().write_text(json.dumps(report, indent=2))
    if known and final.get("predictions"):
        from stepshot.plot import ranking_plot  # matplotlib only when there is something to draw

        ranking_plot(results, Path(final["predictions"]), truth, workdir / "ranking.png",
                     final.get("baselines", {}), report["ceiling_kendall_tau"])
    return report


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="SupernetTraining YAML (the same one kubectl applies)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory (default: runs/<metadata.name>)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per process (default: OMP_NUM_THREADS, else the cores shared "
                             "among a stage's processes; evaluation: 1 per process, one process per core)")
    parser.add_argument("--cores", type=int, default=None, metavar="N",
                        help="CPU cores this run may use (default: all); share them when running several")
    parser.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    checked_count("--threads", args.threads)
    checked_count("--cores", args.cores)
    spec = load_file(args.file)
    workdir = (args.workdir or Path("runs") / spec.name).resolve()
    try:
        results = run(args.file.resolve(), workdir, args.threads, args.cores)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    report = write_report(spec, results, workdir)
    print()
    print(stage_table(results))
    board = scoreboard.lines(report["final"], report["ceiling_kendall_tau"])
    if board:
        print("\n" + "\n".join(board))
    print(f"\nreport: {Layout(workdir).run_report()}")
    if (workdir / "ranking.png").exists():
        print(f"plot:   {workdir / 'ranking.png'}")
    return 0
