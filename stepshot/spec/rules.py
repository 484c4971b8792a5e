"""Cross-field rules of the spec: what the 1.20-era API server cannot express. The local
runner applies them in `validate()`; the operator marks a resource that breaks them Failed
with reason InvalidSpec."""
from __future__ import annotations

import json
import posixpath
import re
from typing import Iterator

from stepshot.quantity import cores_per_process, parse_quantity
from stepshot.space import get_space
from stepshot.split_modes import MODES
from stepshot.spec.limits import quantities, quantity_errors
from stepshot.spec import scheduling
from stepshot.spec.fields import EXTENDED_RESOURCE
from stepshot.spec.openapi import check, invalid as _invalid
from stepshot.spec.references import reference_errors
from stepshot.spec.schema import ROLES, SPACE_NAMES, SPEC_SCHEMA

SCHEDULING_SCHEMA = SPEC_SCHEMA["properties"]["scheduling"]


def semantic_errors(spec: dict) -> Iterator[str]:
    """Every cross-field rule `spec` (schema-valid, defaulted) breaks."""
    few = spec.get("fewShot", {})
    groups = few.get("groups", [])
    if any(b <= a for a, b in zip(groups, groups[1:])):
        yield _invalid("spec.fewShot.groups", groups, "should be strictly increasing")
    for key in few.get("lrByGroups", {}):
        if not key.isdigit() or not 2 <= int(key) <= 7:
            yield f'spec.fewShot.lrByGroups.{key}: Invalid value: "{key}": keys must be a group count 2..7'
    mode = MODES.get(few.get("mode"))
    if mode and mode.steps_field and not few.get(mode.steps_field):
        yield f"spec.fewShot.{mode.steps_field}: Required value: {mode.name} mode needs at least one step"
    yield from _partition_errors(spec)
    stages = stage_count(spec)
    if stages > MAX_STAGES:
        field = f"spec.fewShot.{mode.steps_field}"   # only a mode with steps exceeds 2 stages
        # Counting stops once past the limit: the count is a lower bound, not the plan's size.
        yield (f"{field}: Too many: expands to more than {MAX_STAGES} stages: at most {MAX_STAGES} "
               f"(one Job each, one status entry each)")
    yield from _quantity_errors(spec)
    yield from _shared_memory_errors(spec)
    yield from _mount_errors(spec)
    yield from _collision_errors(spec)
    size = len(json.dumps(spec))
    if size > MAX_SPEC_BYTES:
        yield f"spec: Too long: {size} bytes: must have at most {MAX_SPEC_BYTES} (the spec travels in a ConfigMap)"
    yield from reference_errors(spec, SPEC_SCHEMA)     # every string naming an object
    yield from _scheduling_errors(spec.get("scheduling", {}), "spec.scheduling")
    yield from _gpu_collisions(spec.get("scheduling", {}))
    sel = spec.get("selection", {})
    if bool(sel.get("archs")) != bool(sel.get("groundTruth")):
        yield "spec.selection: Invalid value: selection needs both archs and groundTruth"
    if spec.get("dataset", {}).get("kind") == "imagefolder" and spec.get("space") == "resnet48-fmnist":
        yield _invalid("spec.dataset.kind", "imagefolder", "must be fashion-mnist for space resnet48-fmnist")
    yield from _worker_errors(spec)
    res = spec.get("resources", {})
    if 0 < res.get("gpusPerNode", 0) < res.get("procsPerNode", 1):   # each process drives one GPU
        yield _invalid("spec.resources.procsPerNode", res["procsPerNode"],
                       f"should be at most spec.resources.gpusPerNode ({res['gpusPerNode']}): each process "
                       f"drives one GPU of its node")


def _worker_errors(spec: dict) -> Iterator[str]:
    """Decode workers beyond the pod's CPU request would be throttled, not faster."""
    res, workers = spec.get("resources", {}), spec.get("training", {}).get("workers")
    if spec.get("dataset", {}).get("kind") != "imagefolder" or workers is None:
        return
    cores = cores_per_process(res.get("cpu", "1"), res.get("procsPerNode", 1))
    if workers > 0 and workers + 1 > cores:    # 0: decoding in the training process, always possible
        yield _invalid("spec.training.workers", workers,
                       f"should be at most {max(0, cores - 1)}: spec.resources.cpu {res.get('cpu')} over "
                       f"{res.get('procsPerNode')} processes per node leaves {cores} cores per process, "
                       f"one of them for the training loop")


