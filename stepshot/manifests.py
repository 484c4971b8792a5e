"""Pure manifest builders: (spec, plan stage, server capabilities) -> Kubernetes object dicts.

Torch-free core, no kopf, no kubernetes client: `stepshot render` prints exactly what these
return, and the operator creates exactly that (plus owner references from `kopf.adopt`).

Every pod runs the trainer image as a non-root user with a read-only root filesystem and
no service-account token: trainer pods have no API rights. What the operator needs back
from them (selected checkpoint, evaluation metrics) travels in the container termination
message, a file named by env STEPSHOT_TERMINATION_LOG.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from stepshot import sizing
from stepshot.commands import StageCommands
from stepshot.errors import StepshotError
from stepshot.kyaml import safe_yaml_documents
from stepshot.names import (config_map_name, job_name, label_value, merge_job_name, shard_job_name,
                            snapshot_name)
from stepshot.plan import Plan, Stage
from stepshot.quantity import cores_per_process
from stepshot.spec import API_VERSION, KIND, POD_SPEC_DIR, ROLES, Spec
from stepshot.workdir import TERMINATION_ENV, TERMINATION_LOG

LABEL_TRAINING = "stepshot.dev/training"
LABEL_STAGE = "stepshot.dev/stage"
LABEL_PARTITION = "stepshot.dev/partition"
LABEL_STEP = "stepshot.dev/step"
LABEL_COMPONENT = "stepshot.dev/component"    # train | snapshot | evaluate | merge
LABEL_JOB = "stepshot.dev/job"                # on pods: the Job they belong to (termination lookups)
ANNOTATION_SPEC_HASH = "stepshot.dev/spec-hash"
# On a Job the operator suspended itself (spec.suspend): the only Jobs it ever resumes. A Job
# suspended by anyone else (a queue manager such as Kueue) stays theirs to resume.
ANNOTATION_SUSPENDED_BY = "stepshot.dev/suspended-by"
SUSPENDED_BY_OPERATOR = "stepshot-operator"

# Beside the image's /opt/stepshot/benchmarks, so a spec's relative paths such as
# ../benchmarks/groundtruth/... resolve in pods exactly as they do in a checkout.
SPEC_DIR = POD_SPEC_DIR
SPEC_FILE = f"{SPEC_DIR}/spec.yaml"
MASTER_PORT = 29500
UID = 1000


# Volume types a resource may mount into its pods (spec.dataset.volume) without the operator's
# administrator allowing more: storage that cannot reach the node's files or the namespace's
# secrets. hostPath and secret need an explicit opt-in (chart value trainer.extraVolumeTypes).
SAFE_VOLUME_TYPES = frozenset({"persistentVolumeClaim", "nfs", "csi", "configMap", "emptyDir", "ephemeral"})


@dataclass(frozen=True)
class ClusterCaps:
    """What the API server serves and the operator allows; the operator discovers it, `render`
    assumes a current cluster."""

    version: tuple[int, int] = (1, 30)
    volume_snapshots: bool = False
    trainer_service_account: str | None = None  # the chart's API-less ServiceAccount for stage pods
    trainer_pull_secrets: tuple[str, ...] = ()   # imagePullSecrets of that account (chart value)
    volume_types: frozenset[str] = SAFE_VOLUME_TYPES
    allowed_images: str | None = None            # a regex every spec.image must match (chart value)

    @property
    def indexed_jobs(self) -> bool:  # completionMode: Indexed + the index annotation (beta 1.22)
        return self.version >= (1, 22)

    @property
    def job_suspend(self) -> bool:   # Job.spec.suspend (beta, on by default, 1.22)
        return self.version >= (1, 22)

    @property
    def pod_failure_policy(self) -> bool:  # beta, on by default, 1.26
        return self.version >= (1, 26)

    @property
    def pod_replacement_policy(self) -> bool:  # beta 1.29: no second pod per index while one terminates
        return self.version >= (1, 29)


@dataclass(frozen=True)
class Context:
    spec: Spec
    plan: Plan
    caps: ClusterCaps = ClusterCaps()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def namespace(self) -> str:
        return self.spec.namespace


def selector(resource: str) -> str:
    """Label selector of every child of a SupernetTraining."""
    return f"{LABEL_TRAINING}={label_value(resource)}"


def labels(ctx: Context, stage: Stage | None = None, component: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": "stepshot", "app.kubernetes.io/managed-by": "stepshot-operator",
           LABEL_TRAINING: label_value(ctx.name)}
    if stage is not None:
        out.update({LABEL_STAGE: label_value(stage.name), LABEL_PARTITION: label_value(stage.partition),
                    LABEL_STEP: str(stage.step)})
    if component:
        out[LABEL_COMPONENT] = component
    return out


def _meta(ctx: Context, name: str, lbl: dict[str, str]) -> dict:
    return {"name": name, "namespace": ctx.namespace, "labels": dict(lbl),
            "annotations": {ANNOTATION_SPEC_HASH: ctx.spec.spec_hash}}


# --------------------------------------------------------------------------- the spec ConfigMap

def spec_config_map(ctx: Context) -> dict:
    """The resource's (defaulted) spec as the YAML file every trainer pod reads."""
    doc = {"apiVersion": API_VERSION, "kind": KIND,
           "metadata": {"name": ctx.name, "namespace": ctx.namespace},
           "spec": ctx.spec.raw["spec"]}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(ctx, config_map_name(ctx.name), labels(ctx, component="spec")),
            "data": {"spec.yaml": yaml.safe_dump(doc, sort_keys=False)}}


