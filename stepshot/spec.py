"""The `SupernetTraining` resource: one schema, many consumers.

The OpenAPI schema below is the single definition of the resource. The CRD
(`crds/`, the chart) is generated from it, the API server validates against it,
and the local runner validates the same YAML with `validate()`, which applies
the same rules and reports them with the same field paths and wording as the
API server. Checks the 1.20-era API server cannot express (cross-field rules)
live in `_semantic_errors` and are applied by the local runner and by the
operator (which then marks the resource Failed with reason InvalidSpec).
"""
from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import yaml

from stepshot.errors import StepshotError
from stepshot.space import SPACES, get_space

GROUP = "stepshot.dev"
VERSION = "v1alpha1"
KIND = "SupernetTraining"
PLURAL = "supernettrainings"
SINGULAR = "supernettraining"
SHORT_NAMES = ["sst"]
API_VERSION = f"{GROUP}/{VERSION}"
SPACE_NAMES = sorted(SPACES)


def _field(kind: str, default: Any, description: str, **constraints: Any) -> dict:
    """One schema node; a constraint given as None (or an empty description) is left out."""
    schema = {"type": kind, "default": default, **constraints, "description": description}
    return {k: v for k, v in schema.items() if v is not None and v != ""}


def _int(default: int | None = None, minimum: int | None = None, maximum: int | None = None,
         description: str = "") -> dict:
    return _field("integer", default, description, minimum=minimum, maximum=maximum)


def _num(default: float | None = None, minimum: float | None = None, maximum: float | None = None,
         description: str = "", exclusive_minimum: bool = False) -> dict:
    return _field("number", default, description, minimum=minimum,
                  exclusiveMinimum=True if exclusive_minimum and minimum is not None else None, maximum=maximum)


def _str(default: str | None = None, description: str = "", enum: list[str] | None = None,
         pattern: str | None = None, min_length: int | None = None, max_length: int | None = 4096) -> dict:
    return _field("string", default, description, enum=enum or None, pattern=pattern or None, minLength=min_length,
                  maxLength=max_length if not enum else None)


def _bool(default: bool, description: str = "") -> dict:
    return _field("boolean", default, description)


def _obj(properties: dict, description: str = "", required: list[str] | None = None,
         default: dict | None = None) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    # `default: {}` makes the API server (and apply_defaults) fill nested defaults; an object
    # with required fields cannot default to {} (the API server rejects such a schema).
    if not required:
        schema["default"] = {} if default is None else default
    if description:
        schema["description"] = description
    return schema


# Kubernetes' quantity grammar (resource.Quantity), unsigned: "500m", "1.5", "8Gi", "1e3".
_QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
_QUANTITY_SCALE = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_KUBE_TYPES: dict = json.loads((Path(__file__).with_name("kube_types.json")).read_text())["types"]


