"""The pure manifest builders (stepshot.manifests)."""
import copy

import pytest

from stepshot import manifests
from stepshot import plan as planmod
from stepshot import spec as specmod
from stepshot.manifests import ClusterCaps, Context

BASE = {
    "apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
    "metadata": {"name": "demo", "namespace": "ns"},
    "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist",
                                                     "volume": {"hostPath": {"path": "/data"}}},
             "storage": {"claimName": "work"},
             "resources": {"nodes": 1, "procsPerNode": 2, "gpusPerNode": 0},
             "fewShot": {"mode": "partitioned", "steps": [{"dimension": "width", "stage": 4, "parts": 2}]},
             "backoffLimit": 3},
}


def ctx(caps=ClusterCaps(), **spec):
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec)
    s = specmod.load(doc)
    return Context(s, planmod.build_plan(s), caps)


def pod(job):
    return job["spec"]["template"]["spec"]


def env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_single_node_job_is_a_plain_standalone_torchrun_job():
    c = ctx()
    [job] = manifests.train_objects(c, c.plan.stage("oneshot"))
    assert job["metadata"]["name"] == "demo-oneshot" and "completionMode" not in job["spec"]
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["suspend"] is False
    container = pod(job)["containers"][0]
    assert "--standalone" in container["command"]
    assert container["command"][-6:] == ["train", manifests.SPEC_FILE, "--stage", "oneshot", "--workdir", "/workdir"]
    assert env(container)["PET_NPROC_PER_NODE"] == "2" and env(container)["PET_NNODES"] == "1"
    labels = job["metadata"]["labels"]
    assert labels[manifests.LABEL_TRAINING] == "demo" and labels[manifests.LABEL_STAGE] == "oneshot"
    assert pod(job)["volumes"][1] == {"name": "workdir", "persistentVolumeClaim": {"claimName": "work"}}
    assert {"name": "dataset", "hostPath": {"path": "/data"}} in pod(job)["volumes"]


def test_pods_are_non_root_read_only_and_without_api_token():
    c = ctx(resources={"gpusPerNode": 4})
    for obj in manifests.all_objects(c):
        if obj["kind"] != "Job":
            continue
        spec = pod(obj)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 1000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
            assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
            assert not any("TOKEN" in e["name"] or "SECRET" in e["name"] for e in container["env"])
    [job] = manifests.train_objects(c, c.plan.stage("oneshot"))
    assert pod(job)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    ev = manifests.eval_jobs(c, c.plan.stage("eval"))[0]
    assert pod(ev)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env(pod(ev)["containers"][0])["STEPSHOT_TERMINATION_LOG"] == "/dev/termination-log"


def test_multi_node_uses_an_indexed_job_and_headless_service():
    c = ctx(resources={"nodes": 3, "procsPerNode": 8, "gpusPerNode": 8})
    service, job = manifests.train_objects(c, c.plan.stage("oneshot"))
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    spec = pod(job)
    assert spec["subdomain"] == "demo-oneshot" == service["metadata"]["name"]
    e = env(spec["containers"][0])
    # c10d rendezvous on node 0's agent: a failed worker or a replacement pod restarts the group
    assert e["PET_RDZV_BACKEND"] == "c10d" and e["PET_RDZV_ENDPOINT"] == "demo-oneshot-0.demo-oneshot:29500"
    assert e["PET_RDZV_ID"] == "demo-oneshot" and e["PET_MAX_RESTARTS"] == "3" and e["PET_NNODES"] == "3"
    assert "PET_NODE_RANK" not in e and "PET_MASTER_ADDR" not in e   # ranks come from the rendezvous
    assert e["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"   # a replacement pod can join a restarted group
    assert "--standalone" not in spec["containers"][0]["command"]
    assert "demo-oneshot-0.demo-oneshot" in spec["initContainers"][0]["command"][-1]
    # the service selects exactly this stage's training pods
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in service["spec"]["selector"].items())