def spec_from_config_map(config_map: Mapping | None) -> dict | None:
    """The spec a run started with, read back from its ConfigMap (None: absent or unreadable)."""
    try:
        docs = safe_yaml_documents(((config_map or {}).get("data") or {}).get("spec.yaml") or "")
    except yaml.YAMLError:
        return None
    doc = docs[0] if len(docs) == 1 else None
    spec = doc.get("spec") if isinstance(doc, dict) else None
    return spec if isinstance(spec, dict) else None


def cluster_errors(spec: Spec, caps: ClusterCaps) -> list[str]:
    """Why the operator refuses a valid spec on this cluster (empty: it accepts it): the one
    check the operator, `stepshot validate --cluster` and `stepshot render` run."""
    errors = [f"{key}: Required value: kubectl and the API server need it (apiVersion: {API_VERSION}, kind: {KIND})"
              for key in ("apiVersion", "kind") if not spec.raw.get(key)]
    if not spec.storage.get("claim_name"):
        errors.append("spec.storage.claimName: Required value: a cluster run needs a PersistentVolumeClaim "
                      "for checkpoints and snapshots")
    return errors + volume_errors(spec, caps) + image_errors(spec, caps)


def image_errors(spec: Spec, caps: ClusterCaps) -> list[str]:
    """Why spec.image may not run here (the operator's optional allow-list; empty: it may)."""
    if caps.allowed_images and not re.fullmatch(caps.allowed_images, spec.image):
        return [f"spec.image: Forbidden: {spec.image!r} does not match this operator's allowed images "
                f"({caps.allowed_images}; chart value trainer.allowedImages)"]
    return []


def volume_errors(spec: Spec, caps: ClusterCaps) -> list[str]:
    """Why spec.dataset.volume may not be mounted here (empty: it may)."""
    volume = spec.dataset.get("volume")
    if volume is None:
        return []
    kinds = sorted(set(volume.to_dict()) - {"name"})
    if len(kinds) != 1:
        return [f"spec.dataset.volume: Invalid value: {kinds}: exactly one volume source is required"]
    if kinds[0] not in caps.volume_types:
        return [f"spec.dataset.volume: Forbidden: volume type {kinds[0]} is not allowed by this operator "
                f"(allowed: {', '.join(sorted(caps.volume_types))}); its administrator can allow it with "
                f"the chart value trainer.extraVolumeTypes"]
    return []


# --------------------------------------------------------------------------- the trainer identity

def trainer_service_account(ctx: Context) -> dict | None:
    """The stage pods' ServiceAccount in the resource's namespace: bound to no role, no token.

    The chart creates it in the namespaces it knows; the operator ensures it wherever a
    resource appears (rbac.mode=cluster watches namespaces the chart never saw). It is shared
    by every resource of the namespace, so it is not owned by (and not deleted with) one."""
    name = ctx.caps.trainer_service_account
    if not name:
        return None
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ctx.namespace,
                         "labels": {"app.kubernetes.io/name": "stepshot",
                                    "app.kubernetes.io/managed-by": "stepshot-operator",
                                    "app.kubernetes.io/component": "trainer"}},
            "automountServiceAccountToken": False,
            **({"imagePullSecrets": [{"name": n} for n in ctx.caps.trainer_pull_secrets]}
               if ctx.caps.trainer_pull_secrets else {})}


