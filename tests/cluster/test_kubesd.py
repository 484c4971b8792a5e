"""tests/kubesd.py, the node tests' kubernetes_sd (Debian's Prometheus has none), against a real
API server: the targets and `__meta_kubernetes_*` labels of roles pod and endpoints as Prometheus
documents them. (tests/chart/test_prometheus.py checks which of them the chart's monitors keep;
tests/node/test_monitoring.py scrapes real pods with it.)"""
from __future__ import annotations

import json

import pytest

from kubesd import KubeSD

pytestmark = pytest.mark.apiserver
NS = "sd-check"


def _pod(core, name: str, labels: dict, ip: str, phase: str = "Running") -> None:
    core.create_namespaced_pod(NS, {
        "metadata": {"name": name, "labels": labels, "annotations": {"example.com/note": "x"}},
        "spec": {"nodeName": "node-a", "containers": [
            {"name": "trainer", "image": "img:1", "ports": [{"name": "metrics", "containerPort": 9400},
                                                             {"name": "c10d", "containerPort": 29500}]},
            {"name": "sidecar", "image": "img:2"}]}})
    core.patch_namespaced_pod_status(name, NS, {"status": {
        "phase": phase, "podIP": ip, "hostIP": "10.0.0.1",
        "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False"}]}})


def _by_address(targets: list[dict]) -> dict[str, dict]:
    return {t["targets"][0]: t["labels"] for t in targets}


def test_pod_and_endpoints_roles(apiserver, tmp_path):
    from kubernetes import client
    api = apiserver.client()
    core = client.CoreV1Api(api)
    apiserver.create_namespace(NS)
    _pod(core, "run-oneshot-0", {"stepshot.dev/training": "run", "app": "t"}, "10.244.9.10")
    core.create_namespaced_pod(NS, {"metadata": {"name": "unscheduled"},
                                    "spec": {"containers": [{"name": "c", "image": "img:1"}]}})
    core.create_namespaced_service(NS, {"metadata": {"name": "op-metrics", "labels": {"app.kubernetes.io/name": "op"}},
                                        "spec": {"ports": [{"name": "metrics", "port": 8080}], "selector": {"app": "t"}}})
    core.create_namespaced_endpoints(NS, {"metadata": {"name": "op-metrics"}, "subsets": [{
        "addresses": [{"ip": "10.244.9.10", "nodeName": "node-a",
                       "targetRef": {"kind": "Pod", "name": "run-oneshot-0", "namespace": NS}}],
        "notReadyAddresses": [{"ip": "10.244.9.11"}],
        "ports": [{"name": "metrics", "port": 9400, "protocol": "TCP"}]}]})

    found = KubeSD(api, {}).discover()
    pods = {a: l for a, l in _by_address(found["pod"]).items() if l["__meta_kubernetes_namespace"] == NS}
    # one target per declared port, a port-free one for the container without ports, none
    # for the pod without an IP
    assert set(pods) == {"10.244.9.10:9400", "10.244.9.10:29500", "10.244.9.10"}
    metrics = pods["10.244.9.10:9400"]
    assert {k: metrics[k] for k in (
        "__meta_kubernetes_pod_name", "__meta_kubernetes_pod_container_name", "__meta_kubernetes_pod_container_port_name",
        "__meta_kubernetes_pod_container_port_number", "__meta_kubernetes_pod_label_stepshot_dev_training",
        "__meta_kubernetes_pod_labelpresent_stepshot_dev_training", "__meta_kubernetes_pod_annotation_example_com_note",
        "__meta_kubernetes_pod_ready", "__meta_kubernetes_pod_phase", "__meta_kubernetes_pod_node_name")} == {
        "__meta_kubernetes_pod_name": "run-oneshot-0", "__meta_kubernetes_pod_container_name": "trainer",
        "__meta_kubernetes_pod_container_port_name": "metrics", "__meta_kubernetes_pod_container_port_number": "9400",
        "__meta_kubernetes_pod_label_stepshot_dev_training": "run",
        "__meta_kubernetes_pod_labelpresent_stepshot_dev_training": "true",
        "__meta_kubernetes_pod_annotation_example_com_note": "x", "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_phase": "Running", "__meta_kubernetes_pod_node_name": "node-a"}
    assert pods["10.244.9.10"]["__meta_kubernetes_pod_container_name"] == "sidecar"

    endpoints = {a: l for a, l in _by_address(found["endpoints"]).items() if l["__meta_kubernetes_namespace"] == NS}
    assert set(endpoints) == {"10.244.9.10:9400", "10.244.9.11:9400"}
    ready = endpoints["10.244.9.10:9400"]
    assert ready["__meta_kubernetes_service_name"] == "op-metrics" and ready["__meta_kubernetes_endpoint_ready"] == "true"
    assert ready["__meta_kubernetes_service_label_app_kubernetes_io_name"] == "op"
    assert ready["__meta_kubernetes_endpoint_port_name"] == "metrics"
    # an address backed by a pod carries the pod's labels and the container serving the port
    assert ready["__meta_kubernetes_pod_name"] == "run-oneshot-0" and ready["__meta_kubernetes_pod_container_name"] == "trainer"
    assert endpoints["10.244.9.11:9400"]["__meta_kubernetes_endpoint_ready"] == "false"
    assert "__meta_kubernetes_pod_name" not in endpoints["10.244.9.11:9400"]

    # written as file_sd, one file per role, replaced whole
    files = {"pod": tmp_path / "pod.json", "endpoints": tmp_path / "endpoints.json"}
    KubeSD(api, files).write()
    assert json.loads(files["pod"].read_text()) == found["pod"]
