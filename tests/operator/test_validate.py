"""`stepshot validate --cluster` and `stepshot render` refuse exactly what the operator refuses,
with the same lines: every example and the hostile specs of the test suite, each as a file
for the command line and as a resource body for `reconcile`."""
import copy
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from stepshot.cli import main
from stepshot.manifests import SAFE_VOLUME_TYPES, ClusterCaps
from stepshot_operator import reconcile as rc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
BASE = {"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining", "metadata": {"name": "t"},
        "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"}, "storage": {"claimName": "work"}}}


def patched(*drop: str, **patch) -> dict:
    doc = copy.deepcopy(BASE)
    for key in drop:
        doc.pop(key)
    for dotted, value in patch.items():
        node = doc
        *head, last = dotted.split("__")
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return doc


# (document, the administrator's options): the refusals of tests/core/test_spec.py and
# tests/operator/test_reconcile.py, and specs both accept.
HOSTILE = {
    "valid": (BASE, []),
    "no-claim": (patched(spec__storage={}), []),
    "no-apiversion-kind": (patched("apiVersion", "kind"), []),
    "nodes-0": (patched(spec__resources={"nodes": 0}), []),
    "string-epochs": (patched(spec__oneShot={"epochs": "3"}), []),
    "unknown-space": (patched(spec__space="resnet50"), []),
    "typo-field": (patched(spec__trainng={}), []),
    "bad-memory": (patched(spec__resources={"memory": "8Gii"}), []),
    "toleration-operator": (patched(spec__scheduling={"tolerations": [{"key": "g", "operator": "Exist"}]}), []),
    "operator-label": (patched(spec__scheduling={"labels": {"stepshot.dev/training": "x"}}), []),
    "storage-tmp": (patched(spec__storage={"claimName": "work", "path": "/tmp"}), []),
    "data-on-workdir": (patched(spec__dataset={"kind": "fashion-mnist", "path": "/workdir",
                                               "volume": {"emptyDir": {}}}), []),
    "bad-cut": (patched(spec__fewShot={"mode": "partitioned", "steps": [
        {"dimension": "width", "stage": 1, "parts": 3}, {"dimension": "width", "stage": 1, "parts": 2}]}), []),
    "bad-name": (patched(metadata={"name": "x.y"}), []),
    "hostpath": (patched(spec__dataset={"kind": "fashion-mnist", "volume": {"hostPath": {"path": "/"}}}), []),
    "hostpath-allowed": (patched(spec__dataset={"kind": "fashion-mnist", "volume": {"hostPath": {"path": "/"}}}),
                         ["--extra-volume-types", "hostPath"]),
    "secret": (patched(spec__dataset={"kind": "fashion-mnist", "volume": {"secret": {"secretName": "c"}}}), []),
    "two-sources": (patched(spec__dataset={"kind": "fashion-mnist", "volume": {"nfs": {"server": "a", "path": "/"},
                                                                               "emptyDir": {}}}), []),
    "image-outside": (BASE, ["--allowed-images", r"registry\.example\.com/ml/.*"]),
    "image-inside": (patched(spec__image="registry.example.com/ml/t:1"),
                     ["--allowed-images", r"registry\.example\.com/ml/.*"]),
    # issue 24 item 7, by class: absurd quantities, names of other objects, collisions with the
    # operator's own names, the plan-size bound (tests/core/test_limits.py, test_references.py)
    "cpu-1e9": (patched(spec__resources={"cpu": "1e9"}), []),
    "memory-1000Pi": (patched(spec__resources={"memory": "1000Pi"}), []),
    "memory-8-bytes": (patched(spec__resources={"memory": "8"}), []),
    "eval-cpu-huge": (patched(spec__evaluation={"resources": {"cpu": "5000"}}), []),
    "epochs-huge": (patched(spec__oneShot={"epochs": 10 ** 12}), []),
    "image-whitespace": (patched(spec__image="ghcr.io/stepshot/stepshot-trainer:0.1.0 "), []),
    "image-upper-case": (patched(spec__image="ghcr.io/StepShot/trainer:1"), []),
    "claim-invalid": (patched(spec__storage={"claimName": "Work_1"}), []),
    "data-claim-invalid": (patched(spec__dataset={"kind": "fashion-mnist",
                                                  "volume": {"persistentVolumeClaim": {"claimName": "data set"}}}), []),
    "pull-secret-invalid": (patched(spec__scheduling={"imagePullSecrets": [{"name": "Reg_Cred"}]}), []),
    "toleration-exists-value": (patched(spec__scheduling={"tolerations": [{"key": "g", "operator": "Exists",
                                                                          "value": "x"}]}), []),
    "topology-key-invalid": (patched(spec__scheduling={"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "host name"}]}}}), []),
    "data-volume-name": (patched(spec__dataset={"kind": "fashion-mnist", "path": "/data",
                                                "volume": {"name": "workdir", "emptyDir": {}}}), []),
    "metrics-port-rendezvous": (patched(spec__metricsPort=29500), []),
    "storage-hides-usr": (patched(spec__storage={"claimName": "work", "path": "/usr"}), []),
    "storage-hides-spec": (patched(spec__storage={"claimName": "work", "path": "/opt"}), []),
    "data-under-proc": (patched(spec__dataset={"kind": "fashion-mnist", "path": "/proc/data",
                                               "volume": {"emptyDir": {}}}), []),
    "storage-dotdot-tmp": (patched(spec__storage={"claimName": "work", "path": "/workdir/../tmp"}), []),
    "storage-under-data": (patched(spec__storage={"claimName": "work", "path": "/data/work"},
                                   spec__dataset={"kind": "fashion-mnist", "path": "/data/",
                                                  "volume": {"emptyDir": {}}}), []),
    "image-empty": (patched(spec__image=""), []),
    "nfs-server-space": (patched(spec__dataset={"kind": "fashion-mnist", "path": "/data",
                                                "volume": {"nfs": {"server": "nfs .example.com", "path": "/x"}}}), []),
    "plan-too-big": (patched(spec__fewShot={"mode": "partitioned", "steps": [
        {"dimension": "width", "stage": 4, "parts": 4}] * 5}), []),
    "label-operator-name": (patched(spec__scheduling={"labels": {"app.kubernetes.io/managed-by": "me"}}), []),
    "annotation-spec-hash": (patched(spec__scheduling={"evaluation": {"annotations": {
        "stepshot.dev/spec-hash": "0"}}}), []),
}
# issue 24 item 4: GPU-cluster pod settings; the privileged ones need the administrator's allow-list
HOSTILE.update({
    "host-network": (patched(spec__scheduling={"training": {"hostNetwork": True}}), []),
    "host-network-allowed": (patched(spec__scheduling={"training": {"hostNetwork": True}}), ["--allow-host-network"]),
    "capability": (patched(spec__scheduling={"capabilities": ["IPC_LOCK"]}), []),
    "capability-other": (patched(spec__scheduling={"capabilities": ["SYS_ADMIN"]}),
                         ["--allowed-capabilities", "IPC_LOCK"]),
    "capability-allowed": (patched(spec__scheduling={"capabilities": ["IPC_LOCK"]}),
                           ["--allowed-capabilities", "IPC_LOCK"]),
    "env-reserved": (patched(spec__scheduling={"env": [{"name": "OMP_NUM_THREADS", "value": "64"}]}), []),
    "env-torchrun": (patched(spec__scheduling={"evaluation": {"env": [{"name": "PET_NNODES", "value": "2"}]}}), []),
    "gpu-as-extra": (patched(spec__scheduling={"training": {"extraResources": {"nvidia.com/gpu": "8"}}}), []),
    "devices-huge": (patched(spec__scheduling={"extraResources": {"rdma/hca_shared_devices_a": "1e6"}}), []),
    "gpu-cluster-settings": (patched(spec__scheduling={
        "env": [{"name": "NCCL_IB_HCA", "value": "mlx5"}], "runtimeClassName": "nvidia",
        "training": {"gpuResource": "nvidia.com/mig-1g.10gb", "extraResources": {"rdma/hca_shared_devices_a": "1"},
                     "hostNetwork": True, "capabilities": ["IPC_LOCK"]}}),
        ["--allow-host-network", "--allowed-capabilities", "IPC_LOCK"]),
})
CASES = {**{name: case for name, case in HOSTILE.items()},
         **{p.name: (yaml.safe_load(p.read_text()), ["--extra-volume-types", "hostPath"]) for p in EXAMPLES}}


def _caps(options: list[str]) -> ClusterCaps:
    host_network = "--allow-host-network" in options      # the one flag without a value
    options = [o for o in options if o != "--allow-host-network"]
    opts = dict(zip(options[::2], options[1::2]))
    extra = set(filter(None, opts.get("--extra-volume-types", "").split(",")))
    return ClusterCaps(volume_types=SAFE_VOLUME_TYPES | extra, allowed_images=opts.get("--allowed-images"),
                       host_network=host_network,
                       capabilities=frozenset(filter(None, opts.get("--allowed-capabilities", "").split(","))))


def _operator_errors(doc: dict, caps: ClusterCaps) -> list[str]:
    """What the operator says of the resource: [] when it starts it, else its InvalidSpec errors."""
    body = {**copy.deepcopy(doc), "metadata": {**doc.get("metadata", {}), "namespace": "ns", "generation": 1}}
    current = rc.load_resource(body)
    result = rc.reconcile(body, rc.Observed(), caps, NOW, current)
    failed = {c["type"]: c for c in result.status["conditions"]}["Failed"]
    if result.status["phase"] != "Failed":
        return []
    assert failed["reason"] == "InvalidSpec" and result.create == ()
    # The operator joins the errors with "; " (some errors hold "; " themselves: compare joined)
    return [failed["message"]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_and_render_refuse_what_the_operator_refuses(case, tmp_path, capsys):
    doc, options = CASES[case]
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    expected = _operator_errors(doc, _caps(options))
    if "apiVersion" not in doc:    # the API server (kubectl) never passes it to the operator
        expected = ["apiVersion: Required value", "kind: Required value"]

    rc_validate = main(["validate", "--cluster", str(path), *options])
    lines = capsys.readouterr().err.splitlines()
    assert rc_validate == (2 if expected else 0)
    assert all(line.startswith(f"{path}: ") for line in lines)
    said = "; ".join(line.removeprefix(f"{path}: ") for line in lines)
    if "apiVersion" in doc:
        assert said == "; ".join(expected)                   # the same errors, the same words
    else:
        assert all(e in said for e in expected), said

    assert main(["render", str(path), *options]) == (2 if expected else 0)
    out = capsys.readouterr()
    if expected:
        assert out.out == "" and out.err.startswith("stepshot render: error: ")
        assert all(e in out.err for line in expected for e in line.split("; ")), out.err
    else:
        assert "kind: Job" in out.out


def test_validate_without_cluster_is_what_stepshot_run_accepts(tmp_path, capsys):
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(patched(spec__storage={})))   # no claim: fine on this machine
    assert main(["validate", str(path)]) == 0
    assert main(["validate", "--cluster", str(path)]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: {space: resnet48-fmnist, x: [\n")
    assert main(["validate", str(path), str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"{bad}: ") and len(err) == 2      # one line per error, YAML errors too


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("stepshot 0.")


# The field each hostile case of issue 24 item 7 is refused on (the operator's Failed message
# and `stepshot validate` both start with it; the test above shows they say the same).
REFUSED_ON = {
    "cpu-1e9": "spec.resources.cpu", "memory-1000Pi": "spec.resources.memory",
    "memory-8-bytes": "spec.resources.memory", "eval-cpu-huge": "spec.evaluation.resources.cpu",
    "epochs-huge": "spec.oneShot.epochs", "image-whitespace": "spec.image", "image-upper-case": "spec.image",
    "claim-invalid": "spec.storage.claimName",
    "data-claim-invalid": "spec.dataset.volume.persistentVolumeClaim.claimName",
    "pull-secret-invalid": "spec.scheduling.imagePullSecrets[0].name",
    "toleration-exists-value": "spec.scheduling.tolerations[0].value",
    "topology-key-invalid": "spec.scheduling.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                            "[0].topologyKey",
    "data-volume-name": "spec.dataset.volume.name", "metrics-port-rendezvous": "spec.metricsPort",
    "storage-hides-usr": "spec.storage.path", "storage-hides-spec": "spec.storage.path",
    "data-under-proc": "spec.dataset.path", "storage-dotdot-tmp": "spec.storage.path",
    "storage-under-data": "spec.storage.path", "image-empty": "spec.image",
    "nfs-server-space": "spec.dataset.volume.nfs.server",
    "plan-too-big": "spec.fewShot.steps",
    "label-operator-name": "spec.scheduling.labels.app.kubernetes.io/managed-by",
    "annotation-spec-hash": "spec.scheduling.evaluation.annotations.stepshot.dev/spec-hash",
    "host-network": "spec.scheduling.training.hostNetwork", "capability": "spec.scheduling.capabilities[0]",
    "capability-other": "spec.scheduling.capabilities[0]", "env-reserved": "spec.scheduling.env[0].name",
    "env-torchrun": "spec.scheduling.evaluation.env[0].name",
    "gpu-as-extra": "spec.scheduling.training.extraResources.nvidia.com/gpu",
    "devices-huge": "spec.scheduling.extraResources.rdma/hca_shared_devices_a",
}


@pytest.mark.parametrize("case", sorted(REFUSED_ON))
def test_each_hostile_class_is_refused_naming_the_field(case):
    doc, options = HOSTILE[case]
    [message] = _operator_errors(doc, _caps(options))
    assert message.startswith(f"{REFUSED_ON[case]}: "), message
    if case == "plan-too-big":   # counting stops past the bound: never presented as the count
        assert "more than 256 stages" in message, message