def cores_per_process(cpu: str, procs: int) -> int:
    """Whole cores of a `cpu` quantity per process, `procs` processes sharing it."""
    return int(parse_quantity(cpu) // max(procs, 1))


def parse_quantity(text: str) -> Decimal:
    """A quantity string in base units (cores, bytes), exactly; ValueError if malformed."""
    match = re.fullmatch(_QUANTITY, text)
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = Decimal(match.group(1)), match.group(3) or ""
    if suffix.endswith("i"):
        return number * 1024 ** ("KMGTPE".index(suffix[0]) + 1)
    if suffix[:1] in "eE" and suffix:
        return number.scaleb(int(suffix[1:]))
    return number.scaleb(_QUANTITY_SCALE[suffix])


def _string_map(description: str) -> dict:
    return {"type": "object", "additionalProperties": {"type": "string"}, "description": description}


def _pod_settings(role: str) -> dict:
    """Scheduling settings of stage pods: the core types' own schemas, no free-form passthrough."""
    return {
        "nodeSelector": _string_map(f"Node labels {role} pods must match."),
        "tolerations": {"type": "array", "items": copy.deepcopy(_KUBE_TYPES["Toleration"]),
                        "description": f"Tolerations of {role} pods (e.g. nvidia.com/gpu:NoSchedule)."},
        "affinity": {**copy.deepcopy(_KUBE_TYPES["Affinity"]), "description": f"Affinity of {role} pods."},
        "priorityClassName": _str(description=f"PriorityClass of {role} pods.", pattern=_DNS_SUBDOMAIN),
        "schedulerName": _str(description=f"Scheduler of {role} pods (e.g. volcano).", pattern=_DNS_SUBDOMAIN),
        "serviceAccountName": _str(description=f"ServiceAccount of {role} pods (no token is mounted); "
                                               "default: the operator's trainer account.", pattern=_DNS_SUBDOMAIN),
        "imagePullSecrets": {"type": "array", "items": copy.deepcopy(_KUBE_TYPES["LocalObjectReference"]),
                             "description": f"Secrets for pulling the image of {role} pods."},
        "labels": _string_map(f"Extra labels of {role} Jobs and pods (e.g. kueue.x-k8s.io/queue-name)."),
        "annotations": _string_map(f"Extra annotations of {role} Jobs and pods (e.g. gang scheduling)."),
        "activeDeadlineSeconds": _int(None, 1, description=f"Fail a {role} Job running longer than this."),
    }


ROLES = ("training", "snapshot", "evaluation")

SPEC_SCHEMA: dict = _obj(
    description="A step-by-step one-shot -> few-shot super-net training.",
    required=["space", "dataset"],
    properties={
        "image": _str("ghcr.io/stepshot/stepshot-trainer:0.1.0", "Trainer image (torch + stepshot).", max_length=1024),
        "imagePullPolicy": _str("IfNotPresent", enum=["Always", "IfNotPresent", "Never"]),
        "space": _str(description="Search space.", enum=SPACE_NAMES),
        "dataset": _obj(
            required=["kind"],
            description="Training/evaluation data.",
            properties={
                "kind": _str("fashion-mnist", enum=["fashion-mnist", "imagefolder"]),
                "path": _str("/usr/share/datasets/fashion-mnist",
                             "Directory of the IDX files, or of train/ and val/ ImageFolder trees."),
                "volume": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                           "description": "A core/v1 volume source mounted at `path` in cluster pods."},
                "trainLimit": _int(0, 0, description="Use only the first N training images (0 = all)."),
                "evalLimit": _int(0, 0, description="Evaluate on the first N test images (0 = all)."),
            },
        ),
        "storage": _obj(
            description="Where checkpoints and snapshots live.",
            properties={
                "claimName": _str(description="PVC holding the work directory (cluster only)."),
                "path": _str("/workdir", "Mount path of the work directory in pods."),
                "snapshot": _str("auto", enum=["auto", "copy", "volumeSnapshot"],
                                 description="auto: VolumeSnapshot when the cluster serves "
                                             "snapshot.storage.k8s.io/v1, else a file copy."),
                "volumeSnapshotClassName": _str(description="VolumeSnapshotClass for snapshots."),
            },
        ),
        "resources": _obj(
            description="Per training stage.",
            properties={
                "nodes": _int(1, 1, 64, "Nodes (pods) per training stage (torchrun --nnodes)."),
                "procsPerNode": _int(1, 1, 16, "Processes per node (torchrun --nproc-per-node)."),
                "gpusPerNode": _int(0, 0, 16, "nvidia.com/gpu per pod; 0 trains on CPU (gloo)."),
                "cpu": _str("2", pattern=_QUANTITY),
                "memory": _str("8Gi", pattern=_QUANTITY),
            },
        ),
        "training": _obj(
            description="Settings shared by every training stage (spec §3.1 defaults).",
            properties={
                "batchSize": _int(128, 1, 65536, "Images per process per step."),
                "seed": _int(0, 0),
                "seedScope": _str("stage", enum=["stage", "step"],
                                  description="What the data order, subnet draws and dropout derive from besides "
                                              "`seed`: the stage name, or the step number, so that two runs whose "
                                              "stages differ only in their split (grouped vs continued) draw the "
                                              "same batches and subnets (a branch-paired comparison)."),
                "randomSubnets": _int(2, 0, 16, "Random subnets per sandwich step (plus max and min)."),
                "labelSmoothing": _num(0.1, 0.0, 1.0),
                "dropout": _num(0.2, 0.0, 1.0, "Dropout before the FC, max net only."),
                "gradClip": _num(1.0, 0.0, description="clip_grad_value bound; 0 disables."),
                "momentum": _num(0.9, 0.0, 1.0),
                "nesterov": _bool(True),
                "weightDecay": _num(1e-5, 0.0),
                "workers": _int(None, 0, 64, "imagefolder: decode worker processes per training process; "
                                             "default: its share of resources.cpu minus one (the "
                                             "training loop's core)."),
                "checkpointEvery": _int(1, 1, description="Checkpoint every N epochs."),
                "keepCheckpoints": _int(3, 1, description="Checkpoints kept per stage (the selected one is always kept)."),
                "ratioCodes": {"type": "array", "items": _int(None, 1, 7), "minItems": 1, "maxItems": 7,
                               "default": [1, 2, 3, 4, 5, 6, 7],
                               "description": "Ratio codes sampled for widths (the paper samples all 7)."},
                "zeroInitLastBN": _bool(True, "Zero-initialise the last BN gamma of every block."),
            },
        ),
        "oneShot": _obj(
            description="The one-shot stage (BigNAS sandwich + in-place distillation).",
            properties={
                "epochs": _int(100, 1),
                "lr": _num(0.1, 0.0, exclusive_minimum=True),
                "warmupEpochs": _num(5.0, 0.0),
            },
        ),
        "fewShot": _obj(
            description="Step-by-step few-shot stages.",
            properties={
                "mode": _str("grouped", enum=["none", "grouped", "partitioned", "continued"],
                             description="grouped / partitioned: the paper's splits; continued: the unsplit "
                                         "super-net trained on for one step per entry of `groups` at that "
                                         "step's lr, the equal-budget control of grouped; none: one-shot only."),
                "epochs": _int(20, 1, description="Epochs per few-shot stage."),
                "lr": _num(0.001, 0.0, exclusive_minimum=True, description="Base lr of few-shot stages."),
                "lrByGroups": {"type": "object", "additionalProperties": _num(None, 0.0),
                               "default": {"3": 0.002},
                               "description": "grouped: base lr override per G (spec §3.4)."},
                "groups": {"type": "array", "items": _int(None, 2, 7), "minItems": 1, "maxItems": 6,
                           "default": [2, 3, 4, 5, 6, 7],
                           "description": "grouped: G of each step, strictly increasing."},
                "lrScaling": _bool(True, "grouped: scale per-group lr by merged widths (spec §3.4)."),
                "steps": {"type": "array", "default": [], "maxItems": 8,
                          "description": "partitioned: each step cuts every partition into `parts`.",
                          "items": {"type": "object", "required": ["dimension", "stage", "parts"],
                                    "properties": {
                                        "dimension": _str(enum=["width", "depth"]),
                                        "stage": _int(None, 1, 4, "Network stage 1..4."),
                                        "parts": _int(None, 2, 8),
                                    }}},
                "maxParallel": _int(4, 1, 256, "partitioned: partition Jobs running at once."),
            },
        ),
        "selection": _obj(
            description="Optional checkpoint selection by Kendall tau on reference archs (spec §3.1).",
            properties={
                "archs": _str(description="JSON file of reference architectures."),
                "groundTruth": _str(description="JSON file with their stand-alone accuracies."),
                "evalImages": _int(2500, 1),
                "calibrationBatches": _int(8, 1),
            },
        ),
        "evaluation": _obj(
            description="Final correlation evaluation.",
            properties={
                "archs": _str(description="JSON file of architectures to rank; default: the ground truth's."),
                "groundTruth": _str(description="JSON file of stand-alone accuracies (challenge format)."),
                "sample": _int(100, 1, description="Random archs to rank when neither file is given."),
                "calibrationBatches": _int(16, 1),
                "calibrationBatchSize": _int(256, 1),
                "evalImages": _int(10000, 1),
                "batchSize": _int(1000, 1),
                "everyStage": _bool(False, "Also evaluate after every training stage (benchmarks)."),
                "resources": _obj(
                    description="The evaluation pod: its own size, not a training node's. Without a GPU "
                                "it evaluates in one process per whole core, as its memory allows (1 GiB each "
                                "beside the image cache).",
                    properties={
                        "cpu": _str("2", pattern=_QUANTITY),
                        "memory": _str("8Gi", pattern=_QUANTITY),
                        "gpus": _int(None, 0, 1, "nvidia.com/gpu; default 1 when training uses GPUs."),
                    }),
            },
        ),
        "scheduling": _obj(
            description="Where and how stage pods are scheduled: shared settings, overridden per role "
                        "(a role's field replaces the shared one; labels and annotations are merged).",
            properties={**_pod_settings("stage"),
                        **{role: _obj(_pod_settings(role), f"Overrides for {role} pods.") for role in ROLES}},
        ),
        "suspend": _bool(False, "Suspend the training: running stage Jobs are suspended."),
        "ttlSecondsAfterFinished": _int(None, 0, description="Delete the resource this long after it finished."),
        "backoffLimit": _int(2, 0, 100, "Retries of each stage Job (failed pods; preemptions do not count "
                                        "where the cluster serves podFailurePolicy)."),
        "maxRestarts": _int(3, 0, 100, "Multi-node stages: worker-group restarts inside the pods "
                                       "(torchrun --max-restarts) before a pod fails."),
        "metricsPort": _int(9400, 0, 65535, "Trainer Prometheus port, served by every training pod (0 disables)."),
    },
)


