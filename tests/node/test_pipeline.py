"""`kubectl apply` -> Succeeded on a real node: the operator pod runs the stage Jobs, the Job
controller runs their pods through the kubelet and containerd, results come back through real
termination messages, and the garbage collector cleans up.

Each test uses its own namespace, none of them the operator's (rbac.mode=cluster), with a
claim bound to a hostPath volume whose files the test reads from the node's disk.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import yaml

from localnode import CLUSTER_DIR, RELEASE_NS, ROOT, TIMINGS, Node, timing, wait_for
from stepshot.workdir import Layout

EXAMPLE = ROOT / "examples" / "fmnist-cluster.yaml"
TRAINER_SA = "stepshot-trainer"   # the chart's trainer ServiceAccount (release "stepshot")
RUN = f"{int(time.time()) % 100000:05d}"   # namespaces of this session: nas-*-RUN
PARTITIONED = {"mode": "partitioned", "epochs": 1, "lr": 0.01, "maxParallel": 2,
               "steps": [{"dimension": "width", "stage": 4, "parts": 2}]}


def training(name: str, namespace: str, **spec) -> dict:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    for key, value in spec.items():
        doc["spec"][key] = value if not isinstance(value, dict) or key == "fewShot" else {**doc["spec"].get(key, {}), **value}
    return doc


def apply(node: Node, doc: dict) -> None:
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def resource(node: Node, namespace: str, name: str) -> dict:
    return node.get("supernettraining", name, "-n", namespace)


def describe(node: Node, namespace: str, name: str) -> str:
    return (node.kubectl("describe", "sst", name, "-n", namespace, check=False)
            + node.kubectl("get", "jobs,pods", "-n", namespace, "-o", "wide", check=False)
            + node.kubectl("logs", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=stepshot", "--tail=40",
                           check=False))


def wait_phase(node: Node, namespace: str, name: str, timeout: float) -> dict:
    def finished():
        body = resource(node, namespace, name)
        return body if (body.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None
    try:
        return wait_for(finished, timeout, f"{namespace}/{name} to finish", interval=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe(node, namespace, name)}") from None


def children(node: Node, namespace: str, name: str, kinds: str = "jobs,pods,configmaps,services") -> list[dict]:
    return node.get(kinds, "-n", namespace, "-l", f"stepshot.dev/training={name}")["items"]


def event_reasons(node: Node, namespace: str, name: str) -> set[str]:
    items = node.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return {e["reason"] for e in items}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def report_pod_times(node: Node, namespace: str, name: str, label: str) -> None:
    """Per stage pod: created -> container started (scheduling, sandbox, mounts), and the
    container's own run time (Python and torch start-up included). Timestamps have 1 s steps."""
    for pod in sorted(children(node, namespace, name, "pods"), key=lambda p: p["metadata"]["creationTimestamp"]):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("startedAt"):
                start = (_ts(term["startedAt"]) - _ts(pod["metadata"]["creationTimestamp"])).total_seconds()
                ran = (_ts(term["finishedAt"]) - _ts(term["startedAt"])).total_seconds()
                TIMINGS.append(f"{label} pod {pod['metadata']['labels'].get('stepshot.dev/job')}: start overhead "
                               f"{start:.0f} s, ran {ran:.0f} s (exit {term.get('exitCode')})")


def assert_succeeded(node: Node, body: dict, work: Path, stages: list[str]) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    status = body["status"]
    assert status["phase"] == "Succeeded", describe(node, namespace, name)
    result = status["result"]
    assert result["n"] == 64 and math.isfinite(result["kendallTau"]) and -1 <= result["kendallTau"] <= 1
    for stage in stages:
        # The status's checkpoint is what the snapshot pod wrote: the hash of the file on the volume.
        checkpoint = status["stages"][stage]["checkpoint"]
        manifest = json.loads(Layout(work).snapshot_manifest(stage).read_text())
        assert checkpoint["sha256"] == manifest["sha256"] and len(checkpoint["sha256"]) == 64
        assert checkpoint["stage"] == stage and (work / checkpoint["file"]).is_file()
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert f"{result['kendallTau']:.4f}" in conditions["Succeeded"]["message"]
    row = node.kubectl("get", "sst", name, "-n", namespace)
    total = len(status["stages"])
    assert "Succeeded" in row and f"{result['kendallTau']:.3f}"[:4] in row and f"{total}/{total}" in row
    assert {"StageRunning", "StageSnapshotting", "StageSucceeded", "PhaseSucceeded"} <= event_reasons(
        node, namespace, name)


def scrape_trainer(node: Node, namespace: str, name: str) -> str | None:
    """A training pod's own /metrics while it trains (rank 0 serves spec.metricsPort)."""
    pods = node.get("pods", "-n", namespace, "-l", f"stepshot.dev/training={name},stepshot.dev/component=train")
    for pod in pods["items"]:
        if pod["status"].get("phase") == "Running" and pod["status"].get("podIP"):
            try:
                text = node.scrape(pod, 9400, timeout=2)
            except OSError:
                continue
            if "stepshot_trainer_step{" in text:
                return text
    return None