# A plan bigger than this is refused before anything is built: every stage is a Job, a
# snapshot Job and an entry in the resource's status (which must stay well under etcd's 1.5 MiB).
MAX_STAGES = 256


def stage_count(spec: dict) -> int:
    """Stages the plan will have (one-shot, few-shot, evaluation), from the spec alone."""
    few = spec.get("fewShot", {})
    mode = MODES.get(few.get("mode"))
    return 2 + (mode.few_shot_stages(few, MAX_STAGES - 2) if mode else 0)


# Where stage pods mount the spec, scratch space and shared memory (stepshot.manifests).
POD_SPEC_DIR = "/opt/stepshot/spec"
RESERVED_MOUNTS = ("/tmp", "/dev/shm", POD_SPEC_DIR)
MAX_SPEC_BYTES = 256 * 1024


def _mount_errors(spec: dict) -> Iterator[str]:
    """Paths that would give a pod two volumes at one mount path (the API server refuses
    such a Job only when the operator creates it)."""
    work = spec.get("storage", {}).get("path", "")
    data = spec.get("dataset", {}).get("path", "") if spec.get("dataset", {}).get("volume") is not None else None
    for field, path in (("spec.storage.path", work), ("spec.dataset.path", data)):
        if path is None:
            continue
        clean = _clean(path)
        if not path.startswith("/"):
            yield _invalid(field, path, "must be an absolute path")
        elif clean in RESERVED_MOUNTS or clean == "/":
            yield _invalid(field, path, f"must not be / or one of {', '.join(RESERVED_MOUNTS)} (mounted by the operator)")
        elif why := _shadows(clean):
            yield _invalid(field, path, why)
    if data is not None and _clean(data) == _clean(work):
        yield _invalid("spec.dataset.path", data, "must differ from spec.storage.path")
    elif data is not None and work.startswith("/") and _below(_clean(work), _clean(data)):
        yield _invalid("spec.storage.path", work, f"must not be under spec.dataset.path ({data}): the data "
                                                  f"volume is mounted read-only")


# Directories of the trainer image a volume must not hide (its Python, its libraries, the
# ground truths under /opt/stepshot), and the kernel's, which no volume may cover.
IMAGE_DIRS = ("/bin", "/sbin", "/lib", "/lib64", "/usr", "/usr/local", "/usr/lib", "/etc", "/opt/stepshot")
KERNEL_DIRS = ("/proc", "/sys", "/dev")


def _clean(path: str) -> str:
    """`path` normalised ('..', '.', doubled and trailing slashes) as the kubelet resolves it."""
    return "/" + posixpath.normpath(path).lstrip("/") if path.startswith("/") else path


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _shadows(path: str) -> str | None:
    """Why a volume mounted at `path` would break the pod (None: it would not)."""
    for top in KERNEL_DIRS + (POD_SPEC_DIR,):
        if _below(path, top):
            return f"must not be under {top} ({'the kernel' if top in KERNEL_DIRS else 'the operator'}'s, read-only)"
    hidden = [d for d in IMAGE_DIRS + RESERVED_MOUNTS if _below(d, path)]
    if hidden:
        return f"must not hide {hidden[0]} (the trainer image's files or a mount of the operator)"
    return None


def _collision_errors(spec: dict) -> Iterator[str]:
    """User values that would collide with a name or number the operator sets in every pod:
    the API server would refuse the Job (or the pod would not start) long after the apply."""
    volume = spec.get("dataset", {}).get("volume")
    if isinstance(volume, dict) and "name" in volume:
        yield (f'spec.dataset.volume.name: Forbidden: the operator names the data volume itself '
               f'("{DATA_VOLUME}"; beside "spec", "workdir", "tmp" and "dshm"): leave the name out')
    if spec.get("metricsPort") == RENDEZVOUS_PORT:
        yield _invalid("spec.metricsPort", RENDEZVOUS_PORT, f"must not be {RENDEZVOUS_PORT}: multi-node stages "
                                                            f"serve their rendezvous on it")


