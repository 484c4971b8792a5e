"""Pod settings of stage pods for GPU clusters (issue 24 item 4): every key of the schema's
spec.scheduling reaches the rendered Jobs, levels merge as documented (chart defaults <
shared < role, the resource always over the chart), names the operator sets are refused, and
the privileged settings need the administrator's allow-list."""
import copy

import pytest
import yaml

from stepshot import manifests
from stepshot import plan as planmod
from stepshot import spec as specmod
from stepshot.cli import main
from stepshot.errors import StepshotError
from stepshot.manifests import ClusterCaps, Context
from stepshot.manifests.cluster import load_pod_defaults
from stepshot.spec import ROLES, SPEC_SCHEMA, scheduling

BASE = {
    "apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
    "metadata": {"name": "demo", "namespace": "ns"},
    "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"}, "storage": {"claimName": "work"},
             "resources": {"nodes": 1, "procsPerNode": 2, "gpusPerNode": 2, "cpu": "8", "memory": "32Gi"},
             "fewShot": {"mode": "grouped", "groups": [2]}},
}
ALL_ALLOWED = ClusterCaps(host_network=True, capabilities=frozenset({"IPC_LOCK"}))
COMPONENT_ROLE = {"train": "training", "snapshot": "snapshot", "evaluate": "evaluation"}


def ctx(scheduling_: dict | None = None, caps: ClusterCaps = ALL_ALLOWED, **spec) -> Context:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec)
    if scheduling_ is not None:
        doc["spec"]["scheduling"] = scheduling_
    s = specmod.load(doc)
    assert manifests.cluster_errors(s, caps) == []
    return Context(s, planmod.build_plan(s), caps)


def jobs_by_role(c: Context) -> dict[str, dict]:
    return {COMPONENT_ROLE[o["metadata"]["labels"][manifests.LABEL_COMPONENT]]: o
            for o in manifests.all_objects(c) if o["kind"] == "Job"}


def _pod(job):
    return job["spec"]["template"]["spec"]


def _container(job):
    [container] = _pod(job)["containers"]
    return container


# One value of every pod setting, and where a rendered Job shows it.
SAMPLES = {
    "nodeSelector": ({"gpu": "h100"}, lambda job: _pod(job).get("nodeSelector")),
    "tolerations": ([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    lambda job: _pod(job).get("tolerations")),
    "affinity": ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        lambda job: _pod(job).get("affinity")),
    "priorityClassName": ("preemptible", lambda job: _pod(job).get("priorityClassName")),
    "schedulerName": ("volcano", lambda job: _pod(job).get("schedulerName")),
    "serviceAccountName": ("copier", lambda job: _pod(job).get("serviceAccountName")),
    "imagePullSecrets": ([{"name": "regcred"}], lambda job: _pod(job).get("imagePullSecrets")),
    "labels": ({"team": "nas"}, lambda job: {k: job["metadata"]["labels"].get(k) for k in ("team",)}
               if job["spec"]["template"]["metadata"]["labels"].get("team") else None),
    "annotations": ({"gang": "g"}, lambda job: {"gang": job["metadata"]["annotations"].get("gang")}
                    if (job["spec"]["template"]["metadata"].get("annotations") or {}).get("gang") else None),
    "activeDeadlineSeconds": (3600, lambda job: job["spec"].get("activeDeadlineSeconds")),
    "env": ([{"name": "NCCL_IB_HCA", "value": "mlx5"}],
            lambda job: [e for e in _container(job)["env"] if e["name"] == "NCCL_IB_HCA"] or None),
    "runtimeClassName": ("nvidia", lambda job: _pod(job).get("runtimeClassName")),
    "gpuResource": ("amd.com/gpu", lambda job: "amd.com/gpu" if "amd.com/gpu" in _container(job)["resources"]["limits"]
                    and "nvidia.com/gpu" not in _container(job)["resources"]["limits"] else None),
    "extraResources": ({"rdma/hca_shared_devices_a": "1"},
                       lambda job: {k: v for k, v in _container(job)["resources"]["requests"].items()
                                    if k.startswith("rdma/") and _container(job)["resources"]["limits"][k] == v}
                       or None),
    "hostNetwork": (True, lambda job: _pod(job).get("hostNetwork") if _pod(job).get("dnsPolicy")
                    == "ClusterFirstWithHostNet" else None),
    "capabilities": (["IPC_LOCK"], lambda job: _container(job)["securityContext"]["capabilities"].get("add")),
}
SETTINGS = [k for k in SPEC_SCHEMA["properties"]["scheduling"]["properties"] if k not in ROLES]


