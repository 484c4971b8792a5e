"""Stage pods that cannot start are visible on the real node: the kubelet cannot pull an image
that exists nowhere, the scheduler finds no node for 64 CPUs. Either way the resource stays
`Running` (the pods may yet start) and gets the condition PodsPending=True with the kubelet's or
the scheduler's own reason and words, and a PodsPending Event, both in `kubectl describe`.
"""
from __future__ import annotations

import time

import pytest
import yaml

from localnode import ROOT, Node, timing, wait_for

EXAMPLE = ROOT / "examples" / "fmnist-cluster.yaml"
RUN = f"{int(time.time()) % 100000:05d}"   # namespaces of this session: nas-*-RUN

CASES = {   # resource name -> (spec changes, the reasons the kubelet or scheduler may give)
    "noimage": ({"image": "localhost/stepshot-missing:0", "imagePullPolicy": "IfNotPresent"},
                {"ErrImagePull", "ImagePullBackOff"}),
    "toobig": ({"resources": {"cpu": "64"}}, {"Unschedulable"}),
}


def _pods_pending(node: Node, namespace: str, name: str) -> dict | None:
    status = node.get("sst", name, "-n", namespace).get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "PodsPending"), {})
    return {**cond, "phase": status.get("phase")} if cond.get("status") == "True" else None


@pytest.mark.parametrize("name", sorted(CASES))
def test_stage_pods_that_cannot_start_show_pods_pending(operator, name):
    node, namespace = operator, f"nas-{name}-{RUN}"
    node.work_volume(namespace)
    changes, reasons = CASES[name]
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"].update(changes)
    start = time.monotonic()
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        pending = wait_for(lambda: _pods_pending(node, namespace, name), 180, f"{name}: PodsPending=True", 2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{node.kubectl('describe', 'sst,pods', '-n', namespace, check=False)}") from None
    timing(f"{name}: apply -> PodsPending", time.monotonic() - start)
    assert pending["phase"] == "Running" and pending["reason"] in reasons, pending
    [pod] = node.get("pods", "-n", namespace, "-l", f"stepshot.dev/job={name}-oneshot")["items"]
    assert f"pod {pod['metadata']['name']} (Job {name}-oneshot) cannot start: " in pending["message"], pending
    if name == "toobig":   # the scheduler's own words, as `kubectl describe pod` shows them
        assert "Insufficient cpu" in pending["message"], pending
    else:
        assert "localhost/stepshot-missing:0" in pending["message"], pending

    described = node.kubectl("describe", "sst", name, "-n", namespace)
    assert "PodsPending" in described and pending["reason"] in described, described
    events = node.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    assert any(e["reason"] == "PodsPending" and e["type"] == "Warning" for e in events), events
    node.kubectl("delete", "sst", name, "-n", namespace, "--wait=false")   # its Job and pod go with it
