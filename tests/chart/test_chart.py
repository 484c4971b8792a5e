"""The Helm chart: lint, install into the real API server, and RBAC that is exactly enough.

Helm runs in-process through the PyPI wheel `helm-sdkpy` (the Helm 4 Go library; no helm
binary exists here). The API server is the project's real kube-apiserver + etcd
(tests/apiserver.py): no kubelet, no Job controller, no token controller.

RBAC sufficiency: the operator runs out of the cluster (a subprocess with the flags the
chart's Deployment passes) under the identity of the chart's ServiceAccount. Its token comes
from the TokenRequest API (`serviceaccounts/token`), which the API server serves itself
because it has a service-account signing key: a real, bound ServiceAccount token, no token
controller and no static token file needed. The test plays the Job controller and the
kubelet (Job status, a terminated evaluation pod), the operator drives a partitioned
pipeline to Succeeded, and its ttlSecondsAfterFinished deletes the resource. The operator's
log must show no refused request. Then the same identity is refused what its role does not
grant (Jobs outside its namespaces, Secrets, Pods, deleting every Job at once, ...).
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from apiserver import free_port, stub_crd as _crd  # tests/ is on sys.path (conftest)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stepshot"
DASHBOARD = ROOT / "dashboards" / "stepshot.json"
GROUP, VERSION, PLURAL = "stepshot.dev", "v1alpha1", "supernettrainings"

helm_sdkpy = pytest.importorskip(
    "helm_sdkpy", reason="pip install --ignore-requires-python helm-sdkpy==0.1.32")


def _run(coro):
    return asyncio.run(coro)


def _lint(chart_dir: Path) -> list[dict]:
    cfg = helm_sdkpy.Configuration(namespace="default")
    result = _run(helm_sdkpy.Lint(cfg).run(str(chart_dir)))
    return [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= 2]  # 2 warning, 3 error


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---------------------------------------------------------------------------------------
# offline
def test_chart_crd_is_the_generated_one():
    chart_crd = CHART / "crds" / "supernettraining.yaml"
    source = ROOT / "crds" / "supernettraining.yaml"
    assert chart_crd.exists() and source.exists(), "run scripts/gen-crds.py"
    assert yaml.safe_load(chart_crd.read_text()) == yaml.safe_load(source.read_text())
    from stepshot.spec import crd
    assert yaml.safe_load(chart_crd.read_text()) == crd()


# docs/cluster.md's InfiniBand example of trainer.podDefaults
INFINIBAND_DEFAULTS = {"env": [{"name": "NCCL_IB_HCA", "value": "mlx5"}, {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"}],
                       "training": {"extraResources": {"rdma/hca_shared_devices_a": "1"}, "capabilities": ["IPC_LOCK"]}}
LINT_CASES = {
    "defaults": {},
    "namespaced-several": {"watchNamespaces": ["team-a", "team-b"],
                           "monitoring": {"serviceMonitor": {"enabled": True},
                                          "podMonitor": {"enabled": True}}},
    "cluster-all": {"rbac": {"mode": "cluster"}, "monitoring": {"podMonitor": {"enabled": True}}},
    "cluster-patterns": {"rbac": {"mode": "cluster"}, "watchNamespaces": ["team-*"]},
    "gpu-cluster": {"monitoring": {"prometheusRule": {"enabled": True, "stalledMinutes": 45},
                                   "podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}},
                    "networkPolicy": {"enabled": True},
                    "trainer": {"imagePullSecrets": [{"name": "regcred"}], "allowedCapabilities": ["IPC_LOCK"],
                                "podDefaults": INFINIBAND_DEFAULTS}},
    "minimal": {"rbac": {"crdWatch": False, "volumeSnapshots": False}, "dashboard": {"enabled": False},
                "metrics": {"service": {"enabled": False}},
                "trainer": {"serviceAccount": {"create": False}}},
}


@pytest.mark.parametrize("case", sorted(LINT_CASES))
def test_lint(case, tmp_path):
    """helm lint (no warnings, no errors) with the defaults and with each mode's values."""
    chart = tmp_path / "stepshot"
    shutil.copytree(CHART, chart)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (chart / "values.yaml").write_text(yaml.safe_dump(_deep_merge(values, LINT_CASES[case])))
    assert _lint(chart) == []


