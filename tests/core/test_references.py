"""Strings that name other objects are held to the referenced kind's rules (stepshot.spec.references)
and refused with the field named; every string field of the schema is accounted for."""

import pytest

from specdocs import spec_doc as doc
from stepshot import spec
from stepshot.quantity import QUANTITY
from stepshot.spec.references import REFERENCES, reference_of

# String fields that name no object, and why (or which rule checks them instead).
NOT_NAMES = {
    "spec.dataset.path": "a mount path (rules._mount_errors)",
    "spec.storage.path": "a mount path (rules._mount_errors)",
    "spec.selection.archs": "a file (preflight)", "spec.selection.groundTruth": "a file (preflight)",
    "spec.evaluation.archs": "a file (preflight)", "spec.evaluation.groundTruth": "a file (preflight)",
    "annotations.*": "free text",
    "env[].value": "free text",
    "env[].name": "an environment variable: the schema's pattern, rules._env_errors",
    "gpuResource": "a resource name: rules._extended_resource_errors",
    "extraResources.<key>": "a resource name: rules._extended_resource_errors",
    "capabilities[]": "a capability: the schema's pattern, the operator's allow-list",
    "lrByGroups.<key>": "a group count (rules)",
}


def _fields(schema: dict, generic: str):
    """(generic path, node) of every string field and map key of the schema."""
    if schema.get("type") == "string" and "enum" not in schema and schema.get("pattern") != QUANTITY:
        yield generic, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _fields(sub, f"{generic}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{generic}.<key>", {}
        yield from _fields(schema["additionalProperties"], f"{generic}.*")
    if isinstance(schema.get("items"), dict):
        yield from _fields(schema["items"], f"{generic}[]")


def _listed(generic: str) -> bool:
    return any(generic == tail or generic.endswith("." + tail) for tail in NOT_NAMES)


def test_every_string_field_is_in_the_table_or_names_nothing():
    fields = [g for g, _ in _fields(spec.SPEC_SCHEMA, "spec")]
    assert len(fields) > 100                               # every role, every affinity term
    missing = [g for g in fields if reference_of(g) is None and not _listed(g)]
    assert missing == []
    both = [g for g in fields if reference_of(g) is not None and _listed(g)]
    assert both == []
    # every row of the table is used by some field (or by the free-form data volume)
    unused = [t for t in REFERENCES if not t.startswith("volume.")
              and not any(g == t or g.endswith("." + t) for g in fields)]
    assert unused == []



AFFINITY_TERM = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
POD_TERM = "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"


def _node_term(expr: dict) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [expr]}}}


def _pod_term(term: dict) -> dict:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