# --------------------------------------------------------------------------------------------

def test_grouped_run_succeeds_with_tau_checkpoints_events_and_metrics(operator):
    node, namespace, name = operator, f"nas-grouped-{RUN}", "grouped"
    work = node.work_volume(namespace)
    start = time.monotonic()
    apply(node, training(name, namespace))

    # the rates follow a 10 s window (stepshot_trainer.progress): wait for a scrape that has them
    metrics = wait_for(lambda: (text := scrape_trainer(node, namespace, name)) and
                       "stepshot_trainer_images_per_second{" in text and text, 300, "a training pod's rates", 0.25)
    assert 'stepshot_trainer_step{partition="root",stage="oneshot"}' in metrics
    assert 'stepshot_trainer_planned_steps{partition="root",stage="oneshot"}' in metrics

    body = wait_phase(node, namespace, name, 900)
    timing("grouped G=2 (2 train + 2 snapshot + 1 eval pods): apply -> Succeeded", time.monotonic() - start)
    assert_succeeded(node, body, work, ["oneshot", "g2"])
    report_pod_times(node, namespace, name, "grouped")

    # Stage pods run as the chart's trainer identity in a namespace the chart never saw,
    # without an API token.
    pod = children(node, namespace, name, "pods")[0]
    assert pod["spec"]["serviceAccountName"] == TRAINER_SA
    assert not any(v.get("projected") or v.get("secret") for v in pod["spec"]["volumes"])

    op_metrics = node.scrape(node.operator_pod(), 8080)
    assert f'stepshot_kendall_tau{{name="{name}",namespace="{namespace}"}}' in op_metrics
    assert 'stepshot_resources{phase="Succeeded"}' in op_metrics


def _kill_container(pod: dict, signal: str = "SIGKILL") -> None:
    """Signal the pod's container through the node's runtime: SIGKILL as the OOM killer would,
    SIGTERM as the kubelet does when the pod is preempted, evicted or drained."""
    container = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    subprocess.run(["ctr", "--address", str(CLUSTER_DIR / "run" / "containerd.sock"), "-n", "k8s.io",
                    "task", "kill", "-s", signal, container], check=True, capture_output=True)


GPU_TAINT = "stepshot.dev/test-gpu"


