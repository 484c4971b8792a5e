"""The objects of the evaluation stage: the (sharded) evaluation Job(s) and the merge Job."""
from __future__ import annotations

from stepshot import sizing
from stepshot.manifests import pods
from stepshot.manifests.context import Context, labels
from stepshot.manifests.jobs import stage_job
from stepshot.names import job_name, merge_job_name, shard_job_name
from stepshot.plan import Stage

SHARD_ENV = "STEPSHOT_SHARD"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def eval_job_names(ctx: Context, stage: Stage) -> list[str]:
    """The Jobs that evaluate: one (an Indexed Job of `shards` completions where served), or one
    per shard on servers without Indexed Jobs. Above one shard, `merge_job` follows them."""
    shards = ctx.spec.evaluation.shards
    if shards > 1 and not ctx.caps.indexed_jobs:
        return [shard_job_name(ctx.name, stage.name, i) for i in range(shards)]
    return [job_name(ctx.name, stage.name)]


def eval_jobs(ctx: Context, stage: Stage) -> list[dict]:
    """Rank the architectures with the leaves' snapshots.

    One shard: one Job that evaluates and merges; its termination message is the metrics JSON.
    N shards: each pod evaluates its slice (`--shard I --shards N`), saving parts as it goes, so
    a preempted pod's replacement resumes; an Indexed Job runs at most evaluation.maxParallel
    at once (the pod's index is its shard), or the operator creates the per-shard Jobs that many
    at a time. The merge Job (`merge_job`) then writes the predictions and the metrics."""
    ev = ctx.spec.evaluation
    res = ev.resources
    gpus = res.gpus if res.get("gpus") is not None else min(ctx.spec.resources.gpus_per_node, 1)
    volumes, mounts = pods.volumes(ctx, sizing.evaluation_shm_bytes(ctx.spec))
    processes = sizing.evaluation_processes(ctx.spec, gpus)
    # Several processes (no decode workers then) share the cores, one thread per core unless
    # memory held the processes below the cores; one process: the cores less its decode workers'.
    threads = pods.threads(res.cpu, processes) if processes > 1 else \
        pods.threads(res.cpu, 1, sizing.evaluation_workers(ctx.spec))
    resources = pods.resources(res.cpu, res.memory, gpus)
    lbl = labels(ctx, stage, "evaluate")

    def job(name: str, shard: str | None, env: list[dict], **extra: object) -> dict:
        command = pods.commands(ctx).evaluate(processes, shard=shard, shards=ev.shards,
                                              checkpoint_every=ev.checkpoint_every)
        container = pods.container(ctx, "evaluate", command, resources, mounts, threads + env,
                                   pods.metrics_ports(ctx))   # subnets evaluated
        return stage_job(ctx, "evaluation", name, lbl, pods.pod_spec([container], volumes), **extra)

    if ev.shards == 1:
        return [job(job_name(ctx.name, stage.name), None, [])]
    if ctx.caps.indexed_jobs:
        index = [{"name": SHARD_ENV, "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}}]
        return [job(job_name(ctx.name, stage.name), f"$({SHARD_ENV})", index, completionMode="Indexed",
                    completions=ev.shards, parallelism=min(ev.max_parallel, ev.shards))]
    return [job(name, str(i), []) for i, name in enumerate(eval_job_names(ctx, stage))]


def merge_job(ctx: Context, stage: Stage) -> dict:
    """Merge the shards' parts into one predictions file (streamed: small and CPU-only) and
    score it; the metrics JSON is its termination message."""
    volumes, mounts = pods.volumes(ctx, None)
    container = pods.container(ctx, "merge", pods.commands(ctx).merge(), pods.resources("500m", "1Gi", 0), mounts)
    return stage_job(ctx, "evaluation", merge_job_name(ctx.name, stage.name), labels(ctx, stage, "merge"),
                     pods.pod_spec([container], volumes))