def test_multi_node_without_indexed_jobs_falls_back_to_one_job_per_rank():
    c = ctx(caps=ClusterCaps(version=(1, 20)), resources={"nodes": 2})
    service, *jobs = manifests.train_objects(c, c.plan.stage("oneshot"))
    assert [j["metadata"]["name"] for j in jobs] == ["demo-oneshot-0", "demo-oneshot-1"]
    assert manifests.train_job_names(c, c.plan.stage("oneshot")) == ["demo-oneshot-0", "demo-oneshot-1"]
    for rank, job in enumerate(jobs):
        spec = pod(job)
        assert spec["hostname"] == f"demo-oneshot-{rank}" and spec["subdomain"] == "demo-oneshot"
        assert env(spec["containers"][0])["PET_RDZV_ENDPOINT"] == "demo-oneshot-0.demo-oneshot:29500"
        assert "completionMode" not in job["spec"] and "suspend" not in job["spec"]


def test_suspend_is_propagated_and_marked_as_the_operators():
    c = ctx(suspend=True)
    [job] = manifests.train_objects(c, c.plan.stage("oneshot"))
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"][manifests.ANNOTATION_SUSPENDED_BY] == manifests.SUSPENDED_BY_OPERATOR
    [job] = manifests.train_objects(ctx(), c.plan.stage("oneshot"))
    assert job["spec"]["suspend"] is False and manifests.ANNOTATION_SUSPENDED_BY not in job["metadata"]["annotations"]


def test_snapshot_step_and_volume_snapshot():
    c = ctx(caps=ClusterCaps(volume_snapshots=True), storage={"claimName": "work", "volumeSnapshotClassName": "csi"})
    stage = c.plan.stage("s4w0")
    objs = manifests.stage_objects(c, stage)
    assert [o["kind"] for o in objs] == ["Job", "Job", "VolumeSnapshot"]
    snap = objs[1]
    assert snap["metadata"]["name"] == "demo-s4w0-snap"
    assert pod(snap)["containers"][0]["command"][3:] == [
        "snapshot", manifests.SPEC_FILE, "--stage", "s4w0", "--workdir", "/workdir"]
    assert snap["metadata"]["labels"][manifests.LABEL_PARTITION] == "s4w0"
    assert objs[2]["spec"] == {"source": {"persistentVolumeClaimName": "work"}, "volumeSnapshotClassName": "csi"}
    assert not manifests.wants_volume_snapshot(ctx(caps=ClusterCaps(volume_snapshots=False)))
    assert not manifests.wants_volume_snapshot(
        ctx(caps=ClusterCaps(volume_snapshots=True), storage={"claimName": "w", "snapshot": "copy"}))


def test_config_map_round_trips_the_spec():
    import yaml
    c = ctx()
    cm = manifests.spec_config_map(c)
    doc = yaml.safe_load(cm["data"]["spec.yaml"])
    assert specmod.load(doc).spec_hash == c.spec.spec_hash
    assert cm["metadata"]["name"] == "demo-spec"


def test_long_names_stay_valid_labels():
    value = manifests.label_value("x" * 100)
    assert len(value) <= 63 and value == manifests.label_value("x" * 100)


def test_render_prints_every_stage(capsys):
    from stepshot import cli
    assert cli.main(["render", "examples/fmnist-partitioned.yaml", "--namespace", "team"]) == 0
    import yaml
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    names = [d["metadata"]["name"] for d in docs]
    assert names[0] == "fmnist-partitioned-spec" and names[-1] == "fmnist-partitioned-eval"
    assert "fmnist-partitioned-s4w1-s3d0" in names and "fmnist-partitioned-s4w1-s3d0-snap" in names
    assert {d["metadata"]["namespace"] for d in docs} == {"team"}


