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

from stepshot import correlate as corr
from stepshot.errors import RunFailed, StepshotError
from stepshot.plan import Plan, Stage, build_plan
from stepshot.spec import Spec, load_file
from stepshot.workdir import Layout, evaluations_file


@dataclass
class StageResult:
    stage: str
    step: int
    status: str = "pending"           # done | skipped (finished earlier) | failed
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)


def _python_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stepshot.cli", *args]


def train_command(spec_file: Path, stage: Stage, workdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", str(stage.procs_per_node),
        "-m", "stepshot.cli", "train", str(spec_file), "--stage", stage.name, "--workdir", str(workdir),
    ]


FORWARDED = (signal.SIGTERM, signal.SIGHUP)


def threads_per_process(threads: int | None, procs: int = 1, cores: int | None = None) -> int:
    """--threads, else OMP_NUM_THREADS, else the cores shared among the processes.

    Always set for the children: results depend on it, and torch's default (every core in
    every process) oversubscribes a busy machine (two threads on a loaded 2-core machine
    evaluated ~20x slower than one). `cores`: this run's share of the machine (default all)."""
    if threads:
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, (cores or os.cpu_count() or 1) // max(1, procs))


def evaluation_split(threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """(processes, threads each) for evaluating architectures on CPUs: --threads, else
    OMP_NUM_THREADS, else 1 thread per process, and as many processes as the cores hold.

    Architectures are independent, so splitting them over processes gives the same numbers
    (at equal threads) and is faster than threads in one process: on the 2-core machine 2
    processes x 1 thread evaluated 0.97 subnets/s, 1 process x 2 threads 0.62, 1 x 1 0.46
    (64 subnets of a grouped snapshot, 10,000 test images and 16 x 256 calibration each)."""
    cores = cores or os.cpu_count() or 1
    each = threads_per_process(threads, procs=cores, cores=cores)
    return max(1, cores // each), each


def checked_count(flag: str, value: int | None) -> int | None:
    """A count option (--threads, --cores, --processes) as given (None: not given); below 1
    is the user's error."""
    if value is not None and value < 1:
        raise StepshotError(f"{flag} must be at least 1, got {value}")
    return value


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
    rc = _run(train_command(spec_file, stage, workdir), threads_per_process(threads, stage.procs_per_node, cores))
    if rc == 0:
        rc = _run(_python_cli("snapshot", str(spec_file), "--stage", stage.name, "--workdir", str(workdir)),
                  threads_per_process(threads, cores=cores))
    return rc


def evaluate_step(spec_file: Path, spec: Spec, leaves: tuple[str, ...], workdir: Path, tag: str,
                  threads: int | None = None, cores: int | None = None) -> dict:
    out = Layout(workdir).predictions(tag)
    if not out.exists():
        processes, each = evaluation_split(threads, cores)
        rc = _run(_python_cli("evaluate", str(spec_file), "--workdir", str(workdir), "--stages", ",".join(leaves),
                              "--out", str(out), "--threads", str(each), "--processes", str(processes)), each)
        if rc != 0:
            raise RunFailed(f"evaluation of {tag} failed (exit {rc})")
    protocol = evaluation_protocol(out)
    truth = spec.resolve(spec.evaluation.get("ground_truth"))
    if truth is None or not truth.exists():
        if truth is not None:
            print(f"warning: ground truth {truth} not found: predictions only", file=sys.stderr)
        return {"predictions": str(out), **protocol}
    metrics = corr.correlate(corr.load_accuracies(out), corr.load_accuracies(truth))
    return {"predictions": str(out), **{k: metrics[k] for k in ("n", "kendall_tau", "spearman", "pearson")},
            **protocol}


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
    workdir.mkdir(parents=True, exist_ok=True)
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
    head = f"{'stage':<16} {'step':>4} {'status':<8} {'time':>8} {'n':>4} {'kendall':>8} {'spearman':>8} {'pearson':>8}"
    rows = [head, "-" * len(head)]
    for r in results:
        m = r.metrics
        fmt = (lambda k: f"{m[k]:>8.3f}" if isinstance(m.get(k), (int, float)) else f"{'-':>8}")
        rows.append(f"{r.stage:<16} {r.step:>4} {r.status:<8} {r.seconds:>7.0f}s {m.get('n', '-'):>4} "
                    f"{fmt('kendall_tau')} {fmt('spearman')} {fmt('pearson')}")
    return "\n".join(rows)


def write_report(spec: Spec, results: list[StageResult], workdir: Path) -> dict:
    final = next((r.metrics for r in reversed(results) if r.metrics), {})
    report = {
        "name": spec.name, "space": spec.space, "mode": spec.few_shot.mode, "spec_hash": spec.spec_hash,
        "stages": [r.__dict__ for r in results], "final": final,
    }
    Layout(workdir).run_report().write_text(json.dumps(report, indent=2))
    truth = spec.resolve(spec.evaluation.get("ground_truth"))
    if truth is not None and truth.exists() and final.get("predictions"):
        from stepshot.plot import ranking_plot  # matplotlib only when there is something to draw

        ranking_plot(results, Path(final["predictions"]), truth, workdir / "ranking.png")
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
    write_report(spec, results, workdir)
    print()
    print(stage_table(results))
    print(f"\nreport: {Layout(workdir).run_report()}")
    if (workdir / "ranking.png").exists():
        print(f"plot:   {workdir / 'ranking.png'}")
    return 0
