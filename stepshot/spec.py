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
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from stepshot.errors import StepshotError

GROUP = "stepshot.dev"
VERSION = "v1alpha1"
KIND = "SupernetTraining"
PLURAL = "supernettrainings"
SINGULAR = "supernettraining"
SHORT_NAMES = ["sst"]
API_VERSION = f"{GROUP}/{VERSION}"
SPACE_NAMES = ["resnet48", "resnet48-fmnist"]


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
         pattern: str | None = None, min_length: int | None = None) -> dict:
    return _field("string", default, description, enum=enum or None, pattern=pattern or None, minLength=min_length)


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


_QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"

SPEC_SCHEMA: dict = _obj(
    description="A step-by-step one-shot -> few-shot super-net training.",
    required=["space", "dataset"],
    properties={
        "image": _str("ghcr.io/stepshot/stepshot-trainer:0.1.0", "Trainer image (torch + stepshot)."),
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
                "randomSubnets": _int(2, 0, 16, "Random subnets per sandwich step (plus max and min)."),
                "labelSmoothing": _num(0.1, 0.0, 1.0),
                "dropout": _num(0.2, 0.0, 1.0, "Dropout before the FC, max net only."),
                "gradClip": _num(1.0, 0.0, description="clip_grad_value bound; 0 disables."),
                "momentum": _num(0.9, 0.0, 1.0),
                "nesterov": _bool(True),
                "weightDecay": _num(1e-5, 0.0),
                "workers": _int(2, 0, 64, "Data-loading workers per process."),
                "checkpointEvery": _int(1, 1, description="Checkpoint every N epochs."),
                "keepCheckpoints": _int(3, 1, description="Checkpoints kept per stage (the selected one is always kept)."),
                "ratioCodes": {"type": "array", "items": _int(None, 1, 7), "minItems": 1,
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
                "mode": _str("grouped", enum=["none", "grouped", "partitioned"]),
                "epochs": _int(20, 1, description="Epochs per few-shot stage."),
                "lr": _num(0.001, 0.0, exclusive_minimum=True, description="Base lr of few-shot stages."),
                "lrByGroups": {"type": "object", "additionalProperties": _num(None, 0.0),
                               "default": {"3": 0.002},
                               "description": "grouped: base lr override per G (spec §3.4)."},
                "groups": {"type": "array", "items": _int(None, 2, 7), "minItems": 1,
                           "default": [2, 3, 4, 5, 6, 7],
                           "description": "grouped: G of each step, strictly increasing."},
                "lrScaling": _bool(True, "grouped: scale per-group lr by merged widths (spec §3.4)."),
                "steps": {"type": "array", "default": [],
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
            },
        ),
        "suspend": _bool(False, "Suspend the training: running stage Jobs are suspended."),
        "ttlSecondsAfterFinished": _int(None, 0, description="Delete the resource this long after it finished."),
        "backoffLimit": _int(2, 0, 100, "Retries of each stage Job."),
        "metricsPort": _int(9400, 0, 65535, "Trainer Prometheus port on rank 0 (0 disables)."),
    },
)


def openapi_schema() -> dict:
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": copy.deepcopy(SPEC_SCHEMA),
            # Status is written by the operator; preserving unknown fields also keeps
            # kopf's own bookkeeping from being pruned (kopf#321).
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "required": ["spec"],
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
    {"name": "Partitions", "type": "string", "jsonPath": ".status.partitions"},
    {"name": "Tau", "type": "number", "jsonPath": ".status.result.kendall_tau"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


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

    def walk(schema: dict, path: str, required: bool) -> None:
        kind = schema.get("type", "object")
        if kind == "array" and "items" in schema:
            kind = f"[]{schema['items'].get('type', 'object')}"
        limits = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "minItems") if k in schema]
        if "enum" in schema:
            limits.append(" \\| ".join(schema["enum"]))
        if "pattern" in schema:
            limits.append("quantity")
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
    return ("# SupernetTraining reference (stepshot.dev/v1alpha1)\n\n"
            "Generated by `scripts/gen-crds.py` from `stepshot/spec.py`; do not edit.\n\n"
            + "\n".join(rows) + "\n")


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
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            yield _invalid(path, value, f"should have at least {schema['minItems']} items")
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
        if props is not None and key in props:
            yield from _check(item, props[key], f"{path}.{key}")
        elif isinstance(extra, dict):
            yield from _check(item, extra, f"{path}.{key}")
        elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            # The API server prunes unknown fields silently; locally a typo deserves an error
            # (what `kubectl apply --validate=strict` reports).
            yield f'{path}.{key}: Unknown field: "{key}"'


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
    sel = spec.get("selection", {})
    if bool(sel.get("archs")) != bool(sel.get("groundTruth")):
        yield "spec.selection: Invalid value: selection needs both archs and groundTruth"
    if spec.get("dataset", {}).get("kind") == "imagefolder" and spec.get("space") == "resnet48-fmnist":
        yield _invalid("spec.dataset.kind", "imagefolder", "must be fashion-mnist for space resnet48-fmnist")


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
    errors += list(_check(obj.get("spec"), SPEC_SCHEMA, "spec")) if "spec" in obj else ["spec: Required value"]
    if errors:
        return errors
    return list(_semantic_errors(apply_defaults(obj)["spec"]))


# --------------------------------------------------------------------------- typed view

def _camel(name: str) -> str:
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
        key = _ACRONYMS.get(name, _camel(name))
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

    __slots__ = ("name", "namespace", "raw", "base_dir", "spec_hash")

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


def load_file(path: str | Path) -> Spec:
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
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
    print(json.dumps(doc, indent=2) if args.format == "json" else yaml.safe_dump(doc, sort_keys=False), end="")
    return 0