# Names and numbers the operator gives every stage pod (stepshot.manifests reads them here).
DATA_VOLUME = "dataset"
RENDEZVOUS_PORT = 29500


def _quantity_errors(spec: dict) -> Iterator[str]:
    """Every resource quantity of the spec (each field the schema gives the quantity grammar)
    within what a node can hold (`stepshot.spec.limits`): beyond it the pod waits for ever."""
    for path, resource, value in quantities(spec, SPEC_SCHEMA, "spec"):
        yield from quantity_errors(path, resource, value)


def _shared_memory_errors(spec: dict) -> Iterator[str]:
    """The decode workers' prefetched batches live in /dev/shm, which counts against the pod's
    memory: more of them than the pod may hold would be killed as out of memory at once."""
    if spec.get("dataset", {}).get("kind") != "imagefolder" or _quantity_errors_found(spec):
        return
    from pathlib import Path

    from stepshot import sizing           # sizing reads the typed view; both import this module
    from stepshot.spec.view import Spec
    view = Spec({"spec": spec}, Path("."))
    for field, section, shm in (
            ("spec.training.batchSize", "spec.resources", sizing.training_shm_bytes(view)),
            ("spec.evaluation.batchSize", "spec.evaluation.resources", sizing.evaluation_shm_bytes(view))):
        loaders = shm - sizing.SHM_SLACK_BYTES
        memory = spec["resources"]["memory"] if section == "spec.resources" else \
            spec["evaluation"]["resources"]["memory"]
        if loaders > parse_quantity(memory):
            batch = spec["training"]["batchSize"] if section == "spec.resources" else \
                max(spec["evaluation"]["batchSize"], spec["evaluation"]["calibrationBatchSize"])
            yield _invalid(field, batch, f"is too large for {section}.memory {memory}: the decode workers' "
                                         f"prefetched batches would need {loaders / 2 ** 30:.1f} GiB of /dev/shm "
                                         f"(memory-backed, counted against the pod's memory)")


def _quantity_errors_found(spec: dict) -> bool:
    return any(True for _ in _quantity_errors(spec))


# Labels the operator's selectors and bookkeeping rely on: a user value would detach children.
RESERVED_LABEL_PREFIXES = ("stepshot.dev/", "app.kubernetes.io/managed-by", "app.kubernetes.io/name",
                           "batch.kubernetes.io/", "controller-uid", "job-name")


def _toleration_errors(tolerations: list, path: str) -> Iterator[str]:
    """What the API server refuses of a toleration beyond its schema (the Job, not the resource)."""
    for i, tol in enumerate(tolerations):
        operator = tol.get("operator") or "Equal"
        if operator == "Exists" and tol.get("value"):
            yield _invalid(f"{path}[{i}].value", tol["value"], "must be empty when operator is Exists")
        if not tol.get("key") and operator != "Exists":
            yield _invalid(f"{path}[{i}].operator", operator, "must be Exists when key is empty (it matches "
                                                              "every taint)")
        if tol.get("tolerationSeconds") is not None and tol.get("effect") != "NoExecute":
            yield _invalid(f"{path}[{i}].effect", tol.get("effect", ""), "must be NoExecute when "
                                                                         "tolerationSeconds is set")


