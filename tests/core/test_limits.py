"""Quantities that parse but no node could ever satisfy are refused with the field named
(stepshot.spec.limits): every resource quantity of the schema has bounds, every count a maximum."""

import pytest

from specdocs import spec_doc as doc
from stepshot import spec
from stepshot.quantity import QUANTITY
from stepshot.spec import limits

IMAGENET = {"space": "resnet48", "dataset": {"kind": "imagefolder", "path": "/data"}}


def _walk(schema: dict, path: str):
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")


# Counts inside the embedded core/v1 types: the API server bounds them itself (weights 1..100)
# or they ask nothing of a node (how long a toleration lasts).
KUBE_COUNTS = ("tolerationSeconds", "weight")


def test_every_count_of_the_schema_has_a_maximum():
    unbounded = [path for path, node in _walk(spec.SPEC_SCHEMA, "spec")
                 if node.get("type") in ("integer", "number") and "maximum" not in node
                 and not path.endswith(KUBE_COUNTS)]
    assert unbounded == []


def test_every_quantity_field_has_bounds():
    """Each quantity-typed field resolves to a bound by its key; a map of them (extended
    resources) to the whole-device bound."""
    fields = [path for path, node in _walk(spec.SPEC_SCHEMA, "spec") if node.get("pattern") == QUANTITY]
    assert {"spec.resources.cpu", "spec.resources.memory", "spec.evaluation.resources.cpu",
            "spec.evaluation.resources.memory"} <= set(fields)
    for path in fields:
        key = path.rsplit(".", 1)[-1]
        assert key in ("cpu", "memory", "*"), path
    assert limits.bound_of("cpu") is limits.CPU and limits.bound_of("memory") is limits.MEMORY
    assert limits.bound_of("rdma/hca_shared_devices_a") is limits.DEVICES
    assert limits.bound_of("hugepages-2Mi") is limits.STORAGE


@pytest.mark.parametrize("patch,field", [
    ({"resources__cpu": "1e9"}, "spec.resources.cpu"),
    ({"resources__cpu": "1025"}, "spec.resources.cpu"),
    ({"resources__cpu": "2000000m"}, "spec.resources.cpu"),
    ({"resources__memory": "1000Pi"}, "spec.resources.memory"),
    ({"resources__memory": "65Ti"}, "spec.resources.memory"),
    ({"resources__memory": "1E"}, "spec.resources.memory"),
    ({"resources__memory": "8"}, "spec.resources.memory"),              # 8 bytes: a forgotten unit
    ({"resources__memory": "1e3"}, "spec.resources.memory"),
    ({"resources__cpu": "0"}, "spec.resources.cpu"),
    ({"evaluation__resources__cpu": "1e4"}, "spec.evaluation.resources.cpu"),
    ({"evaluation__resources__memory": "9999Ti"}, "spec.evaluation.resources.memory"),
    ({"resources__nodes": 100000}, "spec.resources.nodes"),
    ({"resources__gpusPerNode": 10000}, "spec.resources.gpusPerNode"),
    ({"evaluation__resources__gpus": 64}, "spec.evaluation.resources.gpus"),
    ({"oneShot__epochs": 10 ** 12}, "spec.oneShot.epochs"),
    ({"fewShot__epochs": 10 ** 6}, "spec.fewShot.epochs"),
    ({"training__seed": 2 ** 64}, "spec.training.seed"),
    ({"training__batchSize": 10 ** 7}, "spec.training.batchSize"),
    ({"training__keepCheckpoints": 10 ** 9}, "spec.training.keepCheckpoints"),
    ({"dataset__trainLimit": 2 ** 63}, "spec.dataset.trainLimit"),
    ({"evaluation__sample": 10 ** 12}, "spec.evaluation.sample"),
    ({"evaluation__evalImages": 2 ** 40}, "spec.evaluation.evalImages"),
    ({"evaluation__calibrationBatchSize": 10 ** 9}, "spec.evaluation.calibrationBatchSize"),
    ({"evaluation__shards": 10 ** 5}, "spec.evaluation.shards"),
    ({"ttlSecondsAfterFinished": 2 ** 40}, "spec.ttlSecondsAfterFinished"),
    ({"scheduling__activeDeadlineSeconds": 10 ** 15}, "spec.scheduling.activeDeadlineSeconds"),
    ({"scheduling__training__activeDeadlineSeconds": 10 ** 15}, "spec.scheduling.training.activeDeadlineSeconds"),
    ({"oneShot__lr": 1e300}, "spec.oneShot.lr"),
    ({"oneShot__lr": float("inf")}, "spec.oneShot.lr"),
    ({"oneShot__lr": float("nan")}, "spec.oneShot.lr"),
    ({"training__weightDecay": float("nan")}, "spec.training.weightDecay"),
    ({"fewShot__lrByGroups": {"3": float("inf")}}, "spec.fewShot.lrByGroups.3"),
])
def test_absurd_magnitudes_are_refused_with_the_field(patch, field):
    errors = spec.validate(doc(**patch))
    assert errors and all(e.startswith(f"{field}:") for e in errors), errors