def _s(description: str = "") -> dict:   # status fields: no defaults, no bounds (the operator writes them)
    return _field("string", None, description)


def _i(description: str = "") -> dict:
    return _field("integer", None, description)


def _n(description: str = "") -> dict:
    return _field("number", None, description)


_CONDITION = {"type": "object", "required": ["type", "status"], "properties": {
    "type": _s("Running, Suspended, Succeeded, Failed, SpecChanged or Degraded."),
    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
    "reason": _s(), "message": _s(), "lastTransitionTime": {"type": "string", "format": "date-time"},
    "observedGeneration": _i()}}
_CHECKPOINT = {"type": "object", "description": "The stage's selected checkpoint, frozen with its sha256.",
               "properties": {"stage": _s(), "partition": _s(), "epoch": _i(), "file": _s(), "sha256": _s(),
                              "kendallTau": _n("Checkpoint selection's score of that epoch.")}}
_STAGE_STATUS = {"type": "object", "properties": {
    "state": {"type": "string", "enum": ["Pending", "Running", "Snapshotting", "Succeeded", "Failed"]},
    "kind": _s(), "step": _i(), "partition": _s(), "parent": _s(),
    "jobs": {"type": "array", "items": _s()},
    "startTime": _s(), "completionTime": _s(), "message": _s("Why the stage failed."),
    "snapshot": {"type": "object", "properties": {
        "job": _s(), "state": _s(), "completionTime": _s(),
        "volumeSnapshot": {"type": "object", "properties": {"name": _s(), "readyToUse": {"type": "boolean"}}}}},
    "checkpoint": _CHECKPOINT}}
