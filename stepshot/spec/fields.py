"""Builders of OpenAPI schema nodes, and the Kubernetes core types the schema embeds."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from stepshot.spec.limits import MAX_SECONDS

from stepshot.quantity import QUANTITY

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# An environment variable name every supported server accepts (a C identifier, '-' and '.').
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# An extended resource: domain-prefixed (rdma/hca_shared_devices_a, nvidia.com/mig-1g.10gb, amd.com/gpu).
EXTENDED_RESOURCE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
CAPABILITY = r"^[A-Za-z][A-Za-z0-9_]*$"
MAX_ENV = 128
MAX_EXTRA_RESOURCES = 16
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
        "activeDeadlineSeconds": integer(None, 1, MAX_SECONDS, description=f"Fail a {role} Job running longer than this."),
        "env": {"type": "array", "maxItems": MAX_ENV,
                "items": {"type": "object", "required": ["name"],
                          "properties": {"name": string(pattern=ENV_NAME, max_length=256),
                                         "value": string(max_length=32768)}},
                "description": f"Extra environment variables of the {role} container (e.g. NCCL_IB_HCA): "
                               "name and value only (no references to Secrets); merged by name, a role's "
                               "winning. Names the operator sets are refused."},
        "runtimeClassName": string(description=f"RuntimeClass of {role} pods (e.g. nvidia).", pattern=DNS_SUBDOMAIN,
                                   max_length=253),
        "gpuResource": string(description=f"The resource the GPUs of {role} pods are requested as (default "
                                          "nvidia.com/gpu; e.g. amd.com/gpu, a MIG profile "
                                          "nvidia.com/mig-1g.10gb); the count comes from spec.resources."
                                          "gpusPerNode and spec.evaluation.resources.gpus.",
                              pattern=EXTENDED_RESOURCE, max_length=317),
        "extraResources": {"type": "object", "maxProperties": MAX_EXTRA_RESOURCES,
                           "additionalProperties": string(pattern=QUANTITY, max_length=64),
                           "description": f"Extended resources each {role} pod requests (requests = limits, "
                                          "whole numbers), e.g. rdma/hca_shared_devices_a: \"1\"; merged per key."},
        "hostNetwork": field("boolean", None, f"Run {role} pods on the node's network (dnsPolicy "
                                              "ClusterFirstWithHostNet); only where the operator's "
                                              "administrator allows it (chart value trainer.allowHostNetwork)."),
        "capabilities": {"type": "array", "maxItems": 16, "items": string(pattern=CAPABILITY, max_length=64),
                         "description": f"Linux capabilities added to the {role} container (e.g. IPC_LOCK); only "
                                        "those the operator's administrator allows (chart value "
                                        "trainer.allowedCapabilities)."},
    }
