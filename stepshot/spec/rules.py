"""Cross-field rules of the spec: what the 1.20-era API server cannot express. The local
runner applies them in `validate()`; the operator marks a resource that breaks them Failed
with reason InvalidSpec."""
from __future__ import annotations

import json
import re
from typing import Iterator

from stepshot.quantity import cores_per_process, parse_quantity
from stepshot.space import get_space
from stepshot.split_modes import MODES
from stepshot.spec.openapi import invalid as _invalid
from stepshot.spec.schema import ROLES, SPACE_NAMES


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
        yield f"{field}: Too many: expands to {stages} stages: at most {MAX_STAGES} (one Job each, one status entry each)"
    yield from _quantity_errors(spec)
    yield from _mount_errors(spec)
    size = len(json.dumps(spec))
    if size > MAX_SPEC_BYTES:
        yield f"spec: Too long: {size} bytes: must have at most {MAX_SPEC_BYTES} (the spec travels in a ConfigMap)"
    yield from _scheduling_errors(spec.get("scheduling", {}), "spec.scheduling")
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
        clean = path.rstrip("/") or "/"
        if not path.startswith("/"):
            yield _invalid(field, path, "must be an absolute path")
        elif clean in RESERVED_MOUNTS or clean == "/":
            yield _invalid(field, path, f"must not be / or one of {', '.join(RESERVED_MOUNTS)} (mounted by the operator)")
    if data is not None and data.rstrip("/") == work.rstrip("/"):
        yield _invalid("spec.dataset.path", data, "must differ from spec.storage.path")


def _quantity_errors(spec: dict) -> Iterator[str]:
    for path, section in (("spec.resources", spec.get("resources", {})),
                          ("spec.evaluation.resources", spec.get("evaluation", {}).get("resources", {}))):
        for key in ("cpu", "memory"):
            if key in section and parse_quantity(section[key]) <= 0:
                yield _invalid(f"{path}.{key}", section[key], "should be greater than 0")


_QUALIFIED = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
_LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
# Labels the operator's selectors and bookkeeping rely on: a user value would detach children.
RESERVED_LABEL_PREFIXES = ("stepshot.dev/", "app.kubernetes.io/managed-by", "app.kubernetes.io/name",
                           "batch.kubernetes.io/", "controller-uid", "job-name")


def _key_errors(path: str, key: str) -> Iterator[str]:
    name = key.rsplit("/", 1)[-1]
    if not re.match(_QUALIFIED, key) or len(name) > 63 or len(key) - len(name) > 254:
        yield _invalid(path, key, "must be a qualified name ([prefix/]name, name at most 63 characters "
                                  "of alphanumerics, '-', '_', '.')")


def _scheduling_errors(section: dict, path: str) -> Iterator[str]:
    for field in ("labels", "nodeSelector"):
        for key, value in (section.get(field) or {}).items():
            yield from _key_errors(f"{path}.{field}.{key}", key)
            if len(value) > 63 or not re.match(_LABEL_VALUE, value):
                yield _invalid(f"{path}.{field}.{key}", value, "must be a label value (at most 63 characters)")
    for key in (section.get("annotations") or {}):
        yield from _key_errors(f"{path}.annotations.{key}", key)
    for field in ("labels", "annotations"):
        for key in (section.get(field) or {}):
            if key.startswith(RESERVED_LABEL_PREFIXES):
                yield f'{path}.{field}.{key}: Forbidden: "{key}" is set by the operator'
    if len(json.dumps(section.get("annotations") or {})) > 128 * 1024:
        yield f"{path}.annotations: Too long: must have at most 131072 bytes"
    for role in ROLES:
        if isinstance(section.get(role), dict):
            yield from _scheduling_errors(section[role], f"{path}.{role}")


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
