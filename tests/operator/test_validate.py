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
}
CASES = {**{name: case for name, case in HOSTILE.items()},
         **{p.name: (yaml.safe_load(p.read_text()), ["--extra-volume-types", "hostPath"]) for p in EXAMPLES}}


def _caps(options: list[str]) -> ClusterCaps:
    opts = dict(zip(options[::2], options[1::2]))
    extra = set(filter(None, opts.get("--extra-volume-types", "").split(",")))
    return ClusterCaps(volume_types=SAFE_VOLUME_TYPES | extra, allowed_images=opts.get("--allowed-images"))


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