def test_stage_pods_use_the_trainer_service_account_without_a_token():
    s = specmod.load({"metadata": {"name": "sa"}, "spec": {"space": "resnet48-fmnist",
                                                            "dataset": {"kind": "fashion-mnist"}}})
    ctx = Context(s, planmod.build_plan(s), ClusterCaps(trainer_service_account="stepshot-trainer"))
    for obj in manifests.all_objects(ctx):
        if obj["kind"] == "Job":
            pod = obj["spec"]["template"]["spec"]
            assert pod["serviceAccountName"] == "stepshot-trainer"
            assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("cpu,procs,threads", [("2", 2, "1"), ("8", 2, "4"), ("500m", 1, "1"), ("2.5", 1, "2")])
def test_torch_threads_follow_the_pods_cpu_share(cpu, procs, threads):
    c = ctx(resources={"nodes": 1, "procsPerNode": procs, "gpusPerNode": 0, "cpu": cpu})
    [job] = manifests.train_objects(c, c.plan.stage("oneshot"))
    assert env(pod(job)["containers"][0])["OMP_NUM_THREADS"] == threads
    c = ctx(evaluation={"resources": {"cpu": cpu}})   # the evaluation pod has its own size
    container = pod(manifests.eval_jobs(c, c.plan.stages[-1])[0])["containers"][0]
    processes = int(container["command"][container["command"].index("--processes") + 1])
    # Its processes times their threads are its whole cores, no more and no fewer (8 CPUs with
    # the default 8Gi: 4 processes, as the memory allows, 2 threads each).
    assert processes * int(env(container)["OMP_NUM_THREADS"]) == max(1, int(specmod.parse_quantity(cpu)))
    assert processes == min(max(1, int(specmod.parse_quantity(cpu))), 4)


# --------------------------------------------------------------------------- scheduling (issue: GPU clusters)

GPU_SCHEDULING = {
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "imagePullSecrets": [{"name": "regcred"}],
    "labels": {"kueue.x-k8s.io/queue-name": "team", "team": "nas"},
    "annotations": {"scheduling.x-k8s.io/group": "g"},
    "schedulerName": "volcano",
    "training": {"nodeSelector": {"gpu": "h100"}, "priorityClassName": "preemptible", "labels": {"team": "train"},
                 "activeDeadlineSeconds": 3600,
                 "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                     "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In",
                                                                  "values": ["a"]}]}]}}}},
    "snapshot": {"tolerations": [], "serviceAccountName": "copier"},
}


def _by_component(c):
    return {o["metadata"]["labels"][manifests.LABEL_COMPONENT]: o for o in manifests.all_objects(c)
            if o["kind"] == "Job"}


def test_scheduling_reaches_each_roles_jobs_and_pods():
    c = ctx(caps=ClusterCaps(trainer_service_account="trainer"), scheduling=GPU_SCHEDULING)
    jobs = _by_component(c)
    train, snap, evaluation = pod(jobs["train"]), pod(jobs["snapshot"]), pod(jobs["evaluate"])
    toleration = GPU_SCHEDULING["tolerations"]
    assert train["tolerations"] == evaluation["tolerations"] == toleration and "tolerations" not in snap
    assert train["nodeSelector"] == {"gpu": "h100"} and "nodeSelector" not in evaluation
    assert train["affinity"] == GPU_SCHEDULING["training"]["affinity"] and train["priorityClassName"] == "preemptible"
    assert {p["schedulerName"] for p in (train, snap, evaluation)} == {"volcano"}
    assert all(p["imagePullSecrets"] == [{"name": "regcred"}] for p in (train, snap, evaluation))
    assert snap["serviceAccountName"] == "copier" and train["serviceAccountName"] == "trainer"
    assert all(p["automountServiceAccountToken"] is False for p in (train, snap, evaluation))
    for component, job in jobs.items():     # the queue label on the Job (Kueue) and on its pods
        for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
            assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team"
            assert meta["annotations"]["scheduling.x-k8s.io/group"] == "g"
            assert meta["labels"]["team"] == ("train" if component == "train" else "nas")   # role wins per key
            assert meta["labels"][manifests.LABEL_TRAINING] == "demo"
    assert jobs["train"]["spec"]["activeDeadlineSeconds"] == 3600 and "activeDeadlineSeconds" not in jobs["snapshot"]["spec"]


