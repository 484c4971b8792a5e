"""The API-client edge: thin, synchronous calls of the kubernetes client on plain dicts.

Handlers call these through `asyncio.to_thread`. Responses are read raw (`_preload_content=False`)
so objects stay camelCase dicts, the same shape the builders produce and reconcile reads.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from stepshot.manifests import ANNOTATION_SUSPENDED_BY, SUSPENDED_BY_OPERATOR
from stepshot.spec import GROUP, PLURAL, VERSION

SNAPSHOT_GROUP, SNAPSHOT_VERSION = "snapshot.storage.k8s.io", "v1"


def load_config(connections: int = 32) -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    default = client.Configuration.get_default_copy()
    default.connection_pool_maxsize = connections   # one per API worker thread
    client.Configuration.set_default(default)


def api_message(exc: ApiException) -> str:
    """The API server's own words for a refused request (its Status message), cut short."""
    try:
        text = json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        text = exc.reason or str(exc)
    return f"{exc.status} {text}"[:400]


def _json(response: Any) -> Any:
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def _done(response: Any) -> None:
    """Read and release a raw response we do not need: an unreleased one keeps its connection
    out of the pool, and the next request pays a new TLS handshake (the operator's main CPU
    cost under load, measured with py-spy)."""
    response.read()
    response.release_conn()


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None):
        self.api = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # ------------------------------------------------------------------ discovery
    def discover(self) -> dict[str, Any]:
        """Server version (Indexed Jobs, Job suspend) and whether VolumeSnapshots are served."""
        info = client.VersionApi(self.api).get_code()
        minor = int(re.match(r"\d+", info.minor).group())
        groups = client.ApisApi(self.api).get_api_versions().groups
        snapshots = any(g.name == SNAPSHOT_GROUP and any(v.version == SNAPSHOT_VERSION for v in g.versions)
                        for g in groups)
        return {"version": (int(info.major), minor), "volume_snapshots": snapshots}

    # ------------------------------------------------------------------ the resource
    def get_training(self, namespace: str, name: str) -> dict | None:
        try:
            return _json(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_training_status(self, namespace: str, name: str, status: dict) -> None:
        # Merge patch without resourceVersion: status is recomputed wholly from the cluster each
        # time, so the last writer being right is all that matters (no 409 retry loops).
        _done(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _preload_content=False))

    def delete_training(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    # ------------------------------------------------------------------ children
    def list_jobs(self, namespace: str, selector: str) -> dict[str, dict]:
        items = _json(self.batch.list_namespaced_job(namespace, label_selector=selector,
                                                     _preload_content=False))["items"]
        return {job["metadata"]["name"]: job for job in items}

    def list_pods(self, namespace: str, selector: str) -> list[dict]:
        """The children's pods (read by stepshot_operator.pods: terminations, why one cannot start)."""
        return _json(self.core.list_namespaced_pod(namespace, label_selector=selector,
                                                   _preload_content=False))["items"]

    def get_config_map(self, namespace: str, name: str) -> dict | None:
        try:
            return _json(self.core.read_namespaced_config_map(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_volume_snapshots(self, namespace: str, selector: str) -> dict[str, dict]:
        items = _json(self.custom.list_namespaced_custom_object(
            SNAPSHOT_GROUP, SNAPSHOT_VERSION, namespace, "volumesnapshots", label_selector=selector,
            _preload_content=False))["items"]
        return {vs["metadata"]["name"]: vs for vs in items}

    def create(self, obj: dict) -> bool:
        """Create a child; True if created, False if it already existed (idempotent)."""
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        try:
            if kind == "Job":
                _done(self.batch.create_namespaced_job(ns, obj, _preload_content=False))
            elif kind == "Service":
                _done(self.core.create_namespaced_service(ns, obj, _preload_content=False))
            elif kind == "ConfigMap":
                _done(self.core.create_namespaced_config_map(ns, obj, _preload_content=False))
            elif kind == "ServiceAccount":
                _done(self.core.create_namespaced_service_account(ns, obj, _preload_content=False))
            elif kind == "VolumeSnapshot":
                _done(self.custom.create_namespaced_custom_object(
                    SNAPSHOT_GROUP, SNAPSHOT_VERSION, ns, "volumesnapshots", obj, _preload_content=False))
            else:
                raise ValueError(f"no create for kind {kind}")
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def get_child(self, kind: str, namespace: str, name: str) -> dict | None:
        """A child as it is now (None: absent), read with the verbs the operator's role already
        has: Jobs and VolumeSnapshots are listed by name, ConfigMaps and Services read."""
        field = f"metadata.name={name}"
        if kind == "Job":
            items = _json(self.batch.list_namespaced_job(namespace, field_selector=field,
                                                         _preload_content=False))["items"]
            return items[0] if items else None
        if kind == "VolumeSnapshot":
            items = _json(self.custom.list_namespaced_custom_object(
                SNAPSHOT_GROUP, SNAPSHOT_VERSION, namespace, "volumesnapshots", field_selector=field,
                _preload_content=False))["items"]
            return items[0] if items else None
        read = {"ConfigMap": self.core.read_namespaced_config_map,
                "Service": self.core.read_namespaced_service}[kind]
        try:
            return _json(read(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        """Suspend (marking the Job as suspended by the operator) or resume (dropping the mark)."""
        mark = SUSPENDED_BY_OPERATOR if suspend else None
        _done(self.batch.patch_namespaced_job(
            name, namespace, {"metadata": {"annotations": {ANNOTATION_SUSPENDED_BY: mark}}, "spec": {"suspend": suspend}},
            _preload_content=False))

    def post_event(self, body: dict, type_: str, reason: str, message: str, attempts: int = 4,
                   name: str | None = None) -> None:
        """A core/v1 Event on the resource, with retries: a transition's Event is not dropped
        because one request failed (kopf's own poster only works inside its handlers). With a
        `name`, an Event of that name that already exists counts as posted (idempotent)."""
        meta = body["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        named = {"name": name} if name else {"generateName": f"{meta['name']}."}
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {**named, "namespace": meta["namespace"]},
                 "involvedObject": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                                    "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
                 "type": type_, "reason": reason, "message": message[:1024],
                 "source": {"component": "stepshot-operator"}, "firstTimestamp": now, "lastTimestamp": now,
                 "count": 1, "reportingComponent": "stepshot-operator"}
        for attempt in range(attempts):
            try:
                _done(self.core.create_namespaced_event(meta["namespace"], event, _preload_content=False))
                return
            except ApiException as exc:
                if name and exc.status == 409:   # posted by an earlier pass that died before its status write
                    return
                transient = exc.status is None or exc.status >= 500 or exc.status == 429
                if not transient or attempt == attempts - 1:
                    raise
            time.sleep(0.2 * 2 ** attempt)

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods (404: already gone)."""
        try:
            _done(self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                                   _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise
