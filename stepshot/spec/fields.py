"""Builders of OpenAPI schema nodes, and the Kubernetes core types the schema embeds."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Structural schemas of core/v1 types (scripts/gen-kube-types.py writes the file).
KUBE_TYPES: dict = json.loads((Path(__file__).parents[1] / "kube_types.json").read_text())["types"]


def field(kind: str, default: Any, description: str, **constraints: Any) -> dict:
    """One schema node; a constraint given as None (or an empty description) is left out."""
    schema = {"type": kind, "default": default, **constraints, "description": description}
    return {k: v for k, v in schema.items() if v is not None and v != ""}


def integer(default: int | None = None, minimum: int | None = None, maximum: int | None = None,
            description: str = "") -> dict:
    return field("integer", default, description, minimum=minimum, maximum=maximum)


def number(default: float | None = None, minimum: float | None = None, maximum: float | None = None,
           description: str = "", exclusive_minimum: bool = False) -> dict:
    return field("number", default, description, minimum=minimum,
                 exclusiveMinimum=True if exclusive_minimum and minimum is not None else None, maximum=maximum)


def string(default: str | None = None, description: str = "", enum: list[str] | None = None,
           pattern: str | None = None, min_length: int | None = None, max_length: int | None = 4096) -> dict:
    return field("string", default, description, enum=enum or None, pattern=pattern or None, minLength=min_length,
                 maxLength=max_length if not enum else None)


def boolean(default: bool, description: str = "") -> dict:
    return field("boolean", default, description)


def obj(properties: dict, description: str = "", required: list[str] | None = None,
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


def string_map(description: str) -> dict:
    return {"type": "object", "additionalProperties": {"type": "string"}, "description": description}


def pod_settings(role: str) -> dict:
    """Scheduling settings of stage pods: the core types' own schemas, no free-form passthrough."""
    return {
        "nodeSelector": string_map(f"Node labels {role} pods must match."),
        "tolerations": {"type": "array", "items": copy.deepcopy(KUBE_TYPES["Toleration"]),
                        "description": f"Tolerations of {role} pods (e.g. nvidia.com/gpu:NoSchedule)."},
        "affinity": {**copy.deepcopy(KUBE_TYPES["Affinity"]), "description": f"Affinity of {role} pods."},
        "priorityClassName": string(description=f"PriorityClass of {role} pods.", pattern=DNS_SUBDOMAIN),
        "schedulerName": string(description=f"Scheduler of {role} pods (e.g. volcano).", pattern=DNS_SUBDOMAIN),
        "serviceAccountName": string(description=f"ServiceAccount of {role} pods (no token is mounted); "
                                                 "default: the operator's trainer account.", pattern=DNS_SUBDOMAIN),
        "imagePullSecrets": {"type": "array", "items": copy.deepcopy(KUBE_TYPES["LocalObjectReference"]),
                             "description": f"Secrets for pulling the image of {role} pods."},
        "labels": string_map(f"Extra labels of {role} Jobs and pods (e.g. kueue.x-k8s.io/queue-name)."),
        "annotations": string_map(f"Extra annotations of {role} Jobs and pods (e.g. gang scheduling)."),
        "activeDeadlineSeconds": integer(None, 1, description=f"Fail a {role} Job running longer than this."),
    }
