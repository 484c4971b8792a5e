"""`stepshot train | snapshot | evaluate`: the trainer's CLI commands (registered by stepshot.cli)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from stepshot import correlate as corr, pool, sizing
from stepshot.archsets import challenge_format, load_codes, pool_entries, stratified_archs
from stepshot.errors import StepshotError
from stepshot.cpus import checked_count, evaluation_split
from stepshot.plan import EVAL, Plan, Stage, build_plan
from stepshot.preflight import check_inputs
from stepshot.space import parse_arch
from stepshot.spec import Spec, load_file
from stepshot.workdir import (EvaluationResult, Layout, ShardResult, SnapshotResult, evaluations_file, prediction_parts,
                              top_file, write_failure, write_message)
from stepshot_trainer import baselines, checkpoint, data
from stepshot_trainer.evaluate import (Evaluator, Router, load_stage_model, predict_spans,
                                       predict_spans_in_processes)
from stepshot_trainer.metrics import TrainerMetrics
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
    if stage == plan.stages[0]:     # every input of the run, before the rendezvous and any training
        check_inputs(spec, args.workdir)
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


def _role_metrics(spec: Spec, stage: Stage) -> TrainerMetrics:
    """The snapshot and evaluation pods serve their progress on the stage pods' metrics port
    (their manifests declare it, so the chart's PodMonitor scrapes them too)."""
    return TrainerMetrics(stage.name, stage.partition, spec.get("metrics_port"))


def _cmd_snapshot(args: argparse.Namespace) -> int:
    spec, plan = _load(args)
    stage = plan.stage(args.stage)
    layout = Layout(args.workdir)
    if not layout.done(stage.name).exists():
        raise StepshotError(f"stage {stage.name!r} has not finished ({layout.done(stage.name)} is missing)")
    selected = layout.read_selected(stage.name)
    source = layout.checkpoints(stage.name) / selected["file"]
    metrics = _role_metrics(spec, stage)
    try:  # verifies, or writes and hashes
        checkpoint.snapshot(source, layout.snapshot(stage.name), progress=lambda done, size: (
            metrics.set("stepshot_trainer_snapshot_size_bytes", size),
            metrics.set("stepshot_trainer_snapshot_written_bytes", done)))
    finally:
        metrics.close()
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
    parser.add_argument("--shard", type=int, default=0, metavar="I",
                        help="evaluate slice I (0-based) of --shards equal contiguous slices of the architectures")
    parser.add_argument("--shards", type=int, default=1, metavar="N",
                        help="slices of the architectures (default 1); with N > 1 a shard writes its parts only and "
                             "`--merge` writes the predictions once every shard is done")
    parser.add_argument("--checkpoint-every", type=int, default=32, metavar="K",
                        help="save the predictions every K architectures (default 32): a killed run resumes "
                             "there, whatever --shards the rerun has")
    parser.add_argument("--merge", action="store_true",
                        help="evaluate nothing: merge the finished parts into the predictions file and score it")
    parser.add_argument("--submission", type=Path,
                        help='also write the challenge submission {"archN": {"arch": CODE, "acc": ACC}} '
                             "(the pool's keys, order and codes; acc in percent)")
    parser.add_argument("--top", type=int, default=None, metavar="K",
                        help="also write the K best architectures with params and MACs (<predictions>-top.json)")
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
    budget = sizing.evaluation_cache_bytes(spec) // share    # streamed to the device batch by batch
    stream = {"device": torch.device(device), "workers": sizing.evaluation_workers(spec) if share == 1 else 0}
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


def _pool_context(spec: Spec, workdir: Path, stages: list[str]) -> dict:
    """What the predictions depend on besides the architectures (stepshot.pool.pool_key): the
    snapshots by hash and the evaluation settings; not the machine (recorded per part)."""
    layout, ev = Layout(workdir), spec.evaluation
    snapshots = {}
    for stage in stages:
        try:
            snapshots[stage] = json.loads(layout.snapshot_manifest(stage).read_text())["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            raise StepshotError(f"stage {stage!r} has no snapshot in {workdir}: {exc}") from exc
    dataset = {k: v for k, v in spec.dataset.to_dict().items() if k != "path"}   # mounted elsewhere per machine
    return {"snapshots": snapshots, "dataset": dataset, "seed": spec.training.seed,
            "evaluation": {k: ev.get(k) for k in ("calibration_batches", "calibration_batch_size",
                                                  "eval_images", "batch_size")}}


def _truth(spec: Spec) -> dict[str, float] | None:
    path = spec.resolve(spec.evaluation.get("ground_truth"))
    if path is not None and not path.exists():
        # Predictions stand on their own; a ground truth still being trained can come later.
        print(f"warning: ground truth {path} not found: no correlation", file=sys.stderr)
        return None
    return corr.load_accuracies(path) if path is not None else None


def _cmd_evaluate(args: argparse.Namespace) -> int:
    spec, plan = _load(args)
    for flag in ("--shards", "--checkpoint-every", "--top"):
        checked_count(flag, getattr(args, flag[2:].replace("-", "_")))
    stages = args.stages.split(",") if args.stages else list(plan.leaves)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    archs = _archs(spec, args.archs)
    for code in archs.values():   # every code checked before the first subnet; none kept
        parse_arch(code, spec.search_space)
    span = pool.shard_range(len(archs), args.shard, args.shards)
    out = args.out or args.workdir / "eval" / "predictions.json"
    parts = prediction_parts(out, pool.pool_key(archs, _pool_context(spec, args.workdir, stages)))
    timing = {"subnets": 0, "processes": 0}
    if not args.merge:
        timing = _evaluate_shard(args, spec, plan, archs, span, parts, stages, device, cuda)
    if args.shards > 1 and not args.merge:
        left = sum(len(r) for r in pool.missing(span, pool.finished_spans(parts)))
        print(json.dumps({"shard": args.shard, "shards": args.shards, "archs": [span.start, span.stop],
                          "done": len(span) - left, "parts": str(parts), "timing": timing}))
        write_message(_shard_result(spec, archs, span, args).message())   # the operator counts architectures
        return 0
    truth = _truth(spec)
    merge_pool = _pool(spec, args.archs, archs)
    merged = pool.merge(parts, merge_pool, out, spec.search_space,
                        truth_codes=set(truth or ()), submission=args.submission, top=args.top or 0,
                        top_file=top_file(out) if args.top else None)
    calibration, evalset = _batches(spec, device)     # lazy: for the protocol, the same images
    ev = spec.evaluation
    protocol = {"eval_images": evalset.images, "eval_seed": 0, "calibration_images": calibration.images,
                "calibration_batch_size": ev.calibration_batch_size, "calibration_seed": spec.training.seed,
                "bn_folded": True, **provenance(torch.device(device)),
                # a merge evaluates nothing: the parts' own threads and devices are under "made"
                **({"processes": timing["processes"]} if timing["processes"] else {})}
    free = _free_baselines(spec, out, merged, truth, parts, list(merge_pool))
    report = _report(out, stages, merged, truth, timing, protocol, parts, free)
    print(json.dumps({"predictions": str(out), **report["final"]}))
    return 0


def _shard_result(spec: Spec, archs: dict[str, str], span: range, args: argparse.Namespace) -> ShardResult:
    """This shard's slice, evaluated: its size and how many of it the ground truth scores."""
    truth = _truth(spec)
    codes = list(archs.values())[span.start:span.stop]
    scored = None if truth is None else sum(corr.normalize_code(c) in truth for c in codes)
    return ShardResult(shard=args.shard, shards=args.shards, pool=len(archs), archs=len(span), scored=scored)


def _pool(spec: Spec, path: Path | None, archs: dict[str, str]) -> dict[str, str]:
    """The pool's codes as written (a submission echoes them), else the codes evaluated."""
    source = path or spec.resolve(spec.evaluation.get("archs")) or spec.resolve(spec.evaluation.get("ground_truth"))
    return pool_entries(source) if source is not None else archs


def _evaluate_shard(args: argparse.Namespace, spec: Spec, plan: Plan, archs: dict[str, str], span: range,
                    parts: Path, stages: list[str], device: str, cuda: bool) -> dict:
    """Evaluate what no part of this shard's slice covers yet, a part every --checkpoint-every
    architectures; progress counts the slice, finished parts included."""
    todo = pool.missing(span, pool.finished_spans(parts))
    left = sum(len(r) for r in todo)
    processes, threads = _split(args, max(1, left), cuda)
    if threads is not None:
        torch.set_num_threads(threads)
    # Several processes take parts in turn: small enough that the last ones finish together.
    size = min(args.checkpoint_every, max(1, math.ceil(left / (4 * processes)))) if processes > 1 \
        else args.checkpoint_every
    spans = pool.chunks(todo, size)
    made = provenance(torch.device(device))   # where these parts were made: the merge reports every kind
    save = lambda s, preds, seconds: pool.write_part(parts, s, preds, seconds, made)  # noqa: E731
    recipe = (args.file.resolve(), args.workdir.resolve(), stages, device)
    metrics = _role_metrics(spec, plan.stage(EVAL))
    metrics.set("stepshot_trainer_evaluation_subnets", len(span))
    metrics.set("stepshot_trainer_evaluation_subnets_done", len(span) - left)
    progress = lambda done, _total: metrics.set("stepshot_trainer_evaluation_subnets_done",  # noqa: E731
                                                len(span) - left + done)
    try:
        if not spans:
            return {"subnets": 0, "processes": 0}
        if processes > 1:
            return predict_spans_in_processes(build_evaluator, (*recipe, processes), archs, spans, spec.search_space, save,
                                              processes, torch.get_num_threads(), log=True, progress=progress)
        return predict_spans(build_evaluator(*recipe), archs, spans, spec.search_space, save, log=True,
                             progress=progress)
    finally:
        metrics.close()


def _free_baselines(spec: Spec, out: Path, merged: pool.Merged, truth: dict[str, float] | None,
                    parts: Path, pool_names: list[str]) -> tuple[dict | None, dict | None]:
    """(each free baseline's metrics on the scored architectures, the prior-guided ranking):
    spec.evaluation.baselines and .prior. The prior-guided scores cover every evaluated
    architecture and go to <predictions>-prior.json, streamed from the `parts` of the pool
    `pool_names`."""
    ev = spec.evaluation
    names = list(ev.baselines) if truth is not None else []
    cache = out.parent / "baseline-scores.json"      # one computation per architecture, every stage
    scored = baselines.scored(baselines.scores(spec, merged.scored, names, cache), truth) if names else None
    if ev.prior.proxy == "none":
        return scored, None

    def prior(codes: list[str]) -> list[float]:
        scores = baselines.scores(spec, codes, [ev.prior.proxy], cache)[ev.prior.proxy]
        return [scores[c] for c in codes]
    guided_file = out.with_name(f"{out.stem}-prior.json")
    # Streamed from the parts: a few numbers per architecture, not the predictions file.
    ranks = pool.prior_guided(parts, pool_names, prior, ev.prior.weight, guided_file, keep=set(truth or ()))
    tau = corr.correlate(ranks, truth)["kendall_tau"] if truth is not None else None
    return scored, {"proxy": ev.prior.proxy, "weight": ev.prior.weight, "kendall_tau": tau,
                    "predictions": guided_file.name}


def _report(out: Path, stages: list[str], merged: pool.Merged, truth: dict[str, float] | None, timing: dict,
            protocol: dict, parts: Path, free: tuple[dict | None, dict | None] = (None, None)) -> dict:
    """Update the evaluation report beside `out` (one entry per predictions file) and the termination log;
    `free`: the free baselines' metrics and the prior-guided ranking (_free_baselines)."""
    metrics: dict = {"n": merged.evaluated}
    if truth is not None:
        full = corr.correlate(merged.scored, truth)
        metrics = {k: v for k, v in full.items() if k not in ("only_in_pred", "only_in_truth")}
        metrics["missing"] = {"only_in_pred": merged.evaluated - full["n"], "only_in_truth": len(full["only_in_truth"])}
    base, guided = free
    metrics.update({k: v for k, v in (("baselines", base), ("prior_guided", guided)) if v is not None})
    path = evaluations_file(out)
    report = json.loads(path.read_text()) if path.exists() else {"evaluations": {}}
    # protocol: how the numbers were made (images, calibration, threads, device); they depend on it.
    # timing: this invocation's evaluation; subnet_seconds: every part's, over shards and resumes.
    report["evaluations"][out.stem] = {
        "stages": stages, "predictions": out.name, "timing": timing, "protocol": protocol,
        "evaluated": merged.evaluated, "subnet_seconds": round(merged.subnet_seconds, 3), "made": merged.made,
        "parts": str(parts), **metrics}
    result = EvaluationResult(n=metrics["n"], **{k: _finite(metrics.get(k))
                                                 for k in ("kendall_tau", "spearman", "pearson")},
                              evaluated=merged.evaluated, scored=None if truth is None else metrics["n"],
                              baselines=None if base is None else {k: _finite(v["kendall_tau"]) for k, v in base.items()
                                                                   if _finite(v["kendall_tau"]) is not None},
                              prior_guided=None if guided is None else {
                                  "proxy": guided["proxy"], "weight": guided["weight"],
                                  "kendall_tau": _finite(guided["kendall_tau"])})
    report["final"] = json.loads(result.message())   # the files keep the message's snake_case keys
    checkpoint.write_json(path, report)
    write_message(result.message())
    return report
