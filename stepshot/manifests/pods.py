"""Pod pieces every stage Job is built from: volumes and mounts, resources, the environment,
the container and the pod spec, all non-root with a read-only root filesystem and no
service-account token."""
from __future__ import annotations

from stepshot import sizing
from stepshot.commands import StageCommands
from stepshot.manifests.context import SPEC_DIR, SPEC_FILE, UID, Context
from stepshot.names import config_map_name
from stepshot.quantity import cores_per_process
from stepshot.spec import scheduling
from stepshot.spec.rules import DATA_VOLUME
from stepshot.workdir import TERMINATION_ENV, TERMINATION_LOG

_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                 "seccompProfile": {"type": "RuntimeDefault"}}


def volumes(ctx: Context, shm_bytes: int | None) -> tuple[list[dict], list[dict]]:
    """The pod's volumes and the container's mounts: spec, work directory, /tmp, the dataset
    volume if any, and a bounded /dev/shm when `shm_bytes` is set."""
    storage, dataset = ctx.spec.storage, ctx.spec.dataset
    work = ({"persistentVolumeClaim": {"claimName": storage.claim_name}}
            if storage.get("claim_name") else {"emptyDir": {}})  # render only; the operator requires a claim
    vols = [{"name": "spec", "configMap": {"name": config_map_name(ctx.name)}},
            {"name": "workdir", **work},
            {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
              {"name": "workdir", "mountPath": storage.path},
              {"name": "tmp", "mountPath": "/tmp"}]
    if dataset.get("volume") is not None:
        vols.append({**dataset.volume.to_dict(), "name": DATA_VOLUME})   # the rules refuse a user's name
        mounts.append({"name": DATA_VOLUME, "mountPath": dataset.path, "readOnly": True})
    if shm_bytes:  # DataLoader workers hand batches over through /dev/shm (and NCCL uses it)
        # A memory-backed emptyDir counts against the pod's memory limit: bounded, it cannot
        # take more than the loaders' prefetched batches.
        vols.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": sizing.mebibytes(shm_bytes)}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return vols, mounts


def resources(cpu: str, memory: str, gpus: int) -> dict:
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits[scheduling.DEFAULT_GPU_RESOURCE] = str(gpus)   # the role's gpuResource: with_settings
    return {"requests": dict(limits), "limits": limits}


def threads(cpu: str, procs: int, workers: int = 0) -> list[dict]:
    # torch otherwise starts one thread per CPU of the node, not of the pod's share: on a
    # busy node that oversubscribes the CPU limit and training runs many times slower.
    # Decode workers (one thread each) take their cores out of the share.
    return [{"name": "OMP_NUM_THREADS", "value": str(max(1, cores_per_process(cpu, procs) - workers))}]


def _env(extra: list[dict] | None = None) -> list[dict]:
    base = [{"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": "/tmp"},  # root filesystem is read-only
            {"name": TERMINATION_ENV, "value": TERMINATION_LOG}]
    return base + (extra or [])


def commands(ctx: Context) -> StageCommands:
    """The stage command lines as a pod runs them (the spec from its ConfigMap mount)."""
    return StageCommands("python", SPEC_FILE, ctx.spec.storage.path)


def metrics_ports(ctx: Context) -> list[dict]:
    """The trainer metrics port every stage pod (training, snapshot, evaluation) serves; the
    chart's PodMonitor selects it by name."""
    return [{"name": "metrics", "containerPort": ctx.spec.metrics_port}] if ctx.spec.metrics_port else []


def container(ctx: Context, name: str, command: list[str], resources: dict, mounts: list[dict],
              env: list[dict] | None = None, ports: list[dict] | None = None) -> dict:
    out = {"name": name, "image": ctx.spec.image, "imagePullPolicy": ctx.spec.image_pull_policy,
           "command": command, "env": _env(env), "resources": resources, "volumeMounts": mounts,
           "securityContext": dict(_CONTAINER_SECURITY),
           "terminationMessagePath": TERMINATION_LOG,
           # A crash without a message still tells the operator why (the log tail).
           "terminationMessagePolicy": "FallbackToLogsOnError"}
    if ports:
        out["ports"] = ports
    return out


def with_settings(out: dict, settings: dict) -> dict:
    """A stage container with its role's pod settings (stepshot.spec.scheduling.effective): extra
    env after the operator's (the rules refuse the names it sets), its GPUs requested as the
    role's gpuResource, extended resources (requests = limits, as Kubernetes requires of them),
    and the capabilities the operator's administrator allows (cluster_errors)."""
    out = dict(out, env=out["env"] + [dict(var) for var in settings.get("env") or []])
    limits = dict(out["resources"]["limits"])
    gpus = limits.pop(scheduling.DEFAULT_GPU_RESOURCE, None)
    gpu = scheduling.gpu_resource(settings)
    # The GPU count comes from the spec's resources, never from an extra resource of that name.
    limits.update({k: v for k, v in (settings.get("extraResources") or {}).items() if k != gpu})
    if gpus:
        limits[gpu] = gpus
    out["resources"] = {"requests": dict(limits), "limits": limits}
    if settings.get("capabilities"):
        caps = sorted({scheduling.capability(c) for c in settings["capabilities"]})
        out["securityContext"] = {**out["securityContext"], "capabilities": {"drop": ["ALL"], "add": caps}}
    return out


def pod_spec(containers: list[dict], volumes: list[dict], init: list[dict] | None = None,
             **extra: object) -> dict:
    spec = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "securityContext": dict(_POD_SECURITY), "containers": containers, "volumes": volumes}
    if init:
        spec["initContainers"] = init
    spec.update(extra)
    return spec