STATUS_SCHEMA: dict = {
    "type": "object",
    "description": "Written by the operator; derived from the resource's child Jobs.",
    "properties": {
        "observedGeneration": _i(),
        "phase": {"type": "string", "enum": ["Pending", "Running", "Suspended", "Succeeded", "Failed"]},
        "currentStage": _s("The stage in progress (`+N`: N more at the same step), `done` or `invalid`."),
        "stepIndex": _i("Index of the current step of the plan."),
        "stepsTotal": _i("Steps of the plan (one-shot, each few-shot step, evaluation)."),
        "progress": _s("Stages done / planned."),
        "stagesDone": _i(), "stagesTotal": _i(),
        "startTime": _s(), "completionTime": _s(),
        "stages": {"type": "object", "additionalProperties": _STAGE_STATUS, "description": "Per plan stage."},
        "result": {"type": "object", "description": "The final correlation evaluation.", "properties": {
            "n": _i("Architectures ranked."), "kendallTau": _n(), "spearman": _n(), "pearson": _n()}},
        "childJobs": {"type": "object", "properties": {
            "active": _i(), "suspended": _i(), "succeeded": _i(), "failed": _i()}},
        "conditions": {"type": "array", "items": _CONDITION},
        # kopf's own bookkeeping lives in annotations; kept here only if an older kopf writes it.
        "kopf": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def openapi_schema() -> dict:
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": copy.deepcopy(SPEC_SCHEMA),
            "status": copy.deepcopy(STATUS_SCHEMA),
        },
        "required": ["spec"],
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "stages done/planned"},
    {"name": "Tau", "type": "number", "jsonPath": ".status.result.kendallTau"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class KubeDumper(yaml.SafeDumper):
    """YAML for Go readers (kubectl, Helm: YAML 1.1), which take a bare y, n, Y or N as a
    boolean: `n:` in the CRD would become the key "false" and the status field `n` be pruned."""

    def ignore_aliases(self, data: object) -> bool:   # builders share small dicts: print them in full
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if value in ("y", "Y", "n", "N") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


KubeDumper.add_representer(str, _represent_str)


def kube_yaml(*docs: Any) -> str:
    return yaml.dump_all(docs, Dumper=KubeDumper, sort_keys=False)


def crd() -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": SHORT_NAMES, "categories": ["stepshot"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": openapi_schema()},
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


