"""The operator against a real kube-apiserver + etcd; the tests play the Job controller."""
import copy
import json
import uuid

import pytest
from kubernetes import client

from kubeplay import OperatorProcess, Training, wait_for
from stepshot.spec import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.apiserver

BODY = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "SupernetTraining",
    "metadata": {"name": "sst"},
    "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"},
             "storage": {"claimName": "work"}, "backoffLimit": 1,
             "fewShot": {"mode": "partitioned", "maxParallel": 8,
                         "steps": [{"dimension": "width", "stage": 4, "parts": 2},
                                   {"dimension": "depth", "stage": 3, "parts": 2}]}},
}
GROUPED = {"mode": "grouped", "groups": [2, 3]}


def body(name="sst", **few):
    doc = copy.deepcopy(BODY)
    doc["metadata"]["name"] = name
    if few:
        doc["spec"]["fewShot"] = few
    return doc


@pytest.fixture
def namespace(apiserver):
    return apiserver.create_namespace(f"e2e-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def operator(apiserver, namespace, tmp_path):
    op = OperatorProcess(apiserver, namespace, tmp_path / "operator.log").start()
    yield op
    op.stop()
    print(op.output())  # pytest shows it only when the test failed


@pytest.mark.parametrize("few", [None, GROUPED], ids=["partitioned-2x2", "grouped"])
def test_full_run_to_succeeded_with_kendall_tau(apiserver, namespace, operator, few):
    t = Training(apiserver, namespace, body(**(few or {})))
    created = t.create()
    assert t.run() == []
    status = wait_for(lambda: (s := t.status()).get("phase") == "Succeeded" and s, what="phase Succeeded")
    assert status["result"]["kendallTau"] == pytest.approx(0.6123)
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert status["progress"] == ("8/8" if few is None else "4/4")
    assert status["stages"]["oneshot"]["checkpoint"]["epoch"] == 3
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["Succeeded"]["status"] == "True" and cond["Failed"]["status"] == "False"
    jobs = t.jobs()
    assert len(jobs) == len(t.kinds)                              # every Job exactly once
    for job in jobs.values():
        [ref] = job["metadata"]["ownerReferences"]
        assert ref["uid"] == created["metadata"]["uid"] and ref["controller"] is True
    assert not t.get()["metadata"].get("finalizers")
    core = client.CoreV1Api(apiserver.client())
    wanted = {"StageRunning", "StageSnapshotting", "StageSucceeded", "PhaseRunning", "PhaseSucceeded"}
    wait_for(lambda: wanted <= {e.reason for e in core.list_namespaced_event(namespace).items},
             what=f"Events {sorted(wanted)}")


def test_operator_killed_mid_run_restarts_without_duplicates(apiserver, namespace, operator):
    t = Training(apiserver, namespace, body("restart", **GROUPED))
    t.create()
    queue = t.run(stop_before="restart-g2")                        # oneshot + its snapshot done
    operator.stop(kill=True)
    t.finish(queue.pop(0))                                         # g2 finishes while the operator is down
    operator.start()
    queue += sorted(t.expected_after("restart-g2"))                # -> its snapshot, created after restart
    t.wait_jobs(set(queue))
    assert t.run(queue) == []
    wait_for(lambda: t.status().get("phase") == "Succeeded", what="phase Succeeded")
    assert len(t.jobs()) == len(t.kinds)


def test_spec_edit_mid_run_is_reported_and_not_half_applied(apiserver, namespace, operator):
    t = Training(apiserver, namespace, body("edit", **GROUPED))
    t.create()
    queue = t.run(stop_before="edit-g2")                           # oneshot frozen, g2 running
    t.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "edit",
                                            {"spec": {"fewShot": {"groups": [2, 3, 4]}}})

    def spec_changed():
        return next((c for c in t.status().get("conditions") or []
                     if c["type"] == "SpecChanged" and c["status"] == "True"), None)
    cond = wait_for(spec_changed, what="condition SpecChanged")
    assert "spec.fewShot.groups" in cond["message"] and cond["observedGeneration"] == 2
    assert t.run(queue) == []                                      # no g4: the plan the pods read
    wait_for(lambda: t.status().get("phase") == "Succeeded", what="phase Succeeded")
    assert len(t.jobs()) == len(t.kinds)
    core = client.CoreV1Api(apiserver.client())
    wait_for(lambda: any(e.reason == "SpecChanged" and e.type == "Warning"
                         for e in core.list_namespaced_event(namespace).items), what="a SpecChanged Warning Event")