@pytest.mark.parametrize("patch,field,kind", [
    ({"image": " ghcr.io/stepshot/stepshot-trainer:0.1.0"}, "spec.image", "whitespace"),
    ({"image": "ghcr.io/stepshot/stepshot-trainer:0.1.0\n"}, "spec.image", "whitespace"),
    ({"image": "ghcr.io/Stepshot/trainer:1"}, "spec.image", "container image"),
    ({"image": "ghcr.io/stepshot/trainer:1:2"}, "spec.image", "container image"),
    ({"image": "ghcr.io/stepshot/trainer@sha256:abc"}, "spec.image", "container image"),
    ({"image": "trainer latest"}, "spec.image", "container image"),
    ({"storage__claimName": "Work_Claim"}, "spec.storage.claimName", "PersistentVolumeClaim"),
    ({"storage__claimName": "work claim"}, "spec.storage.claimName", "PersistentVolumeClaim"),
    ({"storage__claimName": "a" * 254}, "spec.storage.claimName", "PersistentVolumeClaim"),
    ({"storage__claimName": "work."}, "spec.storage.claimName", "PersistentVolumeClaim"),
    ({"storage__volumeSnapshotClassName": "CSI"}, "spec.storage.volumeSnapshotClassName", "VolumeSnapshotClass"),
    ({"dataset__volume": {"persistentVolumeClaim": {"claimName": "Data"}}},
     "spec.dataset.volume.persistentVolumeClaim.claimName", "PersistentVolumeClaim"),
    ({"dataset__volume": {"configMap": {"name": "my_data"}}}, "spec.dataset.volume.configMap.name", "ConfigMap"),
    ({"dataset__volume": {"csi": {"driver": "-bad"}}}, "spec.dataset.volume.csi.driver", "CSIDriver"),
    ({"dataset__volume": {"nfs": {"server": "nfs.example.com ", "path": "/data"}}}, "spec.dataset.volume.nfs.server",
     "whitespace"),
    ({"image": ""}, "spec.image", "container image"),
    ({"scheduling__nodeSelector": {"": "a100"}}, "spec.scheduling.nodeSelector.", "label key"),
    ({"scheduling__priorityClassName": "High"}, "spec.scheduling.priorityClassName", "PriorityClass"),
    ({"scheduling__evaluation__serviceAccountName": "sa_1"}, "spec.scheduling.evaluation.serviceAccountName",
     "ServiceAccount"),
    ({"scheduling__training__imagePullSecrets": [{"name": "Reg Cred"}]},
     "spec.scheduling.training.imagePullSecrets[0].name", "Secret"),
    ({"scheduling__nodeSelector": {"gpu type": "a100"}}, "spec.scheduling.nodeSelector.gpu type", "label key"),
    ({"scheduling__snapshot__nodeSelector": {"gpu": "a 100"}}, "spec.scheduling.snapshot.nodeSelector.gpu",
     "label value"),
    ({"scheduling__labels": {"team": "-ml"}}, "spec.scheduling.labels.team", "label value"),
    ({"scheduling__annotations": {"Bad Key": "x"}}, "spec.scheduling.annotations.Bad Key", "annotation key"),
    ({"scheduling__tolerations": [{"key": "nvidia.com/gpu!", "operator": "Exists"}]},
     "spec.scheduling.tolerations[0].key", "taint key"),
    ({"scheduling__tolerations": [{"key": "gpu", "value": "a b"}]}, "spec.scheduling.tolerations[0].value",
     "taint value"),
    ({"scheduling__affinity": _node_term({"matchExpressions": [{"key": "gpu type", "operator": "Exists"}]})},
     f"spec.scheduling.{AFFINITY_TERM}.matchExpressions[0].key", "label key"),
    ({"scheduling__affinity": _node_term({"matchFields": [{"key": "spec.nodeName", "operator": "In",
                                                           "values": ["n1"]}]})},
     f"spec.scheduling.{AFFINITY_TERM}.matchFields[0].key", "node field"),
    ({"scheduling__training__affinity": _pod_term({"topologyKey": "kubernetes.io/host name"})},
     f"spec.scheduling.training.{POD_TERM}.topologyKey", "node label key"),
    ({"scheduling__affinity": _pod_term({"topologyKey": "zone", "namespaces": ["Team-A"]})},
     f"spec.scheduling.{POD_TERM}.namespaces[0]", "Namespace"),
    ({"scheduling__affinity": _pod_term({"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "a b"}}})},
     f"spec.scheduling.{POD_TERM}.labelSelector.matchLabels.app", "label value"),
])
def test_a_string_naming_an_object_follows_that_kinds_rules(patch, field, kind):
    errors = spec.validate(doc(**patch))
    assert len(errors) == 1 and errors[0].startswith(f"{field}: "), errors
    # a field with the rule in the schema (pattern, maxLength) is refused by the API server at apply time
    assert kind in errors[0] or "in body should match '^[a-z0-9]" in errors[0] or "Too long" in errors[0], errors


@pytest.mark.parametrize("patch", [
    {"image": "localhost:5000/ml/trainer@sha256:" + "a" * 64},
    {"image": "registry.example.com:443/ml/stepshot-trainer:0.1.0-rc.1"},
    {"image": "trainer"},
    {"image": "[::1]:5000/trainer:v1"},
    {"storage__claimName": "work.v1-2"},
    {"scheduling__nodeSelector": {"node.kubernetes.io/instance-type": "p4d.24xlarge"}},
    {"scheduling__tolerations": [{"operator": "Exists"}]},
    {"scheduling__tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    {"scheduling__affinity": _pod_term({"topologyKey": "topology.kubernetes.io/zone", "namespaces": ["ml"]})},
])
def test_valid_names_pass(patch):
    assert spec.validate(doc(**patch)) == []


@pytest.mark.parametrize("toleration,field", [
    ({"key": "gpu", "operator": "Exists", "value": "x"}, "value"),
    ({"operator": "Equal", "value": "x"}, "operator"),
    ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}, "effect"),
])
def test_tolerations_the_api_server_would_refuse_are_refused_first(toleration, field):
    errors = spec.validate(doc(scheduling__tolerations=[toleration]))
    assert len(errors) == 1 and errors[0].startswith(f"spec.scheduling.tolerations[0].{field}:"), errors