# --------------------------------------------------------------------------- pod pieces

def _volumes(ctx: Context, shm_bytes: int | None) -> tuple[list[dict], list[dict]]:
    storage, dataset = ctx.spec.storage, ctx.spec.dataset
    work = ({"persistentVolumeClaim": {"claimName": storage.claim_name}}
            if storage.get("claim_name") else {"emptyDir": {}})  # render only; the operator requires a claim
    volumes = [{"name": "spec", "configMap": {"name": config_map_name(ctx.name)}},
               {"name": "workdir", **work},
               {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
              {"name": "workdir", "mountPath": storage.path},
              {"name": "tmp", "mountPath": "/tmp"}]
    if dataset.get("volume") is not None:
        volumes.append({"name": "dataset", **dataset.volume.to_dict()})
        mounts.append({"name": "dataset", "mountPath": dataset.path, "readOnly": True})
    if shm_bytes:  # DataLoader workers hand batches over through /dev/shm (and NCCL uses it)
        # A memory-backed emptyDir counts against the pod's memory limit: bounded, it cannot
        # take more than the loaders' prefetched batches.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": sizing.mebibytes(shm_bytes)}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _resources(cpu: str, memory: str, gpus: int) -> dict:
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(limits), "limits": limits}


_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                 "seccompProfile": {"type": "RuntimeDefault"}}


# --------------------------------------------------------------------------- scheduling (per role)

_POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName",
               "serviceAccountName", "imagePullSecrets")


def role_settings(spec: Spec, role: str) -> dict:
    """spec.scheduling for one role: the role's fields replace the shared ones; labels and
    annotations are merged, the role's winning per key."""
    shared = spec.scheduling.to_dict() if spec.get("scheduling") is not None else {}
    own = shared.pop(role, None) or {}
    for other in ROLES:
        shared.pop(other, None)
    merged = {**shared, **{k: v for k, v in own.items() if k not in ("labels", "annotations")}}
    for key in ("labels", "annotations"):
        merged[key] = {**(shared.get(key) or {}), **(own.get(key) or {})}
    return merged


def _threads(cpu: str, procs: int, workers: int = 0) -> list[dict]:
    # torch otherwise starts one thread per CPU of the node, not of the pod's share: on a
    # busy node that oversubscribes the CPU limit and training runs many times slower.
    # Decode workers (one thread each) take their cores out of the share.
    return [{"name": "OMP_NUM_THREADS", "value": str(max(1, cores_per_process(cpu, procs) - workers))}]


def _env(extra: list[dict] | None = None) -> list[dict]:
    base = [{"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": "/tmp"},  # root filesystem is read-only
            {"name": TERMINATION_ENV, "value": TERMINATION_LOG}]
    return base + (extra or [])


def _commands(ctx: Context) -> StageCommands:
    return StageCommands("python", SPEC_FILE, ctx.spec.storage.path)


def _metrics_ports(ctx: Context) -> list[dict]:
    """The trainer metrics port every stage pod (training, snapshot, evaluation) serves; the
    chart's PodMonitor selects it by name."""
    return [{"name": "metrics", "containerPort": ctx.spec.metrics_port}] if ctx.spec.metrics_port else []


def _container(ctx: Context, name: str, command: list[str], resources: dict, mounts: list[dict],
               env: list[dict] | None = None, ports: list[dict] | None = None) -> dict:
    container = {"name": name, "image": ctx.spec.image, "imagePullPolicy": ctx.spec.image_pull_policy,
                 "command": command, "env": _env(env), "resources": resources, "volumeMounts": mounts,
                 "securityContext": dict(_CONTAINER_SECURITY),
                 "terminationMessagePath": TERMINATION_LOG,
                 # A crash without a message still tells the operator why (the log tail).
                 "terminationMessagePolicy": "FallbackToLogsOnError"}
    if ports:
        container["ports"] = ports
    return container


def _pod_spec(containers: list[dict], volumes: list[dict], init: list[dict] | None = None,
              **extra: object) -> dict:
    spec = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "securityContext": dict(_POD_SECURITY), "containers": containers, "volumes": volumes}
    if init:
        spec["initContainers"] = init
    spec.update(extra)
    return spec


