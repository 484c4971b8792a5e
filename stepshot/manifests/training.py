"""The objects of a training stage: its Job(s) and, across nodes, the headless Service of the
rendezvous."""
from __future__ import annotations

from stepshot import sizing
from stepshot.manifests import pods
from stepshot.manifests.context import LABEL_COMPONENT, LABEL_STAGE, LABEL_TRAINING, Context, labels, meta
from stepshot.manifests.jobs import stage_job
from stepshot.names import job_name
from stepshot.plan import Stage
from stepshot.spec.rules import RENDEZVOUS_PORT

MASTER_PORT = RENDEZVOUS_PORT   # the rules refuse a spec.metricsPort on it


def train_job_names(ctx: Context, stage: Stage) -> list[str]:
    """The Jobs that run a training stage: one, or one per node where Indexed Jobs are missing."""
    base = job_name(ctx.name, stage.name)
    if stage.nodes > 1 and not ctx.caps.indexed_jobs:
        return [f"{base}-{rank}" for rank in range(stage.nodes)]
    return [base]


def _dns_wait(ctx: Context, master: str) -> dict:
    """Init container: wait until the master's headless-Service record resolves (pytorch#73682)."""
    script = ("import socket,sys,time\n"
              "for _ in range(600):\n"
              "    try:\n"
              f"        socket.getaddrinfo({master!r}, {MASTER_PORT}); sys.exit(0)\n"
              "    except OSError:\n"
              "        time.sleep(1)\n"
              f"sys.exit('no DNS record for {master} after 600 s')\n")
    return pods.container(ctx, "wait-for-master", ["python", "-c", script], pods.resources("100m", "128Mi", 0), [])


def train_objects(ctx: Context, stage: Stage) -> list[dict]:
    """Headless Service (multi-node) and the Job(s) of one training stage.

    nodes == 1: one plain Job, `torchrun --standalone`.
    nodes > 1, Indexed Jobs served: one Indexed Job, completions = parallelism = nodes, pod
      hostname `<job>-<index>` under the headless Service `<job>`.
    nodes > 1, no Indexed Jobs (< 1.22): one single-pod Job per node `<job>-<rank>`, whose pod
      sets hostname `<job>-<rank>` and the same subdomain. Node ranks come from the rendezvous. The
      DNS names, and so the rendezvous endpoint, are the same in both layouts.
    """
    res = ctx.spec.resources
    base = job_name(ctx.name, stage.name)
    lbl = labels(ctx, stage, "train")
    volumes, mounts = pods.volumes(ctx, sizing.training_shm_bytes(ctx.spec))
    gpus = res.gpus_per_node
    command = pods.commands(ctx).train(stage.name, ("--standalone",) if stage.nodes == 1 else ())
    env = [{"name": "PET_NNODES", "value": str(stage.nodes)},
           {"name": "PET_NPROC_PER_NODE", "value": str(stage.procs_per_node)},
           *pods.threads(res.cpu, stage.procs_per_node, sizing.training_workers(ctx.spec))]
    ports = pods.metrics_ports(ctx)
    resources = pods.resources(res.cpu, res.memory, gpus)

    if stage.nodes == 1:
        container = pods.container(ctx, "trainer", command, resources, mounts, env, ports)
        return [stage_job(ctx, "training", base, lbl, pods.pod_spec([container], volumes))]

    # c10d rendezvous hosted by node 0's agent: when a worker fails, or a replacement pod
    # joins after a preemption, every agent restarts the worker group, which resumes from the
    # last checkpoint (up to spec.maxRestarts times before the pods fail).
    master = f"{base}-0.{base}"
    env += [{"name": "PET_RDZV_BACKEND", "value": "c10d"},
            {"name": "PET_RDZV_ENDPOINT", "value": f"{master}:{MASTER_PORT}"},
            {"name": "PET_RDZV_ID", "value": base},
            {"name": "PET_MAX_RESTARTS", "value": str(ctx.spec.max_restarts)},
            # Each round's rank 0 publishes its address afresh. With the agent's store shared
            # (torch's default), a surviving rank 0 reuses the first round's and never writes the
            # new round's key, so a replacement pod waits for it until both agents time out
            # (torch 2.13; benchmarks/group_restart_check.sh shows both cases).
            {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"}]
    ports = [{"name": "rendezvous", "containerPort": MASTER_PORT}] + ports
    init = _dns_wait(ctx, master)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta(ctx, base, lbl),
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                        "selector": {k: lbl[k] for k in (LABEL_TRAINING, LABEL_STAGE, LABEL_COMPONENT)},
                        "ports": [{"name": "rendezvous", "port": MASTER_PORT}]}}

    if ctx.caps.indexed_jobs:
        container = pods.container(ctx, "trainer", command, resources, mounts, env, ports)
        extra: dict = {"completionMode": "Indexed", "completions": stage.nodes, "parallelism": stage.nodes}
        if ctx.caps.pod_replacement_policy:
            extra["podReplacementPolicy"] = "Failed"  # one pod per node in the rendezvous at a time
        return [service, stage_job(ctx, "training", base, lbl,
                                   pods.pod_spec([container], volumes, [init], subdomain=base), **extra)]

    jobs = []
    for name in train_job_names(ctx, stage):
        container = pods.container(ctx, "trainer", command, resources, mounts, env, ports)
        pod = pods.pod_spec([container], volumes, [init], hostname=name, subdomain=base)
        jobs.append(stage_job(ctx, "training", name, lbl, pod))
    return [service, *jobs]