def reference_markdown() -> str:
    """The field reference (docs/crd-reference.md), generated from the same schema."""
    rows = ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]

    core = {"affinity": "core/v1 Affinity", "tolerations": "[]core/v1 Toleration",
            "imagePullSecrets": "[]core/v1 LocalObjectReference"}

    def walk(schema: dict, path: str, required: bool) -> None:
        kind = schema.get("type", "object")
        if kind == "array" and "items" in schema:
            kind = f"[]{schema['items'].get('type', 'object')}"
        leaf = path.rsplit(".", 1)[-1]
        if path.startswith("spec.scheduling.") and (leaf in core or leaf in ROLES):
            # Kubernetes' own types (documented upstream), and the per-role copies of the section
            kind = core.get(leaf, "object")
            text = schema.get("description", "") + (" Same fields as spec.scheduling." if leaf in ROLES else "")
            rows.append(f"| `{path}` | {kind} |  |  | {text} |")
            return
        limits = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "minItems") if k in schema]
        if "enum" in schema:
            limits.append(" \\| ".join(schema["enum"]))
        if "pattern" in schema:
            limits.append({_QUANTITY: "quantity", _DNS_SUBDOMAIN: "DNS subdomain"}.get(schema["pattern"], "pattern"))
        if required:
            limits.append("required")
        default = json.dumps(schema["default"]) if "default" in schema and schema["default"] != {} else ""
        rows.append(f"| `{path}` | {kind} | {default} | {', '.join(limits)} | {schema.get('description', '')} |")
        for key, sub in schema.get("properties", {}).items():
            walk(sub, f"{path}.{key}", key in schema.get("required", []))
        items = schema.get("items", {})
        for key, sub in items.get("properties", {}).items():
            walk(sub, f"{path}[].{key}", key in items.get("required", []))

    for key, sub in SPEC_SCHEMA["properties"].items():
        walk(sub, f"spec.{key}", key in SPEC_SCHEMA["required"])
    rows += ["", "Status (written by the operator):", "", "| field | type | default | constraints | description |",
             "|---|---|---|---|---|"]
    for key, sub in STATUS_SCHEMA["properties"].items():
        if key != "kopf":
            walk(sub.get("additionalProperties", sub) if key == "stages" else sub,
                 "status.stages.<stage>" if key == "stages" else f"status.{key}", False)
    return ("# SupernetTraining reference (stepshot.dev/v1alpha1)\n\n"
            "Generated by `scripts/gen-crds.py` from `stepshot/spec.py`; do not edit.\n\n"
            + "\n".join(rows) + "\n" + _GPU_EXAMPLE)