@pytest.mark.parametrize("values,where", [
    ({"monitoring": {"serviceMonitr": {"enabled": True}}}, "serviceMonitr"),
    ({"trainer": {"tolerations": []}}, "tolerations"),
    ({"rbac": {"mode": "clusterwide"}}, "mode"),
    ({"operator": {"metricsPort": "8080"}}, "metricsPort"),
    ({"trainer": {"podDefaults": {"training": {"extraResorces": {"rdma/hca": "1"}}}}}, "extraResorces"),
    ({"trainer": {"podDefaults": {"env": [{"name": "NCCL DEBUG", "value": "1"}]}}}, "env name"),
    ({"trainer": {"allowHostNetwork": "yes"}}, "allowHostNetwork"),
])
def test_unknown_or_mistyped_values_are_refused(values, where, tmp_path):
    """values.schema.json: a misspelled or unknown value is an error, not silently ignored."""
    chart = tmp_path / "stepshot"
    shutil.copytree(CHART, chart)
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    (chart / "values.yaml").write_text(yaml.safe_dump(_deep_merge(base, values)))
    # helm-sdkpy reports the schema error without its text: the file it is in is what we can see
    assert [m["Path"] for m in _lint(chart) if m["Severity"] == 3][:1] == ["values.yaml"], where


def test_values_schema_is_generated_from_values_yaml():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-values-schema.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("monitors", [{"podMonitor": {"enabled": True}}, {"serviceMonitor": {"enabled": True}}])
def test_alerts_without_both_monitors_are_refused(monitors, tmp_path):
    """The PrometheusRule reads the operator's and the stage pods' series: without a monitor
    StepshotRunStalled would see no progress and fire on every long stage."""
    chart = tmp_path / "stepshot"
    shutil.copytree(CHART, chart)
    values = _deep_merge(yaml.safe_load((CHART / "values.yaml").read_text()),
                         {"monitoring": {"prometheusRule": {"enabled": True}, **monitors}})
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    # values.schema.json's rule (helm lint does not evaluate the template's `fail`)
    assert [m["Path"] for m in _lint(chart) if m["Severity"] == 3][:1] == ["values.yaml"]


def test_lint_catches_template_errors(tmp_path):
    chart = tmp_path / "stepshot"
    shutil.copytree(CHART, chart)
    with open(chart / "templates" / "service.yaml", "a") as f:
        f.write("\n{{ .Values.no.such.key }}\n")
    assert any(m["Severity"] == 3 for m in _lint(chart))