def test_every_pod_setting_of_the_schema_has_a_sample_here():
    """The schema is the list of pod settings: a key added there without a way onto the pod
    fails here (and in the test below), so schema and builder cannot drift."""
    assert sorted(SAMPLES) == sorted(SETTINGS)
    for role in ROLES:
        assert list(SPEC_SCHEMA["properties"]["scheduling"]["properties"][role]["properties"]) == SETTINGS


@pytest.mark.parametrize("key", SETTINGS)
def test_every_pod_setting_reaches_its_roles_pods_and_only_those(key):
    value, shown = SAMPLES[key]
    for role in ROLES:
        # evaluation gets a GPU too (it defaults to one when training uses GPUs)
        rendered = jobs_by_role(ctx({role: {key: value}}))
        for other, job in rendered.items():
            if key == "gpuResource" and other == "snapshot":
                assert "amd.com/gpu" not in str(job)            # snapshot pods request no GPU at all
                continue
            assert shown(job) == (value if other == role else None), (role, other)
    shared = jobs_by_role(ctx({key: value}))
    assert all(shown(job) == value for role, job in shared.items() if not (key == "gpuResource" and role == "snapshot"))
    from_chart = jobs_by_role(ctx(caps=ClusterCaps(pod_defaults={key: value})))
    assert all(shown(job) == value for role, job in from_chart.items()
               if not (key == "gpuResource" and role == "snapshot"))


def test_levels_merge_chart_under_shared_under_role():
    chart = {"env": [{"name": "NCCL_DEBUG", "value": "WARN"}, {"name": "NCCL_IB_HCA", "value": "mlx5"}],
             "runtimeClassName": "nvidia", "extraResources": {"rdma/hca_shared_devices_a": "1"},
             "training": {"env": [{"name": "NCCL_SOCKET_IFNAME", "value": "ib0"}], "priorityClassName": "chart"}}
    own = {"env": [{"name": "NCCL_IB_HCA", "value": "mlx5_0"}], "priorityClassName": "mine",
           "training": {"extraResources": {"example.com/fpga": "2"}}}
    caps = ClusterCaps(pod_defaults=chart)
    jobs = jobs_by_role(ctx(own, caps))
    train, evaluation = _container(jobs["training"]), _container(jobs["evaluation"])
    env = {e["name"]: e["value"] for e in train["env"]}
    # the resource's shared setting wins over the chart's role section: the resource always wins
    assert env["NCCL_IB_HCA"] == "mlx5_0" and env["NCCL_DEBUG"] == "WARN" and env["NCCL_SOCKET_IFNAME"] == "ib0"
    assert "NCCL_SOCKET_IFNAME" not in {e["name"] for e in evaluation["env"]}
    assert _pod(jobs["training"])["priorityClassName"] == "mine" == _pod(jobs["evaluation"])["priorityClassName"]
    assert _pod(jobs["snapshot"])["runtimeClassName"] == "nvidia"
    assert train["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2",
                                            "rdma/hca_shared_devices_a": "1", "example.com/fpga": "2"}
    assert train["resources"]["requests"] == train["resources"]["limits"]
    assert evaluation["resources"]["limits"]["rdma/hca_shared_devices_a"] == "1"
    assert "example.com/fpga" not in evaluation["resources"]["limits"]
    # the operator's variables come first and are never repeated
    names = [e["name"] for e in train["env"]]
    assert len(names) == len(set(names)) and names[0] == "PYTHONUNBUFFERED"