_GPU_EXAMPLE = """
## Example: a shared GPU cluster (tolerations, a queue, a private image)

From `examples/imagenet-resnet48.yaml`: every stage pod tolerates the GPU taint, pulls the
private image with `regcred` and carries Kueue's queue label (Kueue admits each Job; the operator
never resumes a Job it did not suspend); training pods also pick a GPU model and a priority.

```yaml
spec:
  image: registry.example.com/ml/stepshot-trainer:0.1.0
  scheduling:
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    imagePullSecrets: [{name: regcred}]
    labels: {kueue.x-k8s.io/queue-name: team-nas}
    training:
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
      priorityClassName: preemptible-training
  evaluation:
    resources: {cpu: "8", memory: 64Gi, gpus: 1}
```
"""


# --------------------------------------------------------------------------- validation

class SpecError(StepshotError, ValueError):
    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid SupernetTraining:\n  " + "\n  ".join(self.errors))


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
_JSON_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def _invalid(path: str, value: Any, why: str) -> str:
    # The API server's wording: `<path>: Invalid value: <value>: <path> in body <why>`.
    return f"{path}: Invalid value: {json.dumps(value)}: {path} in body {why}"


def _check(value: Any, schema: dict, path: str) -> Iterator[str]:
    kind = schema.get("type")
    if kind and not _type_ok(value, kind):
        got = _JSON_NAMES.get(type(value), type(value).__name__)
        yield f'{path}: Invalid value: "{got}": {path} in body must be of type {kind}: "{got}"'
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        yield f"{path}: Unsupported value: {json.dumps(value)}: supported values: {allowed}"
    if "minimum" in schema:
        lo = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= lo:
            yield _invalid(path, value, f"should be greater than {lo}")
        elif value < lo:
            yield _invalid(path, value, f"should be greater than or equal to {lo}")
    if "maximum" in schema and value > schema["maximum"]:
        yield _invalid(path, value, f"should be less than or equal to {schema['maximum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        yield _invalid(path, value, f"should match '{schema['pattern']}'")
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield _invalid(path, value, f"should be at least {schema['minLength']} chars long")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield f"{path}: Too long: may not be longer than {schema['maxLength']}"
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            yield _invalid(path, value, f"should have at least {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            yield f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
        for i, item in enumerate(value):
            yield from _check(item, schema.get("items", {}), f"{path}[{i}]")
    if kind == "object":
        yield from _check_object(value, schema, path)


def _check_object(value: dict, schema: dict, path: str) -> Iterator[str]:
    for key in schema.get("required", []):
        if key not in value:
            yield f"{path}.{key}: Required value"
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if not isinstance(key, str):   # YAML's unquoted `3:` is an integer; JSON keys are strings
            yield f"{path}: Invalid value: {key!r}: keys must be strings (quote them: \"{key}\")"
            continue
        if props is not None and key in props:
            yield from _check(item, props[key], f"{path}.{key}")
        elif isinstance(extra, dict):
            yield from _check(item, extra, f"{path}.{key}")
        elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            # The API server prunes unknown fields silently; locally a typo deserves an error
            # (what `kubectl apply --validate=strict` reports).
            hint = difflib.get_close_matches(key, list(props), n=1)
            yield f'{path}.{key}: Unknown field: "{key}"' + (f' (did you mean "{hint[0]}"?)' if hint else "")


def _fill_defaults(value: Any, schema: dict) -> Any:
    if schema.get("type") == "object" and isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _fill_defaults(value[key], sub)
    elif schema.get("type") == "array" and isinstance(value, list):
        value[:] = [_fill_defaults(v, schema.get("items", {})) for v in value]
    return value


def apply_defaults(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out.setdefault("spec", {})
    out["spec"] = _fill_defaults(out["spec"], SPEC_SCHEMA)
    return out


def _semantic_errors(spec: dict) -> Iterator[str]:
    few = spec.get("fewShot", {})
    groups = few.get("groups", [])
    if any(b <= a for a, b in zip(groups, groups[1:])):
        yield _invalid("spec.fewShot.groups", groups, "should be strictly increasing")
    for key in few.get("lrByGroups", {}):
        if not key.isdigit() or not 2 <= int(key) <= 7:
            yield f'spec.fewShot.lrByGroups.{key}: Invalid value: "{key}": keys must be a group count 2..7'
    if few.get("mode") == "partitioned" and not few.get("steps"):
        yield "spec.fewShot.steps: Required value: partitioned mode needs at least one step"
    yield from _partition_errors(spec)
    stages = stage_count(spec)
    if stages > MAX_STAGES:
        field = "spec.fewShot.steps" if few.get("mode") == "partitioned" else "spec.fewShot.groups"
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
    if few.get("mode") in ("grouped", "continued"):
        return 2 + len(few.get("groups", []))
    if few.get("mode") != "partitioned":
        return 2
    total, width = 2, 1
    for step in few.get("steps", []):
        width *= step.get("parts", 1) if isinstance(step, dict) else 1
        total += width
        if total > MAX_STAGES:   # stop multiplying: 8 steps of 8 parts is 16.7 million
            break
    return total


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
    from stepshot.space import get_space  # torch-free; lazy to keep import order simple

    if spec.get("space") not in SPACE_NAMES:
        return
    space = get_space(spec["space"])
    for i, step in enumerate(spec.get("fewShot", {}).get("steps", [])):
        if not isinstance(step, dict) or not isinstance(step.get("stage"), int):
            continue
        stage = step["stage"] - 1
        if not 0 <= stage < 4:
            continue
        choices = space.stage_widths(stage) if step.get("dimension") == "width" else space.depth_choices[stage]
        if isinstance(step.get("parts"), int) and step["parts"] > len(choices):
            yield _invalid(f"spec.fewShot.steps[{i}].parts", step["parts"],
                           f"should be at most {len(choices)}: stage {step['stage']} has "
                           f"{len(choices)} {step.get('dimension')} choices {list(choices)}")


def validate(obj: dict) -> list[str]:
    """All errors, API-server style, with the field path; [] when valid."""
    if not isinstance(obj, dict):
        return ["<root>: Invalid value: the document must be a mapping"]
    errors: list[str] = []
    if obj.get("apiVersion") not in (None, API_VERSION):
        errors.append(f'apiVersion: Invalid value: "{obj.get("apiVersion")}": must be {API_VERSION}')
    if obj.get("kind") not in (None, KIND):
        errors.append(f'kind: Invalid value: "{obj.get("kind")}": must be {KIND}')
    errors += list(_name_errors(obj.get("metadata")))
    errors += list(_check(obj.get("spec"), SPEC_SCHEMA, "spec")) if "spec" in obj else ["spec: Required value"]
    if errors:
        return errors
    spec = apply_defaults(obj)["spec"]
    errors = list(_semantic_errors(spec))
    name = (obj.get("metadata") or {}).get("name")
    if not errors and isinstance(name, str) and spec["resources"]["nodes"] > 1 and not name[:1].isalpha():
        # A multi-node stage's headless Service is named after the resource (DNS-1035 label).
        errors.append(_invalid("metadata.name", name, "must start with a letter when spec.resources.nodes > 1 "
                                                      "(the stage's headless Service is named after it)"))
    return errors


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _name_errors(meta: Any) -> Iterator[str]:
    """metadata.name must make valid child names: a DNS-1123 label (no dots, so no two
    resources derive the same children), at most 63 characters."""
    if meta is None:
        return
    if not isinstance(meta, dict):
        yield 'metadata: Invalid value: the metadata must be a mapping'
        return
    name = meta.get("name")
    if name is None:
        return
    if not isinstance(name, str) or len(name) > 63 or not re.match(_DNS_LABEL, name):
        yield _invalid("metadata.name", name, "must be a DNS-1123 label: at most 63 lower-case alphanumerics "
                                              "or '-', starting and ending with an alphanumeric")


# --------------------------------------------------------------------------- typed view

def camel(name: str) -> str:
    """snake_case -> camelCase, as the resource spells its fields."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_ACRONYMS = {"zero_init_last_bn": "zeroInitLastBN"}


class View:
    """Read-only attribute view of a defaulted spec section: `view.batch_size` reads `batchSize`."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: dict, path: str):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        key = _ACRONYMS.get(name, camel(name))
        if key not in self._data:
            if name in self._data:
                key = name
            else:
                raise AttributeError(f"{self._path}.{key} is not set")
        value = self._data[key]
        if isinstance(value, dict):
            return View(value, f"{self._path}.{key}")
        if isinstance(value, list):
            return tuple(View(v, f"{self._path}.{key}") if isinstance(v, dict) else v for v in value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            return default

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a spec view is read-only")

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"View({self._path}={self._data!r})"


# Controls a user may change while a run is under way; every other field is fixed by the
# first stage Job (the pods read the spec as it was then).
RUNTIME_FIELDS = ("suspend", "ttlSecondsAfterFinished")


def training_fields(spec: dict) -> dict:
    """The spec without its runtime controls: what decides the stages and their weights."""
    return {k: v for k, v in spec.items() if k not in RUNTIME_FIELDS}


def changed_fields(old: Any, new: Any, path: str = "spec") -> list[str]:
    """Dotted paths where two (defaulted) specs differ, runtime controls left out."""
    if path == "spec":
        old, new = training_fields(old), training_fields(new)
    if isinstance(old, dict) and isinstance(new, dict):
        return [p for key in sorted(old.keys() | new.keys())
                for p in changed_fields(old.get(key), new.get(key), f"{path}.{key}")]
    return [] if old == new else [path]


class Spec(View):
    """A validated, defaulted SupernetTraining."""

    __slots__ = ("name", "namespace", "raw", "base_dir", "spec_hash", "search_space")

    def __init__(self, obj: dict, base_dir: Path):
        super().__init__(obj["spec"], "spec")
        meta = obj.get("metadata") or {}
        object.__setattr__(self, "raw", obj)
        object.__setattr__(self, "name", meta.get("name", "supernet"))
        object.__setattr__(self, "namespace", meta.get("namespace", "default"))
        object.__setattr__(self, "base_dir", base_dir)
        # Runtime controls stay out: suspending and resuming is not a different training.
        canonical = json.dumps(training_fields(obj["spec"]), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "spec_hash", hashlib.sha256(canonical.encode()).hexdigest()[:16])
        # Resolved once (the schema's enum admits only known names); readers take this one.
        object.__setattr__(self, "search_space", get_space(obj["spec"]["space"]))

    def resolve(self, path: str | None) -> Path | None:
        """A file named in the spec: relative paths are relative to the YAML file."""
        if not path:
            return None
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)


def load(obj: dict, base_dir: str | Path = ".") -> Spec:
    errors = validate(obj)
    if errors:
        raise SpecError(errors)
    return Spec(apply_defaults(obj), Path(base_dir).resolve())


# Untrusted YAML is bounded before it becomes Python objects: a 600-byte alias bomb would
# otherwise expand to billions of nodes in the first json.dumps of the spec.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH while composing."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int | None]) -> int:
    """Nodes after alias expansion (shared nodes counted each time, cycles refused)."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise yaml.YAMLError("a recursive alias")
        return memo[key]
    memo[key] = None
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def safe_yaml_documents(text: str) -> list[Any]:
    """The documents of an untrusted YAML text, within size, depth and expansion limits
    (yaml.YAMLError otherwise)."""
    if len(text.encode(errors="replace")) > MAX_FILE_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_FILE_BYTES} bytes")
    loader = _BoundedLoader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if _expanded_size(node, {}) > MAX_NODES:
                raise yaml.YAMLError(f"more than {MAX_NODES} values once aliases are expanded")
            docs.append(loader.construct_document(node))
    finally:
        loader.dispose()
    return docs


def load_file(path: str | Path) -> Spec:
    path = Path(path)
    try:
        docs = [d for d in safe_yaml_documents(path.read_text()) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError([f"{path}: {exc}"]) from exc
    docs = [d for d in docs if isinstance(d, dict) and d.get("kind", KIND) == KIND]
    if len(docs) != 1:
        raise SpecError([f"{path}: expected exactly one {KIND} document, found {len(docs)}"])
    return load(docs[0], path.parent)


# --------------------------------------------------------------------------- CLI: stepshot crd

def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
    parser.set_defaults(func=_cmd_crd)


def _cmd_crd(args: argparse.Namespace) -> int:
    doc = crd()
    print(json.dumps(doc, indent=2) if args.format == "json" else kube_yaml(doc), end="")
    return 0
