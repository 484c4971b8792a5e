"""`stepshot train | snapshot | evaluate`: the trainer's CLI commands (registered by stepshot.cli)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from stepshot import correlate as corr, dataload
from stepshot.archsets import challenge_format, load_codes, stratified_archs
from stepshot.errors import StepshotError
from stepshot.local import checked_count, evaluation_split
from stepshot.plan import Plan, build_plan
from stepshot.spec import Spec, load_file
from stepshot.workdir import (EvaluationResult, Layout, SnapshotResult, evaluations_file, write_failure,
                              write_message)
from stepshot_trainer import checkpoint, data
from stepshot_trainer.evaluate import Evaluator, Router, load_stage_model, predict, predict_in_processes
from stepshot_trainer.provenance import provenance


def _common(parser: argparse.ArgumentParser, stage: bool) -> None:
    parser.add_argument("file", type=Path, help="SupernetTraining YAML")
    if stage:
        parser.add_argument("--stage", required=True, help="plan stage name (e.g. oneshot, g2, s4w0)")
    parser.add_argument("--workdir", required=True, type=Path, help="work directory (the PVC in a cluster)")


def _load(args: argparse.Namespace) -> tuple[Spec, Plan]:
    spec = load_file(args.file)
    return spec, build_plan(spec)


def _reported(func):
    """The error, whatever it is, becomes the pod's termination message, which the operator
    shows in the resource's status; `stepshot.cli` then prints it (a StepshotError: exit 2)."""
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Exception as exc:
            write_failure(f"stepshot: error: {exc}" if isinstance(exc, StepshotError) else
                          f"{type(exc).__name__}: {exc}")
            raise
    return wrapper


# --------------------------------------------------------------------------- train

def register_train(parser: argparse.ArgumentParser) -> None:
    _common(parser, stage=True)
    parser.set_defaults(func=_reported(_cmd_train))


def _cmd_train(args: argparse.Namespace) -> int:
    from stepshot_trainer.train import init_distributed, train_stage

    spec, plan = _load(args)
    stage = plan.stage(args.stage)
    if not stage.is_train:
        raise StepshotError(f"stage {stage.name!r} is not a training stage")
    d = init_distributed()
    try:
        selected = train_stage(spec, plan, stage, args.workdir, d)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if d.main:
        print(json.dumps({"stage": stage.name, **selected}))
    return 0


# --------------------------------------------------------------------------- snapshot

def register_snapshot(parser: argparse.ArgumentParser) -> None:
    _common(parser, stage=True)
    parser.set_defaults(func=_reported(_cmd_snapshot))


def _cmd_snapshot(args: argparse.Namespace) -> int:
    _, plan = _load(args)
    stage = plan.stage(args.stage)
    layout = Layout(args.workdir)
    if not layout.done(stage.name).exists():
        raise StepshotError(f"stage {stage.name!r} has not finished ({layout.done(stage.name)} is missing)")
    selected = layout.read_selected(stage.name)
    source = layout.checkpoints(stage.name) / selected["file"]
    checkpoint.snapshot(source, layout.snapshot(stage.name))  # verifies, or writes and hashes
    manifest = json.loads(layout.snapshot_manifest(stage.name).read_text())
    result = SnapshotResult(stage=stage.name, partition=stage.partition, epoch=selected["epoch"],
                            file=str(source.relative_to(layout.root)), sha256=manifest["sha256"],
                            kendall_tau=_finite(selected.get("kendall_tau")))
    message = result.message()
    write_message(message)
    print(message)
    return 0


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# --------------------------------------------------------------------------- evaluate

def register_evaluate(parser: argparse.ArgumentParser) -> None:
    _common(parser, stage=False)
    parser.add_argument("--archs", type=Path, help="architectures (challenge format or a JSON list of codes)")
    parser.add_argument("--out", type=Path, help="predictions file (default <workdir>/eval/predictions.json)")
    parser.add_argument("--stages", help="comma-separated stages to evaluate (default: the plan's leaves)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per process (default: OMP_NUM_THREADS, else 1 on CPUs, torch's "
                             "on a GPU); recorded with the results")
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="CPU only: split the architectures over N processes (default: the cores "
                             "divided by the threads); the same predictions, faster than threads")
    parser.set_defaults(func=_reported(_cmd_evaluate))


def _archs(spec: Spec, path: Path | None) -> dict[str, str]:
    """--archs, else evaluation.archs, else the ground truth's archs, else a stratified sample."""
    ev = spec.evaluation
    source = path or spec.resolve(ev.get("archs")) or spec.resolve(ev.get("ground_truth"))
    if source is not None:
        return load_codes(source)
    sample = challenge_format(stratified_archs(spec.search_space, ev.sample, seed=spec.training.seed))
    return {name: entry["arch"] for name, entry in sample.items()}