def test_trainer_account_carries_the_charts_pull_secrets():
    c = ctx(caps=ClusterCaps(trainer_service_account="trainer", trainer_pull_secrets=("regcred",)))
    account = manifests.trainer_service_account(c)
    assert account["imagePullSecrets"] == [{"name": "regcred"}] and account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("version,policy", [((1, 20), False), ((1, 25), False), ((1, 26), True), ((1, 31), True)])
def test_disruptions_do_not_count_against_backoff_where_served(version, policy):
    c = ctx(caps=ClusterCaps(version=version))
    for job in _by_component(c).values():
        if not policy:
            assert "podFailurePolicy" not in job["spec"]
            continue
        rules = job["spec"]["podFailurePolicy"]["rules"]
        assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [2]
        assert rules[1]["onExitCodes"]["containerName"] == pod(job)["containers"][0]["name"]


def test_evaluation_has_its_own_resources():
    gpu = ctx(resources={"nodes": 2, "procsPerNode": 8, "gpusPerNode": 8, "cpu": "96", "memory": "900Gi"})
    limits = pod(_by_component(gpu)["evaluate"])["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}   # defaults, one GPU
    cpu = ctx(evaluation={"resources": {"cpu": "500m", "memory": "1Gi"}})
    assert pod(_by_component(cpu)["evaluate"])["containers"][0]["resources"]["limits"] == {"cpu": "500m",
                                                                                           "memory": "1Gi"}


def _evaluation(**spec) -> tuple[int, str]:
    """(--processes, OMP_NUM_THREADS) of the evaluation container."""
    container = pod(_by_component(ctx(**spec))["evaluate"])["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    return int(container["command"][container["command"].index("--processes") + 1]), env["OMP_NUM_THREADS"]


def test_evaluation_splits_architectures_over_its_cores_without_a_gpu():
    assert _evaluation() == (2, "1")                                         # 2 CPUs, 8Gi: a process per core
    assert _evaluation(evaluation={"resources": {"cpu": "16", "memory": "4Gi"}}) == (2, "8")   # memory-bound: the cores shared
    assert _evaluation(evaluation={"resources": {"cpu": "7", "memory": "5Gi"}}) == (2, "3")
    assert _evaluation(evaluation={"resources": {"cpu": "500m", "memory": "1Gi"}}) == (1, "1")
    assert _evaluation(evaluation={"resources": {"cpu": "3", "memory": "2Gi"}}) == (1, "3")    # one: threads
    gpu = {"resources": {"gpusPerNode": 8, "cpu": "96", "memory": "900Gi"}}
    assert _evaluation(**gpu, evaluation={"resources": {"cpu": "8", "memory": "64Gi"}}) == (1, "8")
    # With a GPU and decoded images, the decode workers take all cores but the evaluating one's.
    images = {"kind": "imagefolder", "path": "/data/imagenet"}
    assert _evaluation(**gpu, space="resnet48", dataset=images,
                       evaluation={"resources": {"cpu": "8", "memory": "64Gi"}}) == (1, "1")


@pytest.mark.parametrize("port", [9400, 0])
def test_every_stage_pod_declares_the_metrics_port(port):
    """Training, snapshot and evaluation pods all serve their progress on spec.metricsPort
    (the chart's PodMonitor selects the port by name); 0 declares none."""
    c = ctx(metricsPort=port)
    pods = [pod(o) for s in c.plan.stages for o in manifests.stage_objects(c, s) if o["kind"] == "Job"]
    components = set()
    for p in pods:
        container = p["containers"][0]
        want = [{"name": "metrics", "containerPort": port}] if port else []
        assert [q for q in container.get("ports", []) if q["name"] == "metrics"] == want, container["name"]
        components.add(container["name"])
    assert components == {"trainer", "snapshot", "evaluate"}