def _job(ctx: Context, role: str, name: str, lbl: dict[str, str], pod_spec: dict, **spec_extra: object) -> dict:
    """A stage Job: the role's scheduling settings (spec.scheduling) on the Job and its pods."""
    settings = role_settings(ctx.spec, role)
    # The operator's labels come last: a user label can never detach a child from its selectors.
    job_labels = {**settings["labels"], **lbl}
    pod_labels = {**job_labels, LABEL_JOB: name}
    pod_spec = dict(pod_spec)
    if ctx.caps.trainer_service_account:
        pod_spec["serviceAccountName"] = ctx.caps.trainer_service_account
    pod_spec.update({k: settings[k] for k in _POD_FIELDS if settings.get(k) not in (None, "", [], {})})
    pod_meta: dict = {"labels": pod_labels}
    if settings["annotations"]:
        pod_meta["annotations"] = dict(settings["annotations"])
    spec: dict = {"backoffLimit": ctx.spec.backoff_limit, **spec_extra,
                  "template": {"metadata": pod_meta, "spec": pod_spec}}
    if settings.get("activeDeadlineSeconds"):
        spec["activeDeadlineSeconds"] = settings["activeDeadlineSeconds"]
    if ctx.caps.pod_failure_policy:
        spec["podFailurePolicy"] = _pod_failure_policy(pod_spec)
    meta = _meta(ctx, name, job_labels)
    meta["annotations"].update(settings["annotations"])
    if ctx.caps.job_suspend:
        spec["suspend"] = bool(ctx.spec.suspend)
        if ctx.spec.suspend:
            meta["annotations"][ANNOTATION_SUSPENDED_BY] = SUSPENDED_BY_OPERATOR
    # No ttlSecondsAfterFinished: a vanished finished Job is indistinguishable from one never
    # created, and stage state is derived from the Jobs. Deleting the resource (or its own
    # TTL) removes them through owner references.
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def _pod_failure_policy(pod_spec: dict) -> dict:
    """Preemption, eviction and node drains (condition DisruptionTarget) do not count against
    backoffLimit: the trainer checkpoints on SIGTERM and the replacement pod resumes. A bad
    spec or input (`stepshot`'s StepshotError exit code) fails the Job at once instead of
    burning its retries."""
    rules: list[dict] = [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    for container in pod_spec["containers"]:
        # onPodConditions: [] is "not set" to the API server; the published OpenAPI marks it required.
        rules.append({"action": "FailJob", "onPodConditions": [],
                      "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [StepshotError.exit_code]}})
    return {"rules": rules}


# --------------------------------------------------------------------------- training stages

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
    return _container(ctx, "wait-for-master", ["python", "-c", script], _resources("100m", "128Mi", 0), [])


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
    volumes, mounts = _volumes(ctx, sizing.training_shm_bytes(ctx.spec))
    gpus = res.gpus_per_node
    command = _commands(ctx).train(stage.name, ("--standalone",) if stage.nodes == 1 else ())
    env = [{"name": "PET_NNODES", "value": str(stage.nodes)},
           {"name": "PET_NPROC_PER_NODE", "value": str(stage.procs_per_node)},
           *_threads(res.cpu, stage.procs_per_node, sizing.training_workers(ctx.spec))]
    ports = _metrics_ports(ctx)
    resources = _resources(res.cpu, res.memory, gpus)

    if stage.nodes == 1:
        container = _container(ctx, "trainer", command, resources, mounts, env, ports)
        return [_job(ctx, "training", base, lbl, _pod_spec([container], volumes))]

    # c10d rendezvous hosted by node 0's agent: when a worker fails, or a replacement pod
    # joins after a preemption, every agent restarts the worker group, which resumes from the
    # last checkpoint (up to spec.maxRestarts times before the pods fail).
    master = f"{base}-0.{base}"
    env += [{"name": "PET_RDZV_BACKEND", "value": "c10d"},
            {"name": "PET_RDZV_ENDPOINT", "value": f"{master}:{MASTER_PORT}"},
            {"name": "PET_RDZV_ID", "value": base},
            {"name": "PET_MAX_RESTARTS", "value": str(ctx.spec.max_restarts)}]
    ports = [{"name": "rendezvous", "containerPort": MASTER_PORT}] + ports
    init = _dns_wait(ctx, master)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(ctx, base, lbl),
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                        "selector": {k: lbl[k] for k in (LABEL_TRAINING, LABEL_STAGE, LABEL_COMPONENT)},
                        "ports": [{"name": "rendezvous", "port": MASTER_PORT}]}}

    if ctx.caps.indexed_jobs:
        container = _container(ctx, "trainer", command, resources, mounts, env, ports)
        extra: dict = {"completionMode": "Indexed", "completions": stage.nodes, "parallelism": stage.nodes}
        if ctx.caps.pod_replacement_policy:
            extra["podReplacementPolicy"] = "Failed"  # one pod per node in the rendezvous at a time
        return [service, _job(ctx, "training", base, lbl, _pod_spec([container], volumes, [init], subdomain=base),
                              **extra)]

    jobs = []
    for name in train_job_names(ctx, stage):
        container = _container(ctx, "trainer", command, resources, mounts, env, ports)
        pod = _pod_spec([container], volumes, [init], hostname=name, subdomain=base)
        jobs.append(_job(ctx, "training", name, lbl, pod))
    return [service, *jobs]


# --------------------------------------------------------------------------- snapshots

def snapshot_job(ctx: Context, stage: Stage) -> dict:
    """Freeze the stage's selected checkpoint: an immutable copy with a sha256 manifest.

    The container's termination message is that manifest (JSON), which the operator records
    as the stage's selected checkpoint.
    """
    volumes, mounts = _volumes(ctx, None)
    command = _commands(ctx).snapshot(stage.name)
    container = _container(ctx, "snapshot", command, _resources("500m", "1Gi", 0), mounts,
                           ports=_metrics_ports(ctx))   # bytes written
    return _job(ctx, "snapshot", snapshot_name(ctx.name, stage.name), labels(ctx, stage, "snapshot"),
                _pod_spec([container], volumes))


def wants_volume_snapshot(ctx: Context) -> bool:
    mode = ctx.spec.storage.snapshot
    return (mode in ("auto", "volumeSnapshot") and ctx.caps.volume_snapshots
            and bool(ctx.spec.storage.get("claim_name")))


def volume_snapshot(ctx: Context, stage: Stage) -> dict:
    """A CSI VolumeSnapshot of the work volume, taken once the stage's copy is written."""
    spec: dict = {"source": {"persistentVolumeClaimName": ctx.spec.storage.claim_name}}
    if ctx.spec.storage.get("volume_snapshot_class_name"):
        spec["volumeSnapshotClassName"] = ctx.spec.storage.volume_snapshot_class_name
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": _meta(ctx, snapshot_name(ctx.name, stage.name), labels(ctx, stage, "snapshot")),
            "spec": spec}