def test_failing_partition_fails_the_resource_and_keeps_the_others(apiserver, namespace, operator):
    doc = body("fail", mode="partitioned", maxParallel=8, steps=[{"dimension": "width", "stage": 4, "parts": 2}])
    t = Training(apiserver, namespace, doc)
    t.create()
    t.run(stop_before="fail-s4w0")
    t.finish("fail-s4w1", ok=False, message="Traceback (most recent call last):\nRuntimeError: loss is NaN")
    status = wait_for(lambda: (s := t.status()).get("phase") == "Failed" and s, what="phase Failed")
    cond = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert cond["reason"] == "PartitionFailed"
    assert "partition s4w1" in cond["message"] and "loss is NaN" in cond["message"]
    assert "BackoffLimitExceeded" in cond["message"]
    jobs = t.jobs()
    assert "fail-s4w0" in jobs and not jobs["fail-s4w0"]["metadata"].get("deletionTimestamp")
    t.finish("fail-s4w0")                                          # the surviving partition is still frozen
    t.wait_jobs({"fail-s4w0-snap"})
    assert "fail-eval" not in t.jobs() and t.status()["phase"] == "Failed"


def test_bad_resource_is_refused_with_the_field(apiserver, namespace):
    custom = client.CustomObjectsApi(apiserver.client())
    doc = body("bad")
    doc["spec"]["resources"] = {"nodes": 0}
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    assert exc.value.status == 422 and "spec.resources.nodes" in exc.value.body
    doc = body("bad")
    doc["spec"]["space"] = "mobilenet"
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    assert "spec.space" in exc.value.body


def test_delete_mid_run_with_operator_down_does_not_hang(apiserver, namespace, operator):
    t = Training(apiserver, namespace, body("gone"))
    t.create()
    t.wait_jobs({"gone-oneshot"})
    assert not t.get()["metadata"].get("finalizers")
    operator.stop(kill=True)
    t.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")

    def gone():
        try:
            t.get()
        except client.ApiException as exc:
            return exc.status == 404
        return False
    wait_for(gone, timeout=10, what="the resource to disappear")


def _condition(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def _events(apiserver, namespace: str, name: str) -> dict[str, str]:
    core = client.CoreV1Api(apiserver.client())
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return {e.reason: e.message for e in items}


def test_a_child_the_api_server_refuses_is_visible_as_degraded(apiserver, namespace, operator):
    """A spec our rules accept but the API server refuses as a Job (a node selector term
    `In` with no values): the user sees the API server's words, not only a log."""
    doc = body(**GROUPED)
    term = {"matchExpressions": [{"key": "gpu", "operator": "In", "values": []}]}
    doc["spec"]["scheduling"] = {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}}
    t = Training(apiserver, namespace, doc)
    t.create()
    degraded = wait_for(lambda: (c := _condition(t.status(), "Degraded")).get("status") == "True" and c,
                        what="Degraded=True")
    assert degraded["reason"] == "ChildCreateFailed" and "sst-oneshot" in degraded["message"]
    assert "matchExpressions[0].values" in degraded["message"], degraded
    events = wait_for(lambda: (e := _events(apiserver, namespace, "sst")).get("ChildCreateFailed") and e,
                      what="a ChildCreateFailed Event")
    assert "matchExpressions[0].values" in events["ChildCreateFailed"]
    assert t.jobs() == {}


