#!/usr/bin/env python3
"""Write charts/stepshot/values.schema.json from values.yaml: every key the chart documents,
typed from its default, and nothing else (`additionalProperties: false`), so Helm refuses a
misspelled or unknown value (`monitoring.serviceMonitr`, `trainer.tolerations`) instead of
ignoring it. Kubernetes-shaped blocks the chart passes through (resources, affinity, security
contexts, annotations) stay open. trainer.podDefaults takes spec.scheduling's own schema from
stepshot.spec (closed the same way), so the chart and the resource cannot describe stage-pod
settings differently. `--check` exits 1 when the file is stale."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import yaml

from stepshot.spec import ROLES, SPEC_SCHEMA

CHART = Path(__file__).resolve().parents[1] / "charts" / "stepshot"
OUT = CHART / "values.schema.json"
# Blocks handed to Kubernetes as they are: the API server validates them.
OPEN = {"serviceAccount.annotations", "operator.resources", "operator.podAnnotations", "operator.podLabels",
        "operator.nodeSelector", "operator.affinity", "operator.podSecurityContext", "operator.securityContext",
        "trainer.serviceAccount.annotations", "metrics.service.annotations", "monitoring.serviceMonitor.labels",
        "monitoring.podMonitor.labels", "monitoring.prometheusRule.labels", "dashboard.labels",
        "dashboard.annotations"}
ITEMS = {"imagePullSecrets": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}},
                              "additionalProperties": False},
         "operator.tolerations": {"type": "object"}, "operator.extraEnv": {"type": "object"},
         "networkPolicy.metricsFrom": {"type": "object"}}
# trainer.podDefaults: the resource's own spec.scheduling (the operator merges it under each
# resource's); its role sections, the same settings, share one definition.
POD_DEFAULTS = "trainer.podDefaults"
ENUMS = {"rbac.mode": ["namespaced", "cluster"], "image.pullPolicy": ["Always", "IfNotPresent", "Never"]}
TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}
# Values that need others: (when this dotted boolean is true, these must be true too, why).
REQUIRES = [("monitoring.prometheusRule.enabled", ["monitoring.podMonitor.enabled", "monitoring.serviceMonitor.enabled"],
             "the alerts read the operator's and the stage pods' series; without them StepshotRunStalled "
             "sees no progress and fires on every long stage")]


def _at(path: str, leaf: dict) -> dict:
    """A schema that applies `leaf` to the dotted `path`."""
    for key in reversed(path.split(".")):
        leaf = {"properties": {key: leaf}, "required": [key]}
    return leaf


def rules() -> list[dict]:
    """JSON-schema if/then rules for REQUIRES (helm lint and install check them)."""
    out = []
    for when, needs, why in REQUIRES:
        then = {"allOf": [_at(need, {"const": True}) for need in needs]}
        out.append({"$comment": f"{when} needs {', '.join(needs)}: {why}",
                    "if": _at(when, {"const": True}), "then": then})
    return out


def closed(node: dict) -> dict:
    """A copy of an OpenAPI schema node for JSON schema: objects with listed properties refuse
    others (as the operator's check does), descriptions and defaults left to the resource's docs."""
    out = {k: copy.deepcopy(v) for k, v in node.items()
           if k not in ("description", "default", "properties", "items", "additionalProperties")
           and not k.startswith("x-kubernetes-")}
    if "properties" in node:
        out["properties"] = {k: closed(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = closed(node["additionalProperties"])
    if "items" in node:
        out["items"] = closed(node["items"])
    return out


def pod_settings() -> dict:
    return closed(SPEC_SCHEMA["properties"]["scheduling"]["properties"][ROLES[0]])


def schema(value, path: str) -> dict:
    if path in OPEN:
        return {"type": "object"}
    if path == POD_DEFAULTS:
        node = closed(SPEC_SCHEMA["properties"]["scheduling"])
        for role in ROLES:
            assert node["properties"][role] == pod_settings(), role
            node["properties"][role] = {"$ref": "#/definitions/podSettings"}
        return node
    if isinstance(value, dict):
        return {"type": "object", "additionalProperties": False,
                "properties": {k: schema(v, f"{path}.{k}" if path else k) for k, v in value.items()}}
    if isinstance(value, list):
        key = path.rsplit(".", 1)[-1]
        return {"type": "array", "items": ITEMS.get(path) or ITEMS.get(key) or {"type": "string"}}
    out = {"type": TYPES[type(value)]}
    if path in ENUMS:
        out["enum"] = ENUMS[path]
    return out


def render() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    doc = {"$schema": "https://json-schema.org/draft-07/schema#", "title": "stepshot chart values",
           **schema(values, ""), "allOf": rules(), "definitions": {"podSettings": pod_settings()}}
    return json.dumps(doc, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        stale = not OUT.exists() or OUT.read_text() != text
        if stale:
            print("out of date: charts/stepshot/values.schema.json (run scripts/gen-values-schema.py)", file=sys.stderr)
        return int(stale)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