def _batches(spec: Spec, device: str, share: int = 1) -> tuple[data.FixedBatches, data.FixedBatches]:
    """The fixed calibration and test batches (lazy: nothing is read before the first pass);
    `share`: the evaluating processes sharing the host cache (no decode workers then: the
    processes are the split)."""
    ev = spec.evaluation
    budget = dataload.evaluation_cache_bytes(spec) // share    # streamed to the device batch by batch
    stream = {"device": torch.device(device), "workers": dataload.evaluation_workers(spec) if share == 1 else 0}
    calibration = data.calibration_batches(data.open_source(spec, "train"), ev.calibration_batches,
                                           ev.calibration_batch_size, seed=spec.training.seed,
                                           cache_bytes=budget, **stream)
    evalset = data.eval_subset(data.open_source(spec, "eval"), ev.eval_images, ev.batch_size, seed=0,
                               cache_bytes=budget - calibration.cached_bytes, **stream)  # the ground truth's subset
    return calibration, evalset


def build_evaluator(spec_file: Path, workdir: Path, stages: list[str], device: str, share: int = 1) -> Evaluator:
    """The stages' super-nets and the batches, as one evaluating process of `share` needs them."""
    spec = load_file(spec_file)
    plan = build_plan(spec)
    models = {s: load_stage_model(workdir, plan.stage(s).name, spec.search_space, device=device)[0].eval()
              for s in stages}
    return Evaluator(Router(models, plan.partitions), *_batches(spec, device, share))


def _split(args: argparse.Namespace, archs: int, cuda: bool) -> tuple[int, int | None]:
    """(processes, threads): one process on a GPU; on CPUs --processes or evaluation_split."""
    checked_count("--threads", args.threads)
    checked_count("--processes", args.processes)
    if cuda:
        return 1, args.threads
    processes, threads = evaluation_split(args.threads)
    return max(1, min(archs, args.processes or processes)), threads


def _cmd_evaluate(args: argparse.Namespace) -> int:
    spec, plan = _load(args)
    stages = args.stages.split(",") if args.stages else list(plan.leaves)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    archs = _archs(spec, args.archs)
    processes, threads = _split(args, len(archs), cuda)
    if threads is not None:
        torch.set_num_threads(threads)
    recipe = (args.file.resolve(), args.workdir.resolve(), stages, device)
    if processes > 1:
        preds, timing = predict_in_processes(build_evaluator, (*recipe, processes), archs, spec.space,
                                             processes, torch.get_num_threads(), log=True)
        calibration, evalset = _batches(spec, device)     # for the protocol: the same images
    else:
        evaluator = build_evaluator(*recipe)
        calibration, evalset = evaluator.calibration, evaluator.evalset
        preds, timing = predict(evaluator.router, archs, spec.search_space, calibration, evalset, log=True)
    out = args.out or args.workdir / "eval" / "predictions.json"
    checkpoint.write_json(out, preds)
    ev = spec.evaluation
    protocol = {"eval_images": evalset.images, "eval_seed": 0, "calibration_images": calibration.images,
                "calibration_batch_size": ev.calibration_batch_size, "calibration_seed": spec.training.seed,
                "bn_folded": True, "processes": processes, **provenance(torch.device(device))}
    report = _report(spec, out, stages, preds, timing, protocol)
    print(json.dumps({"predictions": str(out), **report["final"]}))
    return 0


def _report(spec: Spec, out: Path, stages: list[str], preds: dict, timing: dict, protocol: dict) -> dict:
    """Update the evaluation report beside `out` (one entry per predictions file) and the termination log."""
    truth_path = spec.resolve(spec.evaluation.get("ground_truth"))
    metrics = {"n": len(preds)}
    if truth_path is not None and not truth_path.exists():
        # Predictions stand on their own; a ground truth still being trained can come later.
        print(f"warning: ground truth {truth_path} not found: no correlation", file=sys.stderr)
    elif truth_path is not None:
        full = corr.correlate(corr.accuracies(preds), corr.load_accuracies(truth_path))
        metrics = {k: v for k, v in full.items() if k not in ("only_in_pred", "only_in_truth")}
        metrics["missing"] = {"only_in_pred": len(full["only_in_pred"]), "only_in_truth": len(full["only_in_truth"])}
    path = evaluations_file(out)
    report = json.loads(path.read_text()) if path.exists() else {"evaluations": {}}
    # protocol: how the numbers were made (images, calibration, threads, device); they depend on it
    report["evaluations"][out.stem] = {"stages": stages, "predictions": out.name, "timing": timing,
                                       "protocol": protocol, **metrics}
    result = EvaluationResult(n=metrics["n"], **{k: _finite(metrics.get(k))
                                                 for k in ("kendall_tau", "spearman", "pearson")})
    report["final"] = json.loads(result.message())   # the files keep the message's snake_case keys
    checkpoint.write_json(path, report)
    write_message(result.message())
    return report