def test_foreign_jobs_and_pods_are_ignored_never_adopted(apiserver, namespace, operator):
    import time

    from apiserver import finish_job, terminated_pod
    from stepshot.workdir import EvaluationResult

    t = Training(apiserver, namespace, body(**GROUPED))
    t.create()
    assert t.run(stop_before="sst-eval") == ["sst-eval"]
    # A Job with the resource's labels but no owner reference sits beside its children ...
    stray = {"apiVersion": "batch/v1", "kind": "Job",
             "metadata": {"name": "sst-g9", "labels": {"stepshot.dev/training": "sst"}},
             "spec": {"template": {"metadata": {"labels": {"stepshot.dev/training": "sst"}},
                                   "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}
    t.batch.create_namespaced_job(namespace, stray)
    # ... and after the evaluation pod, a later pod that only carries its labels offers a forged result.
    eval_job = t.jobs()["sst-eval"]
    terminated_pod(t.core, eval_job, t.message_for("sst-eval"))
    time.sleep(1.1)                                            # strictly later finishedAt
    terminated_pod(t.core, eval_job, EvaluationResult(n=64, kendall_tau=0.999).message(), owned=False)
    finish_job(t.batch, namespace, "sst-eval", True)
    status = wait_for(lambda: (s := t.status()).get("phase") == "Succeeded" and s, what="phase Succeeded")
    assert status["result"]["kendallTau"] == pytest.approx(0.6123)        # the real pod's, not 0.999
    assert status["childJobs"] == {"active": 0, "suspended": 0, "succeeded": 7, "failed": 0}   # sst-g9 not counted


def test_a_plan_too_big_fails_visibly_with_the_field(apiserver, namespace, operator):
    doc = body("huge", mode="partitioned", steps=[{"dimension": "width", "stage": 4, "parts": 4}] * 5)
    custom = client.CustomObjectsApi(apiserver.client())   # no Training helper: its plan cannot be built
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    status = wait_for(lambda: (s := custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "huge").get("status") or {}).get("phase") == "Failed" and s,
        what="phase Failed")
    failed = _condition(status, "Failed")
    assert failed["reason"] == "InvalidSpec" and failed["message"].startswith("spec.fewShot.steps: Too many")
    assert "PhaseFailed" in wait_for(lambda: _events(apiserver, namespace, "huge") or None, what="an Event")


def test_a_deleted_spec_config_map_is_rebuilt(apiserver, namespace, operator):
    t = Training(apiserver, namespace, body(**GROUPED))
    t.create()
    t.wait_jobs({"sst-oneshot"})
    t.core.delete_namespaced_config_map("sst-spec", namespace)
    rebuilt = wait_for(lambda: t.core.list_namespaced_config_map(namespace, field_selector="metadata.name=sst-spec").items,
                       what="the spec ConfigMap again")
    assert "spec.yaml" in rebuilt[0].data and rebuilt[0].metadata.owner_references[0].name == "sst"
    assert t.run(["sst-oneshot"]) == []
    wait_for(lambda: t.status().get("phase") == "Succeeded", what="phase Succeeded")


def test_liveness_probes_leave_the_log_to_the_operator(operator):
    """The kubelet probes every few seconds: no line per probe at the default level."""
    import urllib.request

    for _ in range(3):
        assert urllib.request.urlopen(operator.liveness, timeout=5).status == 200
    assert "/healthz" not in operator.output() and "GET /" not in operator.output(), operator.output()


def test_sharded_evaluation_fans_out_then_merges(apiserver, namespace, operator):
    """evaluation.shards: an Indexed Job (parallelism maxParallel) where served, else one Job per
    shard, maxParallel at a time (this 1.20 server); then the merge Job, whose result (evaluated /
    scored) is the resource's; the shards' progress (Jobs, then architectures) is in the status."""
    from apiserver import finish_job, terminated_pod
    from stepshot.workdir import EvaluationResult, ShardResult

    doc = body()
    doc["spec"]["fewShot"] = {"mode": "none"}
    doc["spec"]["evaluation"] = {"shards": 3, "maxParallel": 2}
    t = Training(apiserver, namespace, doc)
    t.create()
    for name in ("sst-oneshot", "sst-oneshot-snap"):
        t.wait_jobs({name})
        t.finish(name)
    wait_for(lambda: {"sst-eval", "sst-eval-0"} & set(t.jobs()), what="the evaluation's Jobs")
    if "sst-eval" in t.jobs():                                 # Indexed Jobs served
        job = t.jobs()["sst-eval"]
        assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == \
            ("Indexed", 3, 2)
        finish_job(t.batch, namespace, "sst-eval", True)
        t.batch.patch_namespaced_job_status("sst-eval", namespace, {"status": {"succeeded": 3, "active": 0}})
        shard_jobs = ["sst-eval"]
    else:
        t.wait_jobs({"sst-eval-0", "sst-eval-1"})
        assert "sst-eval-2" not in t.jobs()                    # maxParallel shards at once
        terminated_pod(t.core, t.jobs()["sst-eval-0"], ShardResult(0, 3, pool=100, archs=33, scored=11).message())
        finish_job(t.batch, namespace, "sst-eval-0", True)
        wait_for(lambda: t.status()["stages"]["eval"].get("shards", {}).get("done") == 1, what="1 of 3 shards done")
        archs = {"evaluated": 33, "total": 100, "scored": 11, "progress": "33/100"}   # through the schema's pruning
        wait_for(lambda: t.status().get("archs") == archs, what="architectures 33/100 in the status")
        t.wait_jobs({"sst-eval-2"})
        for name in ("sst-eval-1", "sst-eval-2"):
            finish_job(t.batch, namespace, name, True)
        shard_jobs = ["sst-eval-0", "sst-eval-1", "sst-eval-2"]
    t.wait_jobs({"sst-eval-merge"})
    merge = t.jobs()["sst-eval-merge"]
    assert merge["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "--merge"
    terminated_pod(t.core, merge, EvaluationResult(n=30, kendall_tau=0.42, evaluated=100, scored=30).message())
    finish_job(t.batch, namespace, "sst-eval-merge", True)
    status = wait_for(lambda: (s := t.status()).get("phase") == "Succeeded" and s, what="phase Succeeded")
    assert status["result"] == {"n": 30, "kendallTau": 0.42, "evaluated": 100, "scored": 30}
    assert status["stages"]["eval"]["shards"] == {"done": 3, "total": 3, "merge": "Succeeded"}
    assert status["archs"] == {"evaluated": 100, "total": 100, "scored": 30, "progress": "100/100"}
    assert status["stages"]["eval"]["jobs"] == shard_jobs + ["sst-eval-merge"]


def test_a_first_stage_that_refuses_its_input_fails_the_run_as_invalid_input(apiserver, namespace, operator):
    """The trainer's preflight exits 2 with one line as the pod's termination message (the 1.20
    API server here has no podFailurePolicy: the Job fails by its backoff): the resource ends
    Failed with reason InvalidInput and that line, in its status, its Failed condition and Events."""
    t = Training(apiserver, namespace, body("input", **GROUPED))
    t.create()
    t.wait_jobs({"input-oneshot"})
    line = "spec.dataset.path: /data/fashion-mnist: no such directory"
    t.finish("input-oneshot", ok=False, message=f"stepshot: error: {line}\n", exit_code=2)
    status = wait_for(lambda: (s := t.status()).get("phase") == "Failed" and s, what="phase Failed")
    failed = _condition(status, "Failed")
    assert failed["reason"] == status["stages"]["oneshot"]["reason"] == "InvalidInput"
    assert failed["message"] == status["stages"]["oneshot"]["message"] == f"stage oneshot refused its input: {line}"
    assert line in " ".join(_events(apiserver, namespace, "input").values())
    assert set(t.jobs()) == {"input-oneshot"}                      # nothing else started


def _pod_of(core, job: dict, status: dict) -> str:
    """A pod of `job` with the status the scheduler or kubelet would report (the test plays both)."""
    import secrets
    template, meta = job["spec"]["template"], job["metadata"]
    name = f"{meta['name']}-{secrets.token_hex(2)}"
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": True}
    container = template["spec"]["containers"][0]
    core.create_namespaced_pod(meta["namespace"], {
        "metadata": {"name": name, "labels": template["metadata"]["labels"], "ownerReferences": [owner]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": container["name"], "image": container["image"]}]}})
    core.patch_namespaced_pod_status(name, meta["namespace"], {"status": status})
    return name


def _container(container: dict, state: dict) -> dict:
    return {"name": container["name"], "image": container["image"], "imageID": "", "ready": "running" in state,
            "restartCount": 0, "state": state}


@pytest.mark.parametrize("stuck", ["ImagePullBackOff", "Unschedulable"])
def test_a_stage_pod_that_cannot_start_shows_pods_pending_until_it_runs(apiserver, namespace, operator, stuck):
    t = Training(apiserver, namespace, body("stuck", **GROUPED))
    t.create()
    t.wait_jobs({"stuck-oneshot"})
    job = t.jobs()["stuck-oneshot"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    if stuck == "Unschedulable":
        words = "0/3 nodes are available: 3 Insufficient cpu."
        status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                      "reason": "Unschedulable", "message": words}]}
    else:
        words = f'Back-off pulling image "{container["image"]}"'
        status = {"phase": "Pending", "containerStatuses": [
            _container(container, {"waiting": {"reason": "ImagePullBackOff", "message": words}})]}
    pod = _pod_of(t.core, job, status)
    pending = wait_for(lambda: (c := _condition(t.status(), "PodsPending")).get("status") == "True" and c,
                       what="PodsPending=True")
    assert pending["reason"] == stuck
    assert pending["message"] == f"stage oneshot, pod {pod} (Job stuck-oneshot) cannot start: {stuck}: {words}"
    assert t.status()["phase"] == "Running"
    events = wait_for(lambda: (e := _events(apiserver, namespace, "stuck")).get("PodsPending") and e,
                      what="a PodsPending Event")
    assert events["PodsPending"] == pending["message"]

    # The pod starts (scheduled, its container running): the condition clears on the next pass.
    t.core.patch_namespaced_pod_status(pod, namespace, {"status": {
        "phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [_container(container, {"running": {"startedAt": "2026-01-01T00:00:00Z"}})]}})
    cleared = wait_for(lambda: (c := _condition(t.status(), "PodsPending")).get("status") == "False" and c,
                       what="PodsPending=False")
    assert cleared["reason"] == "NoPodWaiting"


def test_gpu_cluster_pod_settings_through_the_charts_environment(apiserver, namespace, tmp_path):
    """The chart's trainer.podDefaults / allowedCapabilities reach the operator as environment
    variables: invalid defaults stop it at start naming the field; a resource asking for host
    networking the chart does not allow ends Failed naming the field and the chart value; the
    allowed settings reach Jobs the real API server accepts."""
    bad = OperatorProcess(apiserver, namespace, tmp_path / "bad.log",
                          env={"STEPSHOT_POD_DEFAULTS": json.dumps({"env": [{"name": "HOME", "value": "/"}]})})
    with pytest.raises(AssertionError, match="operator exited"):
        bad.start(timeout=30)
    assert "trainer.podDefaults.env[0].name: Forbidden" in bad.output()
    defaults = {"env": [{"name": "NCCL_DEBUG", "value": "WARN"}], "training": {"runtimeClassName": "nvidia"}}
    op = OperatorProcess(apiserver, namespace, tmp_path / "operator.log",
                         env={"STEPSHOT_POD_DEFAULTS": json.dumps(defaults),
                              "STEPSHOT_ALLOWED_CAPABILITIES": "IPC_LOCK"}).start()
    try:
        custom = client.CustomObjectsApi(apiserver.client())
        host = body("host", **GROUPED)
        host["spec"]["scheduling"] = {"training": {"hostNetwork": True}}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, host)
        status = wait_for(lambda: (s := custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "host").get("status") or {}).get("phase") == "Failed" and s,
            what="phase Failed")
        failed = _condition(status, "Failed")
        assert failed["reason"] == "InvalidSpec"
        assert failed["message"].startswith("spec.scheduling.training.hostNetwork: Forbidden")
        assert "trainer.allowHostNetwork" in failed["message"]
        rdma = body("rdma", **GROUPED)
        rdma["spec"]["scheduling"] = {"env": [{"name": "NCCL_IB_HCA", "value": "mlx5"}],
                                      "training": {"capabilities": ["IPC_LOCK"],
                                                   "extraResources": {"rdma/hca_shared_devices_a": "1"}}}
        t = Training(apiserver, namespace, rdma)
        t.create()
        t.wait_jobs({"rdma-oneshot"})
        pod = t.jobs()["rdma-oneshot"]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert pod["runtimeClassName"] == "nvidia"
        assert {"name": "NCCL_DEBUG", "value": "WARN"} in container["env"]
        assert {"name": "NCCL_IB_HCA", "value": "mlx5"} in container["env"]
        assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
        assert container["resources"]["limits"]["rdma/hca_shared_devices_a"] == "1"
    finally:
        op.stop()
        print(op.output())
