"""The spec ConfigMap: the resource's (defaulted) spec as the file every trainer pod reads, and
the spec a run started with, read back from it."""
from __future__ import annotations

from collections.abc import Mapping

import yaml

from stepshot.kyaml import safe_yaml_documents
from stepshot.manifests.context import Context, labels, meta
from stepshot.names import config_map_name
from stepshot.spec import API_VERSION, KIND


def spec_config_map(ctx: Context) -> dict:
    """The resource's (defaulted) spec as the YAML file every trainer pod reads."""
    doc = {"apiVersion": API_VERSION, "kind": KIND,
           "metadata": {"name": ctx.name, "namespace": ctx.namespace},
           "spec": ctx.spec.raw["spec"]}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(ctx, config_map_name(ctx.name), labels(ctx, component="spec")),
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
