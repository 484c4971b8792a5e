"""Prometheus's kubernetes_sd (roles pod and endpoints), fed from a real API server into file_sd.

Debian's prometheus (2.42.0+ds) is built without the Kubernetes discovery ("field
kubernetes_sd_configs not found"), so the node tests discover here what it would: the same
targets and the same `__meta_kubernetes_*` labels, as documented for kubernetes_sd_config
(https://prometheus.io/docs/prometheus/latest/configuration/configuration/#kubernetes_sd_config),
polled once a second and written atomically to one file per role. The scrape jobs, their
relabelling and everything after discovery are Prometheus's own (tests/promserver.py).
"""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path


def meta_suffix(label: str) -> str:
    """A Kubernetes label or annotation name as Prometheus's meta label suffix."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def map_labels(prefix: str, what: str, values: dict | None) -> dict[str, str]:
    """`{prefix}_{what}_<name>` and `{prefix}_{what}present_<name>` for each of a map's keys."""
    out = {}
    for key, value in (values or {}).items():
        out[f"{prefix}_{what}_{meta_suffix(key)}"] = value
        out[f"{prefix}_{what}present_{meta_suffix(key)}"] = "true"
    return out


def _pod_meta(pod: dict) -> dict[str, str]:
    """The labels every target of a pod carries (role pod, and role endpoints for a pod address)."""
    meta, status = pod["metadata"], pod.get("status") or {}
    ready = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "Ready"), "unknown")
    out = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
           "__meta_kubernetes_pod_ip": status.get("podIP", ""), "__meta_kubernetes_pod_uid": meta.get("uid", ""),
           "__meta_kubernetes_pod_node_name": pod["spec"].get("nodeName", ""),
           "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
           "__meta_kubernetes_pod_ready": ready.lower(), "__meta_kubernetes_pod_phase": status.get("phase", "")}
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner:
        out["__meta_kubernetes_pod_controller_kind"] = owner["kind"]
        out["__meta_kubernetes_pod_controller_name"] = owner["name"]
    out.update(map_labels("__meta_kubernetes_pod", "label", meta.get("labels")))
    out.update(map_labels("__meta_kubernetes_pod", "annotation", meta.get("annotations")))
    return out


def _container_meta(container: dict, port: dict | None, init: bool) -> dict[str, str]:
    out = {"__meta_kubernetes_pod_container_name": container["name"],
           "__meta_kubernetes_pod_container_image": container.get("image", ""),
           "__meta_kubernetes_pod_container_init": str(init).lower()}
    if port:
        out.update({"__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP")})
    return out


def pod_targets(pod: dict) -> list[dict]:
    """Role pod: one target per declared container port (ip:port), one port-free target per
    container without ports; a pod without an IP has none."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return []
    common, out = _pod_meta(pod), []
    for init, key in ((False, "containers"), (True, "initContainers")):
        for container in pod["spec"].get(key) or []:
            for port in container.get("ports") or [None]:
                address = f"{ip}:{port['containerPort']}" if port else ip
                out.append({"targets": [address], "labels": {**common, **_container_meta(container, port, init)}})
    return out


def endpoints_targets(endpoints: dict, service: dict | None, pods: dict[tuple[str, str], dict]) -> list[dict]:
    """Role endpoints: one target per address and port of each subset, with the Service's labels
    and, for an address backed by a pod, the pod's (and the container serving that port)."""
    meta = endpoints["metadata"]
    common = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_endpoints_name": meta["name"],
              **map_labels("__meta_kubernetes_endpoints", "label", meta.get("labels"))}
    if service is not None:
        common["__meta_kubernetes_service_name"] = service["metadata"]["name"]
        common.update(map_labels("__meta_kubernetes_service", "label", service["metadata"].get("labels")))
        common.update(map_labels("__meta_kubernetes_service", "annotation", service["metadata"].get("annotations")))
    out = []
    for subset in endpoints.get("subsets") or []:
        for ready, key in (("true", "addresses"), ("false", "notReadyAddresses")):
            for address in subset.get(key) or []:
                for port in subset.get("ports") or []:
                    labels = {**common, "__meta_kubernetes_endpoint_ready": ready,
                              "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                              "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP")}
                    if address.get("hostname"):
                        labels["__meta_kubernetes_endpoint_hostname"] = address["hostname"]
                    if address.get("nodeName"):
                        labels["__meta_kubernetes_endpoint_node_name"] = address["nodeName"]
                    ref = address.get("targetRef") or {}
                    if ref.get("kind"):
                        labels["__meta_kubernetes_endpoint_address_target_kind"] = ref["kind"]
                        labels["__meta_kubernetes_endpoint_address_target_name"] = ref.get("name", "")
                    pod = pods.get((ref.get("namespace", meta["namespace"]), ref.get("name", ""))) \
                        if ref.get("kind") == "Pod" else None
                    if pod is not None:
                        labels.update(_pod_meta(pod))
                        labels.update(_serving_container(pod, port["port"]))
                    out.append({"targets": [f"{address['ip']}:{port['port']}"], "labels": labels})
    return out


def _serving_container(pod: dict, number: int) -> dict[str, str]:
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port["containerPort"] == number:
                return _container_meta(container, port, False)
    return {}


def write_file_sd(path: Path, targets: list[dict]) -> None:
    """Replace a file_sd file whole (Prometheus re-reads it on change, never half-written)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets))
    tmp.replace(path)


class KubeSD:
    """Polls an API server (a kubernetes ApiClient) for pods, endpoints and services in every
    namespace and keeps `files[role]` (role "pod", "endpoints") in file_sd format."""

    def __init__(self, api_client, files: dict[str, Path], interval: float = 1.0):
        self.api, self.files, self.interval = api_client, files, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kube-sd", daemon=True)
        self.error: BaseException | None = None

    def _list(self, kind: str) -> list[dict]:
        """The API server's own JSON (camelCase), as Prometheus reads it."""
        from kubernetes import client
        method = getattr(client.CoreV1Api(self.api), f"list_{kind}_for_all_namespaces")
        return json.loads(method(_preload_content=False, _request_timeout=10).data)["items"]

    def discover(self) -> dict[str, list[dict]]:
        pods = self._list("pod")
        by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in self._list("service")}
        endpoints = self._list("endpoints")
        return {"pod": [t for p in pods for t in pod_targets(p)],
                "endpoints": [t for e in endpoints for t in endpoints_targets(
                    e, services.get((e["metadata"]["namespace"], e["metadata"]["name"])), by_name)]}

    def write(self) -> None:
        for role, targets in self.discover().items():
            write_file_sd(self.files[role], targets)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except Exception as exc:  # noqa: BLE001 - kept for the test to report; discovery goes on
                self.error = exc

    def start(self) -> "KubeSD":
        self.write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
