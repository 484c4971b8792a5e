#!/usr/bin/env python3
"""Write stepshot/kube_types.json: structural OpenAPI schemas of the core/v1 types a
SupernetTraining embeds (Toleration, Affinity, LocalObjectReference), converted from the
Kubernetes OpenAPI that kubernetes-validate ships (one pinned version). The CRD and the local
validator read that file, so `spec.scheduling.affinity` is checked field by field as the API
server checks a pod's, with no free-form passthrough. `--check` exits 1 when it is stale."""
from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

KUBE_VERSION = "v1.31.0"
TYPES = {"Toleration": "io.k8s.api.core.v1.Toleration", "Affinity": "io.k8s.api.core.v1.Affinity",
         "LocalObjectReference": "io.k8s.api.core.v1.LocalObjectReference"}
OUT = Path(__file__).resolve().parents[1] / "stepshot" / "kube_types.json"
# Enums the Kubernetes OpenAPI states only in prose (the API server checks them in code).
ENUMS = {
    "io.k8s.api.core.v1.Toleration": {"operator": ["Exists", "Equal"],
                                      "effect": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
    "io.k8s.api.core.v1.NodeSelectorRequirement": {"operator": ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]},
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement": {"operator": ["In", "NotIn", "Exists",
                                                                                   "DoesNotExist"]},
}
KEEP = ("type", "properties", "items", "required", "additionalProperties", "description", "enum")


def _definitions() -> dict:
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"{KUBE_VERSION}-local-strict"
    return json.loads((root / "_definitions.json").read_text())["$defs"]


def _first_sentence(text: str) -> str:
    head = text.split(". ")[0].strip()
    return head if head.endswith(".") else head + "."


def structural(node: dict, defs: dict, enums: dict | None = None) -> dict:
    """A CRD-structural copy: refs inlined, single types, short descriptions, no
    `additionalProperties: false` (the API server prunes unknown fields instead)."""
    if "$ref" in node:
        ref = node["$ref"].rsplit("/", 1)[1]
        target = structural(defs[ref], defs, ENUMS.get(ref, {}))
        return {**target, **({"description": _first_sentence(node["description"])} if "description" in node else {})}
    out: dict = {}
    for key in KEEP:
        if key not in node:
            continue
        value = node[key]
        if key == "type":
            kinds = [k for k in (value if isinstance(value, list) else [value]) if k != "null"]
            out["type"] = kinds[0]
        elif key == "properties":
            out["properties"] = {k: structural(v, defs) for k, v in sorted(value.items())}
        elif key in ("items",) or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = structural(value, defs)
        elif key == "description":
            out[key] = _first_sentence(value)
        elif key != "additionalProperties":
            out[key] = [v for v in value if v is not None] if key == "enum" else value
    for key, allowed in (enums or {}).items():
        out["properties"][key]["enum"] = allowed
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def render() -> str:
    defs = _definitions()
    doc = {"source": f"Kubernetes {KUBE_VERSION} OpenAPI (kubernetes-validate), by scripts/gen-kube-types.py",
           "types": {name: structural(defs[ref], defs, ENUMS.get(ref, {})) for name, ref in TYPES.items()}}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"out of date: {OUT.name} (run scripts/gen-kube-types.py)", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