# --------------------------------------------------------------------------- evaluation

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
    volumes, mounts = _volumes(ctx, sizing.evaluation_shm_bytes(ctx.spec))
    processes = sizing.evaluation_processes(ctx.spec, gpus)
    # Several processes (no decode workers then) share the cores, one thread per core unless
    # memory held the processes below the cores; one process: the cores less its decode workers'.
    threads = _threads(res.cpu, processes) if processes > 1 else \
        _threads(res.cpu, 1, sizing.evaluation_workers(ctx.spec))
    resources = _resources(res.cpu, res.memory, gpus)
    lbl, pod_volumes = labels(ctx, stage, "evaluate"), volumes

    def job(name: str, shard: str | None, env: list[dict], **extra: object) -> dict:
        command = _commands(ctx).evaluate(processes, shard=shard, shards=ev.shards,
                                          checkpoint_every=ev.checkpoint_every)
        container = _container(ctx, "evaluate", command, resources, mounts, threads + env,
                               _metrics_ports(ctx))   # subnets evaluated
        return _job(ctx, "evaluation", name, lbl, _pod_spec([container], pod_volumes), **extra)

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
    volumes, mounts = _volumes(ctx, None)
    container = _container(ctx, "merge", _commands(ctx).merge(), _resources("500m", "1Gi", 0), mounts)
    return _job(ctx, "evaluation", merge_job_name(ctx.name, stage.name), labels(ctx, stage, "merge"),
                _pod_spec([container], volumes))


# --------------------------------------------------------------------------- all of it (render)

def stage_objects(ctx: Context, stage: Stage) -> list[dict]:
    """Every object the operator creates for a stage, in creation order."""
    if not stage.is_train:
        return eval_jobs(ctx, stage) + ([merge_job(ctx, stage)] if ctx.spec.evaluation.shards > 1 else [])
    objs = train_objects(ctx, stage) + [snapshot_job(ctx, stage)]
    if wants_volume_snapshot(ctx):
        objs.append(volume_snapshot(ctx, stage))
    return objs


def all_objects(ctx: Context) -> list[dict]:
    return [spec_config_map(ctx)] + [o for stage in ctx.plan.stages for o in stage_objects(ctx, stage)]