def test_values_are_documented():
    """Every top-level values key has a comment right above it or inside its block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#")) and ":" in line:
            block = []
            for nxt in lines[i + 1:]:
                if nxt and not nxt.startswith((" ", "#")):
                    break
                block.append(nxt)
            above = lines[i - 1] if i else ""
            assert above.startswith("#") or any(b.strip().startswith("#") for b in block), line


# ---------------------------------------------------------------------------------------
# the real API server
@pytest.fixture(scope="module")
def cluster(apiserver):
    """Admin clients and kubeconfig of the test API server (tests/apiserver.py)."""
    from kubernetes import client

    api = apiserver.client()
    return {"server": apiserver, "kubeconfig": str(apiserver.kubeconfig), "api": api,
            "core": client.CoreV1Api(api), "apps": client.AppsV1Api(api),
            "batch": client.BatchV1Api(api), "rbac": client.RbacAuthorizationV1Api(api),
            "custom": client.CustomObjectsApi(api), "ext": client.ApiextensionsV1Api(api),
            "authz": client.AuthorizationV1Api(api)}


def _ensure_ns(cluster, *names: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    for name in names:
        try:
            cluster["core"].create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        except ApiException as exc:
            if exc.status != 409:
                raise


def _apply_crd(cluster, body: dict) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster["ext"].create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    name = body["metadata"]["name"]
    for _ in range(100):
        crd = cluster["ext"].read_custom_resource_definition(name)
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        time.sleep(0.1)
    raise AssertionError(f"CRD {name} not established")


def _install(cluster, namespace: str, release: str, values: dict) -> dict:
    cfg = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=cluster["kubeconfig"])
    return _run(helm_sdkpy.Install(cfg).run(release, str(CHART), values=values, wait=False,
                                            create_namespace=True, timeout=120))


def _uninstall(cluster, namespace: str, release: str) -> None:
    cfg = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=cluster["kubeconfig"])
    _run(helm_sdkpy.Uninstall(cfg).run(release, wait=False, timeout=60))


def client_networking(cluster):
    from kubernetes import client
    return client.NetworkingV1Api(cluster["core"].api_client)


def _operator_args(deployment) -> list[str]:
    (container,) = deployment.spec.template.spec.containers
    assert not container.command, "the image's ENTRYPOINT (stepshot-operator) runs"
    return list(container.args)


def _rules(role) -> set[tuple]:
    return {(g, r, v) for rule in role.rules for g in rule.api_groups or [""]
            for r in rule.resources or [] for v in rule.verbs}


def _expand(rules: list[tuple[str, list[str], list[str]]]) -> set[tuple]:
    return {(g, r, v) for g, resources, verbs in rules for r in resources for v in verbs}


# exactly what the operator calls (operator/stepshot_operator/k8s.py, handlers.py) + kopf
NAMESPACED_RULES = _expand([
    ("stepshot.dev", ["supernettrainings"], ["get", "list", "watch", "delete"]),
    ("stepshot.dev", ["supernettrainings/status"], ["patch"]),
    ("batch", ["jobs"], ["create", "list", "watch", "patch", "delete"]),
    ("", ["pods"], ["list"]),
    ("", ["configmaps"], ["create", "get"]),
    ("", ["services"], ["create", "get"]),
    ("", ["serviceaccounts"], ["create"]),
    ("", ["events"], ["create"]),
    ("snapshot.storage.k8s.io", ["volumesnapshots"], ["create", "list"]),
])
CRD_WATCH_RULES = _expand([("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"])])

NS_RELEASE, NS_TEAM, NS_OTHER = "ss-op", "ss-team", "ss-other"
NS_CLUSTER = "ss-cl"


@pytest.fixture(scope="module")
def monitoring_crds(cluster):
    """prometheus-operator's ServiceMonitor/PodMonitor kinds (schema-less stand-ins)."""
    _apply_crd(cluster, _crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"))
    _apply_crd(cluster, _crd("monitoring.coreos.com", "PodMonitor", "podmonitors"))
    _apply_crd(cluster, _crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules"))


@pytest.fixture(scope="module")
def namespaced_release(cluster, monitoring_crds):
    _ensure_ns(cluster, NS_TEAM, NS_OTHER)
    values = {"watchNamespaces": [NS_RELEASE, NS_TEAM],
              "monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                             "prometheusRule": {"enabled": True}},
              "trainer": {"imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}]},
              "networkPolicy": {"enabled": True, "metricsFrom": [
                  {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}}
    result = _install(cluster, NS_RELEASE, "stepshot", values)
    yield result
    _uninstall(cluster, NS_RELEASE, "stepshot")


@pytest.fixture(scope="module")
def cluster_release(cluster):
    result = _install(cluster, NS_CLUSTER, "cl", {"rbac": {"mode": "cluster"},
                                                  "trainer": {"extraVolumeTypes": ["hostPath", "secret"],
                                                              "allowedImages": r"registry\.example\.com/.*",
                                                              "podDefaults": INFINIBAND_DEFAULTS,
                                                              "allowHostNetwork": True,
                                                              "allowedCapabilities": ["IPC_LOCK"]}})
    yield result
    _uninstall(cluster, NS_CLUSTER, "cl")


@pytest.mark.apiserver
def test_install_namespaced_mode(cluster, namespaced_release):
    from stepshot_operator.__main__ import _parser

    assert namespaced_release["info"]["status"] == "deployed"
    apps, core, rbac = cluster["apps"], cluster["core"], cluster["rbac"]

    dep = apps.read_namespaced_deployment("stepshot", NS_RELEASE)
    assert dep.spec.replicas == 1 and dep.spec.strategy.type == "Recreate"
    pod = dep.spec.template.spec
    assert pod.service_account_name == "stepshot"
    assert pod.security_context.run_as_non_root is True and pod.security_context.run_as_user == 1000
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    (c,) = pod.containers
    assert c.security_context.read_only_root_filesystem is True
    assert c.security_context.allow_privilege_escalation is False
    assert c.security_context.capabilities.drop == ["ALL"]
    assert c.resources.requests and c.resources.limits
    probe = c.liveness_probe.http_get
    assert probe.path == "/healthz" and probe.port == "health"
    ports = {p.name: p.container_port for p in c.ports}
    assert ports == {"metrics": 8080, "health": 8081}
    args = _parser().parse_args(_operator_args(dep))
    assert args.standalone and args.namespace == [NS_RELEASE, NS_TEAM] and not args.all_namespaces
    assert args.liveness == "http://0.0.0.0:8081/healthz" and args.metrics_port == 8080
    env = {e.name: e.value for e in c.env}
    assert env["STEPSHOT_TRAINER_SERVICE_ACCOUNT"] == "stepshot-trainer"
    assert env["STEPSHOT_TRAINER_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert "STEPSHOT_EXTRA_VOLUME_TYPES" not in env        # only the safe data volume types by default
    assert not {"STEPSHOT_POD_DEFAULTS", "STEPSHOT_ALLOW_HOST_NETWORK", "STEPSHOT_ALLOWED_CAPABILITIES"} & set(env)
    assert {v.name for v in pod.volumes} == {"tmp"}

    assert core.read_namespaced_service_account("stepshot", NS_RELEASE)
    for ns in (NS_RELEASE, NS_TEAM):
        trainer = core.read_namespaced_service_account("stepshot-trainer", ns)
        assert trainer.automount_service_account_token is False
        assert [s.name for s in trainer.image_pull_secrets] == ["regcred", "mirror"]
        role = rbac.read_namespaced_role("stepshot", ns)
        assert _rules(role) == NAMESPACED_RULES
        binding = rbac.read_namespaced_role_binding("stepshot", ns)
        assert binding.role_ref.kind == "Role" and binding.role_ref.name == "stepshot"
        assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
            ("ServiceAccount", "stepshot", NS_RELEASE)]
    assert not rbac.list_namespaced_role(NS_OTHER).items
    assert not core.list_namespaced_service_account(NS_OTHER, label_selector="app.kubernetes.io/instance=stepshot").items
    # the trainer identity is bound to nothing
    for b in rbac.list_role_binding_for_all_namespaces().items + rbac.list_cluster_role_binding().items:
        assert not any(s.name == "stepshot-trainer" for s in b.subjects or []), b.metadata.name
    crd_watch = rbac.read_cluster_role("stepshot-crd-watch")
    assert _rules(crd_watch) == CRD_WATCH_RULES
    assert not [r for r in rbac.list_cluster_role().items if r.metadata.name == "stepshot"]

    policy = client_networking(cluster).read_namespaced_network_policy("stepshot", NS_RELEASE)
    assert policy.spec.policy_types == ["Ingress"] and policy.spec.pod_selector.match_labels == dep.spec.selector.match_labels
    [rule] = policy.spec.ingress
    assert [p.port for p in rule.ports] == ["metrics"] and rule._from[0].namespace_selector.match_labels == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert "--metrics-address=0.0.0.0" in _operator_args(dep)

    svc = core.read_namespaced_service("stepshot-metrics", NS_RELEASE)
    assert [(p.name, p.port, p.target_port) for p in svc.spec.ports] == [("metrics", 8080, "metrics")]
    assert svc.spec.selector == dep.spec.selector.match_labels

    cm = core.read_namespaced_config_map("stepshot-dashboard", NS_RELEASE)
    assert cm.metadata.labels["grafana_dashboard"] == "1"
    assert json.loads(cm.data["stepshot.json"]) == json.loads(DASHBOARD.read_text())

    crd = cluster["ext"].read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    assert crd.spec.names.kind == "SupernetTraining"

    sm = cluster["custom"].get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", NS_RELEASE, "servicemonitors", "stepshot")
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    assert sm["spec"]["selector"]["matchLabels"] == dep.spec.selector.match_labels
    pm = cluster["custom"].get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", NS_RELEASE, "podmonitors", "stepshot-trainer")
    assert pm["spec"]["selector"]["matchExpressions"] == [
        {"key": "stepshot.dev/training", "operator": "Exists"}]
    assert pm["spec"]["namespaceSelector"] == {"matchNames": [NS_RELEASE, NS_TEAM]}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def _selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if not {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]:
            return False
    return True


@pytest.mark.apiserver
def test_the_networkpolicy_confines_the_operator_and_leaves_stage_traffic_alone(cluster, namespaced_release):
    """networkPolicy.enabled: every policy the chart installs selects the operator pod, never a
    stage pod in the same namespace, so a multi-node stage's rendezvous (29500) and gloo/NCCL
    collective ports stay open (a pod no policy selects is not isolated). The local node's CNI
    bridge enforces no NetworkPolicy, so this is checked here, on the selectors."""
    from stepshot import manifests
    from stepshot import plan as planmod
    from stepshot import spec as specmod
    policies = client_networking(cluster).list_namespaced_network_policy(NS_RELEASE).items
    assert policies, "networkPolicy.enabled installed no NetworkPolicy"
    operator_labels = cluster["apps"].read_namespaced_deployment("stepshot", NS_RELEASE).spec.template.metadata.labels
    doc = {**_training("multi", ttl=None), "metadata": {"name": "multi", "namespace": NS_RELEASE}}   # nodes: 2
    spec = specmod.load(doc)
    for caps in (manifests.ClusterCaps(), manifests.ClusterCaps(version=(1, 20))):   # Indexed Job, Job per node
        ctx = manifests.Context(spec, planmod.build_plan(spec), caps)
        pods = [o["spec"]["template"]["metadata"]["labels"] for o in manifests.all_objects(ctx) if o["kind"] == "Job"]
        assert any(l["stepshot.dev/component"] == "train" for l in pods)
        for policy in policies:
            selector = cluster["core"].api_client.sanitize_for_serialization(policy.spec.pod_selector)
            assert _selects(selector, operator_labels), policy.metadata.name
            assert not [l for l in pods if _selects(selector, l)], policy.metadata.name


@pytest.mark.apiserver
def test_alert_rules_pass_promtool(cluster, namespaced_release, tmp_path):
    from promtool import promtool_path

    rule = cluster["custom"].get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", NS_RELEASE, "prometheusrules", "stepshot")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"StepshotRunFailed", "StepshotRunStalled", "StepshotOperatorReconcileErrors"}
    assert "> 1800" in alerts["StepshotRunStalled"]["expr"]        # stalledMinutes 30
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool_path(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.apiserver
@pytest.mark.parametrize("version", ["1.28.0", "1.31.0"])
def test_installed_manifests_pass_strict_schemas(namespaced_release, cluster_release, version):
    import kubernetes_validate

    for release in (namespaced_release, cluster_release):
        for doc in yaml.safe_load_all(release["manifest"]):
            if doc and doc["apiVersion"] != "monitoring.coreos.com/v1":   # prometheus-operator's own CRDs
                kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.apiserver
def test_install_cluster_mode(cluster, cluster_release):
    from stepshot_operator.__main__ import _parser

    rbac = cluster["rbac"]
    dep = cluster["apps"].read_namespaced_deployment("cl-stepshot", NS_CLUSTER)
    args = _parser().parse_args(_operator_args(dep))
    assert args.all_namespaces and not args.namespace and args.standalone
    (container,) = dep.spec.template.spec.containers
    env = {e.name: e.value for e in container.env}
    assert env["STEPSHOT_EXTRA_VOLUME_TYPES"] == "hostPath,secret"
    assert env["STEPSHOT_ALLOWED_IMAGES"] == r"registry\.example\.com/.*"
    assert env["STEPSHOT_ALLOW_HOST_NETWORK"] == "true" and env["STEPSHOT_ALLOWED_CAPABILITIES"] == "IPC_LOCK"
    from stepshot_operator.handlers import admin_settings   # what the operator makes of them
    admin = admin_settings(env)
    assert admin["pod_defaults"] == INFINIBAND_DEFAULTS and admin["host_network"] is True
    assert admin["capabilities"] == {"IPC_LOCK"}
    role = rbac.read_cluster_role("cl-stepshot")
    # all namespaces: kopf needs no namespace listing (only for --namespace patterns)
    assert _rules(role) == NAMESPACED_RULES | CRD_WATCH_RULES
    binding = rbac.read_cluster_role_binding("cl-stepshot")
    assert binding.role_ref.kind == "ClusterRole" and binding.role_ref.name == "cl-stepshot"
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", "cl-stepshot", NS_CLUSTER)]
    assert not rbac.list_namespaced_role(NS_CLUSTER).items
    assert not rbac.list_namespaced_role_binding(NS_CLUSTER).items
    sa = cluster["core"].read_namespaced_service_account("cl-stepshot-trainer", NS_CLUSTER)
    assert sa.automount_service_account_token is False


# ---------------------------------------------------------------------------------------
# RBAC sufficiency: the operator with the chart's ServiceAccount identity
def _sa_kubeconfig(cluster, namespace: str, sa: str) -> Path:
    """A kubeconfig with a bound token of the chart's ServiceAccount (TokenRequest API)."""
    cluster["core"].read_namespaced_service_account(sa, namespace)  # made by the chart, not here
    return cluster["server"].serviceaccount_kubeconfig(namespace, sa)


def _training(name: str, ttl: int | None = 5) -> dict:
    """Two-node stages (headless Services), 2 partitions, snapshots, evaluation, TTL."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SupernetTraining",
            "metadata": {"name": name},
            "spec": {"space": "resnet48-fmnist",
                     "dataset": {"kind": "fashion-mnist", "path": "/data/fashion-mnist",
                                 "volume": {"persistentVolumeClaim": {"claimName": "fashion-mnist"}}},
                     "storage": {"claimName": "workdir", "snapshot": "auto"},
                     "resources": {"nodes": 2, "procsPerNode": 1, "cpu": "1", "memory": "1Gi"},
                     "oneShot": {"epochs": 1, "lr": 0.1},
                     "fewShot": {"mode": "partitioned", "epochs": 1, "lr": 0.01,
                                 "steps": [{"dimension": "width", "stage": 4, "parts": 2}],
                                 "maxParallel": 2},
                     "evaluation": {"groundTruth": "/data/gt.json"},
                     **({"ttlSecondsAfterFinished": ttl} if ttl is not None else {})}}


class JobController:
    """Plays the Job controller and the kubelet (tests/apiserver.py helpers): every Job of
    `fail` fails, every other Job completes; snapshot and evaluation pods terminate with the
    message their real commands write."""

    def __init__(self, cluster, namespace: str, tau: float, fail: str | None = None):
        self.cluster, self.namespace, self.tau, self.fail = cluster, namespace, tau, fail
        self.done: set[str] = set()

    def step(self) -> None:
        from apiserver import finish_job, result_message, terminated_pod

        batch, core = self.cluster["batch"], self.cluster["core"]
        for job in batch.list_namespaced_job(self.namespace, label_selector="stepshot.dev/training").items:
            name = job.metadata.name
            if name in self.done:
                continue
            labels = job.spec.template.metadata.labels or {}
            if labels.get("stepshot.dev/training") == self.fail:
                finish_job(batch, self.namespace, name, ok=False)
            else:
                message = result_message(labels, tau=self.tau)
                if message:
                    terminated_pod(core, job, message)
                finish_job(batch, self.namespace, name, ok=True)
            self.done.add(name)


def _refused(fn) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        fn()
    except ApiException as exc:
        return exc.status
    return 200


def _can(cluster, user: str, groups: list[str], verb: str, resource: str, namespace: str | None,
         group: str = "") -> bool:
    from kubernetes import client

    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user, groups=groups, resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=resource, namespace=namespace, group=group)))
    return cluster["authz"].create_subject_access_review(review).status.allowed


@pytest.fixture(scope="module")
def snapshot_crd(cluster):
    """VolumeSnapshot served, so the operator lists and creates them (spec.storage.snapshot: auto)."""
    body = _crd("snapshot.storage.k8s.io", "VolumeSnapshot", "volumesnapshots")
    _apply_crd(cluster, body)
    yield
    # removed again: other tests of the session may want a server without VolumeSnapshots
    cluster["ext"].delete_custom_resource_definition(body["metadata"]["name"])


@pytest.mark.apiserver
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["namespaced", "cluster"])
def test_operator_completes_a_pipeline_with_the_chart_rbac(mode, cluster, request, snapshot_crd, tmp_path):
    from kubernetes import client, config
    from stepshot_operator import k8s as operator_k8s

    if mode == "namespaced":
        request.getfixturevalue("namespaced_release")
        release_ns, sa, work_ns = NS_RELEASE, "stepshot", NS_TEAM
        deployment = "stepshot"
    else:
        request.getfixturevalue("cluster_release")
        release_ns, sa, work_ns = NS_CLUSTER, "cl-stepshot", "ss-cl-work"
        deployment = "cl-stepshot"
        _ensure_ns(cluster, work_ns)
    kubeconfig = _sa_kubeconfig(cluster, release_ns, sa)

    # the Deployment's own arguments, with free local ports and a fast resync
    dep = cluster["apps"].read_namespaced_deployment(deployment, release_ns)
    metrics_port, health_port = free_port(), free_port()
    args = []
    for arg in _operator_args(dep):
        if arg.startswith("--metrics-port="):
            arg = f"--metrics-port={metrics_port}"
        elif arg.startswith("--liveness="):
            arg = f"--liveness=http://127.0.0.1:{health_port}/healthz"
        args.append(arg)
    env = {**cluster["server"].env(), "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    log_path = tmp_path / "operator.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stepshot_operator", *args, "--resync=1", "--verbose"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    name = f"rbac-{mode}"
    custom = cluster["custom"]
    try:
        # liveness endpoint up
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
        # one resource that succeeds, one whose one-shot Job fails (a Warning Event)
        failing = f"{name}-fail"
        custom.create_namespaced_custom_object(GROUP, VERSION, work_ns, PLURAL, _training(name))
        custom.create_namespaced_custom_object(GROUP, VERSION, work_ns, PLURAL, _training(failing, ttl=None))
        controller = JobController(cluster, work_ns, tau=0.625, fail=failing)
        deadline = time.monotonic() + 180
        phases = {}
        while time.monotonic() < deadline:
            controller.step()
            phases = {n: (custom.get_namespaced_custom_object(GROUP, VERSION, work_ns, PLURAL, n)
                          .get("status") or {}) for n in (name, failing)}
            if all(st.get("phase") in ("Succeeded", "Failed") for st in phases.values()):
                break
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        status = phases[name]
        assert status.get("phase") == "Succeeded", (phases, log_path.read_text()[-3000:])
        assert status["result"]["kendallTau"] == 0.625
        assert phases[failing].get("phase") == "Failed", phases[failing]

        # the operator's metrics endpoint serves what the dashboard queries
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert f'stepshot_kendall_tau{{name="{name}",namespace="{work_ns}"}} 0.625' in text

        kinds = {}
        for job in cluster["batch"].list_namespaced_job(work_ns, label_selector=f"stepshot.dev/training={name}").items:
            comp = job.metadata.labels.get("stepshot.dev/component")
            kinds[comp] = kinds.get(comp, 0) + 1
        assert kinds["train"] >= 2 * 3 and kinds["snapshot"] == 3 and kinds["evaluate"] == 1, kinds
        assert cluster["core"].list_namespaced_service(work_ns, label_selector=f"stepshot.dev/training={name}").items
        assert cluster["core"].list_namespaced_config_map(work_ns, label_selector=f"stepshot.dev/training={name}").items
        snaps = custom.list_namespaced_custom_object("snapshot.storage.k8s.io", "v1", work_ns, "volumesnapshots",
                                                     label_selector=f"stepshot.dev/training={name}")["items"]
        assert len(snaps) == 3
        # stage Events are posted with the operator's identity (kopf.warn on the failure)
        deadline = time.monotonic() + 20
        while not any(e.involved_object.name == failing and e.type == "Warning"
                      for e in cluster["core"].list_namespaced_event(work_ns).items):
            assert time.monotonic() < deadline, "no Warning Event for the failed resource"
            time.sleep(0.5)

        # ttlSecondsAfterFinished: the operator deletes the resource itself
        from kubernetes.client.exceptions import ApiException
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, work_ns, PLURAL, name)
            except ApiException as exc:
                assert exc.status == 404
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the operator did not delete the finished resource after its TTL")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    log = log_path.read_text()
    # In namespaced mode kopf tries to list namespaces (it cannot know that the names it was
    # given are not patterns), is refused, and falls back to the given names: expected.
    refused = [ln for ln in log.splitlines()
               if re.search(r"forbidden|[^\d,.:]403(?!\d)", ln, re.I)
               and not (mode == "namespaced" and ('resource "namespaces"' in ln
                                                   or "permissions to list namespaces" in ln
                                                   or "permissions to watch for namespaces" in ln))]
    assert not refused, "\n".join(refused[:20])

    # ... and is refused where its role gives no right
    api = config.new_client_from_config(config_file=str(kubeconfig))  # the operator's identity
    kube = operator_k8s.Kube(api)
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "not-allowed", "namespace": NS_OTHER},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "x"}]}}}}
    _ensure_ns(cluster, NS_OTHER)
    if mode == "namespaced":
        assert _refused(lambda: kube.create(job)) == 403          # outside the watched namespaces
        assert _refused(lambda: kube.list_jobs(NS_OTHER, "a=b")) == 403
    assert _refused(lambda: core.list_namespaced_secret(work_ns)) == 403
    assert _refused(lambda: core.read_namespaced_secret("x", release_ns)) == 403
    assert _refused(lambda: core.create_namespaced_pod(work_ns, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}})) == 403
    assert _refused(lambda: batch.delete_collection_namespaced_job(work_ns)) == 403
    assert _refused(lambda: core.list_namespace()) == 403
    assert _refused(lambda: client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, work_ns, PLURAL, _training("forged"))) == 403
    assert _refused(lambda: client.RbacAuthorizationV1Api(api).create_namespaced_role(work_ns, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
        "rules": []})) == 403
    if mode == "namespaced":
        user = f"system:serviceaccount:{release_ns}:{sa}"
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{release_ns}", "system:authenticated"]
        assert _can(cluster, user, groups, "create", "jobs", NS_TEAM, "batch")
        assert not _can(cluster, user, groups, "create", "jobs", NS_OTHER, "batch")
        assert not _can(cluster, user, groups, "list", "supernettrainings", None, GROUP)  # cluster-wide
    # the trainer identity can do nothing at all
    trainer = f"system:serviceaccount:{work_ns if mode == 'namespaced' else release_ns}:{sa}-trainer"
    tgroups = ["system:serviceaccounts", "system:authenticated"]
    for verb, resource, group in [("get", "pods", ""), ("list", "jobs", "batch"), ("get", "secrets", ""),
                                  ("list", "supernettrainings", GROUP), ("create", "events", "")]:
        assert not _can(cluster, trainer, tgroups, verb, resource, work_ns, group), (verb, resource)


@pytest.mark.apiserver
def test_notes_name_the_watched_namespaces_and_the_seen_column(namespaced_release, cluster_release):
    """`kubectl get sst` in a namespace no operator watches must not look like a queued run: the
    install's NOTES list the watched namespaces and say what an empty SEEN column means
    (tests/operator/test_hostile_children.py shows the column empty there)."""
    namespaced = (namespaced_release.get("info") or {}).get("notes") or ""
    assert f"The operator watches: {NS_RELEASE}, {NS_TEAM} " in namespaced, namespaced
    assert "SEEN column" in namespaced and "does not watch" in namespaced
    cluster = (cluster_release.get("info") or {}).get("notes") or ""
    assert "The operator watches: all namespaces (rbac.mode=cluster)" in cluster, cluster