def test_gpus_are_requested_as_each_roles_gpu_resource():
    """AMD GPUs for training, a MIG slice for evaluation: the counts stay the spec's."""
    jobs = jobs_by_role(ctx({"training": {"gpuResource": "amd.com/gpu"},
                             "evaluation": {"gpuResource": "nvidia.com/mig-1g.10gb"}}))
    assert _container(jobs["training"])["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "amd.com/gpu": "2"}
    assert _container(jobs["evaluation"])["resources"]["limits"] == {"cpu": "2", "memory": "8Gi",
                                                                     "nvidia.com/mig-1g.10gb": "1"}
    cpu_only = jobs_by_role(ctx({"gpuResource": "amd.com/gpu"}, resources={"gpusPerNode": 0}))
    assert all("amd.com/gpu" not in str(job) for job in cpu_only.values())   # no GPUs, none requested


def test_multi_node_training_keeps_its_init_container_plain():
    jobs = jobs_by_role(ctx({"capabilities": ["IPC_LOCK"], "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
                             "extraResources": {"rdma/hca_shared_devices_a": "1"}, "hostNetwork": True},
                            resources={"nodes": 2, "procsPerNode": 2, "gpusPerNode": 2}))
    pod = _pod(jobs["training"])
    [init] = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "rdma/hca_shared_devices_a" not in init["resources"]["limits"]
    assert pod["hostNetwork"] is True and pod["subdomain"] == jobs["training"]["metadata"]["name"]  # rendezvous


def test_every_variable_the_operator_sets_is_reserved():
    """The names a resource may not set are exactly those the builders set (every layout)."""
    layouts = [ctx(), ctx(resources={"nodes": 2, "procsPerNode": 2, "gpusPerNode": 2}),
               ctx(caps=ClusterCaps(version=(1, 20)), resources={"nodes": 2, "procsPerNode": 1, "gpusPerNode": 1}),
               ctx(evaluation={"shards": 3}), ctx(caps=ClusterCaps(version=(1, 20)), evaluation={"shards": 3})]
    seen = set()
    for c in layouts:
        for obj in manifests.all_objects(c):
            if obj["kind"] == "Job":
                for container in _pod(obj)["containers"] + _pod(obj).get("initContainers", []):
                    seen |= {e["name"] for e in container["env"]}
    assert all(scheduling.reserved_env(name) for name in seen), sorted(seen)
    assert set(scheduling.RESERVED_ENV) <= seen


@pytest.mark.parametrize("settings,field", [
    ({"env": [{"name": "HOME", "value": "/root"}]}, "spec.scheduling.env[0].name: Forbidden"),
    ({"snapshot": {"env": [{"name": "STEPSHOT_SHARD", "value": "1"}]}}, "spec.scheduling.snapshot.env[0].name"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "spec.scheduling.env[1].name: Duplicate"),
    ({"env": [{"name": "1A"}]}, "spec.scheduling.env[0].name: Invalid value"),
    ({"extraResources": {"cpu": "1"}}, "spec.scheduling.extraResources.cpu: Invalid value"),
    ({"extraResources": {"example.kubernetes.io/x": "1"}}, "spec.scheduling.extraResources.example.kubernetes.io/x"),
    ({"extraResources": {"rdma/hca": "0.5"}}, "spec.scheduling.extraResources.rdma/hca: Invalid value"),
    ({"extraResources": {"rdma/hca": "2000"}}, "spec.scheduling.extraResources.rdma/hca: Invalid value"),
    ({"gpuResource": "amd.com/gpu", "evaluation": {"extraResources": {"amd.com/gpu": "1"}}},
     "spec.scheduling.evaluation.extraResources.amd.com/gpu: Forbidden"),
    ({"training": {"runtimeClassName": "Nvidia"}}, "spec.scheduling.training.runtimeClassName: Invalid value"),
    ({"capabilities": ["IPC LOCK"]}, "spec.scheduling.capabilities[0]: Invalid value"),
])
def test_invalid_pod_settings_are_refused_naming_the_field(settings, field):
    doc = copy.deepcopy(BASE)
    doc["spec"]["scheduling"] = settings
    errors = specmod.validate(doc)
    assert errors and errors[0].startswith(field), errors


def test_privileged_settings_are_refused_unless_allowed():
    s = specmod.load({**BASE, "spec": {**BASE["spec"], "scheduling": {
        "hostNetwork": True, "evaluation": {"capabilities": ["cap_ipc_lock", "SYS_ADMIN"]}}}})
    errors = manifests.cluster_errors(s, ClusterCaps())
    assert [e.split(":")[0] for e in errors] == ["spec.scheduling.hostNetwork", "spec.scheduling.evaluation.capabilities[0]",
                                                 "spec.scheduling.evaluation.capabilities[1]"]
    assert [e.split(":")[0] for e in manifests.cluster_errors(s, ALL_ALLOWED)] == \
        ["spec.scheduling.evaluation.capabilities[1]"]        # CAP_IPC_LOCK is IPC_LOCK; SYS_ADMIN is not allowed
    off = specmod.load({**BASE, "spec": {**BASE["spec"], "scheduling": {"hostNetwork": False}}})
    assert manifests.cluster_errors(off, ClusterCaps()) == []
    assert all("hostNetwork" not in _pod(job) for job in jobs_by_role(Context(off, planmod.build_plan(off),
                                                                               ClusterCaps())).values())


def test_chart_defaults_are_checked_like_a_resources_settings():
    assert load_pod_defaults("", "env") == {} and load_pod_defaults("{}", "env") == {}
    assert load_pod_defaults('{"env": [{"name": "NCCL_DEBUG", "value": "WARN"}]}', "env")["env"][0]["value"] == "WARN"
    with pytest.raises(StepshotError) as err:
        load_pod_defaults('{"env": [{"name": "OMP_NUM_THREADS", "value": "1"}], "training": {"tolerations": 3}}',
                          "env STEPSHOT_POD_DEFAULTS")
    assert "env STEPSHOT_POD_DEFAULTS: invalid chart value trainer.podDefaults" in str(err.value)
    assert "trainer.podDefaults.training.tolerations" in str(err.value)
    with pytest.raises(StepshotError, match=r"trainer.podDefaults.env\[0\].name: Forbidden"):
        load_pod_defaults("env: [{name: PET_NNODES, value: '3'}]", "x")
    with pytest.raises(StepshotError, match="not JSON or YAML"):
        load_pod_defaults("{env: [", "x")


def test_render_and_validate_take_the_charts_settings(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    doc = copy.deepcopy(BASE)
    doc["spec"]["scheduling"] = {"training": {"hostNetwork": True, "capabilities": ["IPC_LOCK"]}}
    path.write_text(yaml.safe_dump(doc))
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("env: [{name: NCCL_DEBUG, value: WARN}]\n")
    assert main(["validate", "--cluster", str(path)]) == 2
    err = capsys.readouterr().err
    assert "spec.scheduling.training.hostNetwork: Forbidden" in err and "capabilities[0]: Forbidden" in err
    options = ["--allow-host-network", "--allowed-capabilities", "IPC_LOCK", "--pod-defaults", str(defaults)]
    assert main(["validate", "--cluster", str(path), *options]) == 0
    assert main(["render", str(path), *options]) == 0
    jobs = [o for o in yaml.safe_load_all(capsys.readouterr().out) if o and o["kind"] == "Job"]
    assert all({"name": "NCCL_DEBUG", "value": "WARN"} in _container(j)["env"] for j in jobs)
    assert sum(bool(_pod(j).get("hostNetwork")) for j in jobs) == 2     # the two training stages
    defaults.write_text("env: [{name: HOME, value: /}]\n")
    assert main(["render", str(path), *options]) == 2
    assert "trainer.podDefaults.env[0].name: Forbidden" in capsys.readouterr().err