def _scheduling_errors(section: dict, path: str) -> Iterator[str]:
    # The syntax of label and annotation keys and values: stepshot.spec.references.
    yield from _toleration_errors(section.get("tolerations") or [], f"{path}.tolerations")
    for field in ("labels", "annotations"):
        for key in (section.get(field) or {}):
            if key.startswith(RESERVED_LABEL_PREFIXES):
                yield f'{path}.{field}.{key}: Forbidden: "{key}" is set by the operator'
    if len(json.dumps(section.get("annotations") or {})) > 128 * 1024:
        yield f"{path}.annotations: Too long: must have at most 131072 bytes"
    yield from _env_errors(section.get("env") or [], f"{path}.env")
    for key in (section.get("extraResources") or {}):   # their counts: _quantity_errors (limits.DEVICES)
        yield from _extended_resource_errors(f"{path}.extraResources.{key}", key)
    if section.get("gpuResource"):
        yield from _extended_resource_errors(f"{path}.gpuResource", section["gpuResource"])
    for role in ROLES:
        if isinstance(section.get(role), dict):
            yield from _scheduling_errors(section[role], f"{path}.{role}")


def _env_errors(env: list, path: str) -> Iterator[str]:
    seen: set[str] = set()
    for i, var in enumerate(env):
        name = var.get("name", "")
        why = scheduling.reserved_env(name)
        if why:
            yield f'{path}[{i}].name: Forbidden: "{name}" is set by the operator ({why})'
        elif name in seen:
            yield f'{path}[{i}].name: Duplicate value: "{name}"'
        seen.add(name)


def _extended_resource_errors(path: str, name: str) -> Iterator[str]:
    """A device plugin's resource name, as the API server accepts it in a pod's resources."""
    prefix, _, short = name.rpartition("/")
    if not re.match(EXTENDED_RESOURCE, name) or prefix.endswith("kubernetes.io") or len(prefix) > 244 \
            or len(short) > 63:
        yield _invalid(path, name, "must be an extended resource name: <domain>/<name> outside kubernetes.io, "
                                   "the name at most 63 characters (e.g. rdma/hca_shared_devices_a)")


def _gpu_collisions(section: dict, path: str = "spec.scheduling") -> Iterator[str]:
    """An extra resource named like a role's GPU resource: the GPU count sets that one."""
    found: dict[str, str] = {}
    for role in ROLES:
        gpu = scheduling.gpu_resource(scheduling.effective(section, role))
        for level, settings in scheduling.levels(section, path):
            if level in (path, f"{path}.{role}") and gpu in (settings.get("extraResources") or {}):
                found.setdefault(f"{level}.extraResources.{gpu}", f"{role} pods request their GPUs as {gpu}")
    for field, why in found.items():
        yield (f"{field}: Forbidden: {why}, counted by spec.resources.gpusPerNode (training) and "
               f"spec.evaluation.resources.gpus")


def pod_defaults_errors(defaults: object, path: str) -> list[str]:
    """Why an operator's defaults for stage pods (chart value trainer.podDefaults, shaped like
    spec.scheduling) are invalid: the schema and rules a resource's settings meet."""
    errors = list(check(defaults, SCHEDULING_SCHEMA, path))
    if errors or not isinstance(defaults, dict):
        return errors
    rules = [*reference_errors(defaults, SCHEDULING_SCHEMA, path), *_scheduling_errors(defaults, path),
             *_gpu_collisions(defaults, path)]
    return rules + [e for p, resource, value in quantities(defaults, SCHEDULING_SCHEMA, path)
                    for e in quantity_errors(p, resource, value)]


def _partition_errors(spec: dict) -> Iterator[str]:
    if spec.get("space") not in SPACE_NAMES:
        return
    space = get_space(spec["space"])
    for i, step in enumerate(spec.get("fewShot", {}).get("steps", [])):
        if not isinstance(step, dict) or not isinstance(step.get("stage"), int):
            continue
        stage = step["stage"] - 1
        if stage >= space.num_stages:
            yield _invalid(f"spec.fewShot.steps[{i}].stage", step["stage"],
                           f"should be at most {space.num_stages}: space {space.name} has {space.num_stages} stages")
            continue
        if stage < 0:
            continue
        choices = space.stage_widths(stage) if step.get("dimension") == "width" else space.depth_choices[stage]
        if isinstance(step.get("parts"), int) and step["parts"] > len(choices):
            yield _invalid(f"spec.fewShot.steps[{i}].parts", step["parts"],
                           f"should be at most {len(choices)}: stage {step['stage']} has "
                           f"{len(choices)} {step.get('dimension')} choices {list(choices)}")