@pytest.mark.parametrize("patch", [
    {"resources__cpu": "1024"}, {"resources__cpu": "1m"}, {"resources__memory": "64Ti"},
    {"resources__memory": "64Mi"}, {"resources__memory": "480Gi"}, {"oneShot__epochs": 10000},
    {"training__seed": 2 ** 32 - 1},
])
def test_the_bounds_themselves_are_accepted(patch):
    assert spec.validate(doc(**patch)) == []


@pytest.mark.parametrize("key,value,ok", [
    ("rdma/hca_shared_devices_a", "1", True), ("nvidia.com/mig-1g.10gb", "7", True),
    ("rdma/hca_shared_devices_a", "1e6", False), ("amd.com/gpu", "0.5", False), ("amd.com/gpu", "500m", False),
    ("rdma/hca", "1025", False),
])
def test_extended_resource_counts_are_whole_and_bounded(key, value, ok):
    """The per-role extra resources (a map of quantities) are bounded like every other quantity."""
    if "extraResources" not in spec.SPEC_SCHEMA["properties"]["scheduling"]["properties"]:
        pytest.skip("spec.scheduling.extraResources is not in this schema")
    errors = spec.validate(doc(scheduling={"training": {"extraResources": {key: value}}}))
    assert (errors == []) == ok, errors
    assert ok or all(e.startswith(f"spec.scheduling.training.extraResources.{key}:") for e in errors), errors


def test_decode_workers_shared_memory_must_fit_the_pod():
    """/dev/shm is memory-backed: the loaders' prefetched batches beyond the pod's memory
    would be killed at once, so the batch size is refused naming the field."""
    errors = spec.validate(doc(IMAGENET, training={"batchSize": 65536, "workers": 15},
                               resources={"cpu": "16", "memory": "64Gi"}))
    assert len(errors) == 1 and errors[0].startswith("spec.training.batchSize:"), errors
    assert "spec.resources.memory 64Gi" in errors[0]
    errors = spec.validate(doc(IMAGENET, evaluation={"batchSize": 60000, "resources": {"cpu": "32", "memory": "64Gi"}}))
    assert len(errors) == 1 and errors[0].startswith("spec.evaluation.batchSize:"), errors
    assert spec.validate(doc(IMAGENET, training={"batchSize": 256}, resources={"cpu": "16", "memory": "64Gi"})) == []


def test_the_schema_states_the_bounds():
    cpu = spec.SPEC_SCHEMA["properties"]["resources"]["properties"]["cpu"]["description"]
    assert "1m" in cpu and "1024" in cpu


def test_a_bare_exa_suffix_is_exa_not_an_exponent():
    """`1E` is 10^18 (Kubernetes' decimal suffix), `1e3` an exponent: both parse, both are bounded."""
    from stepshot.quantity import parse_quantity
    assert parse_quantity("1E") == 10 ** 18 and parse_quantity("2Ei") == 2 * 1024 ** 6
    assert parse_quantity("1e3") == 1000 and parse_quantity("5E2") == 500