def test_a_tainted_node_and_a_preempted_pod_scheduling_and_sigterm_checkpoint(operator):
    """spec.scheduling reaches real pods (they tolerate a tainted node); SIGTERM mid-epoch makes
    the trainer checkpoint, and the Job's next pod resumes from that step to Succeeded."""
    node, namespace, name = operator, f"nas-preempted-{RUN}", "preempted"
    work = node.work_volume(namespace)
    node.kubectl("taint", "node", "localhost", f"{GPU_TAINT}=true:NoSchedule")
    start = time.monotonic()
    try:
        scheduling = {"tolerations": [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                      "nodeSelector": {"kubernetes.io/hostname": "localhost"},
                      "labels": {"kueue.x-k8s.io/queue-name": "team"}, "annotations": {"example.com/gang": "g1"}}
        apply(node, training(name, namespace, dataset={"trainLimit": 6144}, scheduling=scheduling))

        def training_pod_at_step(least: int):
            pods = node.get("pods", "-n", namespace, "-l", f"stepshot.dev/job={name}-oneshot")["items"]
            for pod in pods:
                if pod["status"].get("phase") == "Running" and pod["status"].get("podIP"):
                    try:
                        text = node.scrape(pod, 9400, timeout=2)
                    except OSError:
                        continue
                    steps = [float(ln.split()[-1]) for ln in text.splitlines()
                             if ln.startswith('stepshot_trainer_step{partition="root",stage="oneshot"}')]
                    if steps and steps[0] >= least:
                        return pod
            return None
        victim = wait_for(lambda: training_pod_at_step(5), 600, "the one-shot pod at step 5", 0.5)
        _kill_container(victim, "SIGTERM")
        body = wait_phase(node, namespace, name, 900)
        timing("preempted G=2 on a tainted node (one-shot pod SIGTERMed mid-epoch, resumed): apply -> Succeeded",
               time.monotonic() - start)
    finally:
        node.kubectl("taint", "node", "localhost", f"{GPU_TAINT}-", check=False)
    assert_succeeded(node, body, work, ["oneshot", "g2"])
    pods = {p["metadata"]["name"]: p for p in node.get("pods", "-n", namespace, "-l",
                                                        f"stepshot.dev/job={name}-oneshot")["items"]}
    first = pods[victim["metadata"]["name"]]
    term = first["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] != 0 and "SIGTERM: checkpoint at step" in term["message"], term
    step = int(re.search(r"checkpoint at step (\d+)", term["message"]).group(1))
    [second] = [n for n in pods if n != victim["metadata"]["name"]]
    log = node.kubectl("logs", second, "-n", namespace)
    assert f"resumed from preempted.pt (epoch 0, step {step})" in log, log[-2000:]
    assert not (work / "oneshot" / "checkpoints" / "preempted.pt").exists()   # superseded by the epoch's
    for pod in children(node, namespace, name, "pods"):
        spec, meta = pod["spec"], pod["metadata"]
        assert {"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert spec["nodeSelector"] == {"kubernetes.io/hostname": "localhost"}
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team" and meta["annotations"]["example.com/gang"] == "g1"


def test_partitioned_run_survives_an_operator_restart_and_a_killed_partition_pod(operator):
    node, namespace, name = operator, f"nas-partitioned-{RUN}", "partitioned"
    work = node.work_volume(namespace)
    start = time.monotonic()
    apply(node, training(name, namespace, fewShot=PARTITIONED, resources={"cpu": "900m"}))

    # The operator pod dies while the one-shot Job runs; its Deployment brings it back.
    first = wait_for(lambda: {j["metadata"]["name"]: j["metadata"]["uid"] for j in children(node, namespace, name, "jobs")},
                     120, "the one-shot Job")
    node.kubectl("delete", "pod", node.operator_pod()["metadata"]["name"], "-n", RELEASE_NS, "--wait=false")
    node.wait_operator_ready()

    # A partition's container is killed mid-run: the Job controller starts another pod.
    def running_partition():
        pods = node.get("pods", "-n", namespace, "-l", f"stepshot.dev/job={name}-s4w0")["items"]
        return next((p for p in pods if (p["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("running")),
                    None)
    _kill_container(wait_for(running_partition, 600, "partition s4w0 to run", 0.5))

    body = wait_phase(node, namespace, name, 900)
    timing("partitioned 2 parts (3 train + 3 snapshot + 1 eval pods, 1 killed, operator restarted): "
           "apply -> Succeeded", time.monotonic() - start)
    assert_succeeded(node, body, work, ["oneshot", "s4w0", "s4w1"])
    jobs = {j["metadata"]["name"]: j for j in children(node, namespace, name, "jobs")}
    assert set(jobs) == {f"{name}-{s}" for s in ("oneshot", "oneshot-snap", "s4w0", "s4w0-snap", "s4w1", "s4w1-snap",
                                                 "eval")}
    for job, uid in first.items():
        assert jobs[job]["metadata"]["uid"] == uid, f"{job} was recreated"
    retried = jobs[f"{name}-s4w0"]["status"]
    assert retried["succeeded"] == 1 and retried.get("failed", 0) == 1
    assert len(children(node, namespace, name, "pods")) == len(jobs) + 1
    report_pod_times(node, namespace, name, "partitioned")


def test_a_failing_stage_fails_the_run_and_shows_its_log_tail(operator):
    node, namespace, name = operator, f"nas-failing-{RUN}", "failing"
    work = node.work_volume(namespace)
    # The data set's volume is a folder without the data: the one-shot stage cannot start.
    empty = {"hostPath": {"path": str(work), "type": "Directory"}}
    apply(node, training(name, namespace, backoffLimit=0, dataset={"volume": empty}))
    body = wait_phase(node, namespace, name, 300)
    status = body["status"]
    assert status["phase"] == "Failed" and status["stages"]["oneshot"]["state"] == "Failed"
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    # The trainer's preflight refused the input: exit code 2 from the trainer container itself
    # (stepshot_trainer.launch passes the worker's code through torchrun), and the status names
    # the field and the folder from the pod's termination message (1.20: no podFailurePolicy).
    assert failed["status"] == "True" and failed["reason"] == "InvalidInput", failed
    missing = "spec.dataset.path: /data/fashion-mnist: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"
    assert failed["message"].startswith(f"stage oneshot refused its input: {missing}"), failed
    assert status["stages"]["oneshot"]["reason"] == "InvalidInput"
    [pod] = node.get("pods", "-n", namespace, "-l", f"stepshot.dev/job={name}-oneshot")["items"]
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 2 and term["message"].startswith(f"stepshot: error: {missing}"), term
    assert missing in node.kubectl("logs", f"job/{name}-oneshot", "-n", namespace)
    assert "PhaseFailed" in event_reasons(node, namespace, name)


def test_deleting_the_resource_lets_the_garbage_collector_remove_its_children(operator):
    node, namespace, name = operator, f"nas-deleted-{RUN}", "deleted"
    node.work_volume(namespace)
    # Two nodes: a headless Service besides the Jobs (one per rank on this 1.20 node).
    apply(node, training(name, namespace, resources={"nodes": 2, "cpu": "250m", "memory": "512Mi"}))
    kinds = lambda: {o["kind"] for o in children(node, namespace, name)}  # noqa: E731
    wait_for(lambda: {"Job", "Pod", "ConfigMap", "Service"} <= kinds(), 120, "the children")
    node.kubectl("delete", "sst", name, "-n", namespace, "--wait=false")
    wait_for(lambda: not children(node, namespace, name), 120, "the garbage collector")
    explained = node.kubectl("explain", "supernettraining.status.result")       # a structural status schema
    assert "kendallTau" in explained
    # The trainer ServiceAccount is the namespace's, not the resource's: it stays.
    assert node.get("serviceaccount", TRAINER_SA, "-n", namespace)["automountServiceAccountToken"] is False
