"""Multi-node stages as pods on the real node: the cluster DNS (scripts/cluster-dns.py, the
node's CoreDNS stand-in) answers the stage's headless-Service records, two rank pods meet in
the c10d rendezvous over the pod network (gloo on CPU), train as one process group and leave
one checkpoint on the shared claim.

The node is Kubernetes 1.20: no Indexed Jobs, so a 2-node stage is one single-pod Job per node
(`<job>-0`, `<job>-1`) with hostname `<job>-<n>` under the headless Service `<job>`.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import yaml

from localnode import ROOT, Node, timing, wait_for
from stepshot.workdir import Layout
from test_pipeline import RUN, _kill_container, apply, assert_succeeded, children, training, wait_phase

TRAINER_IMAGE = "localhost/stepshot-trainer:dev"
BRIDGE_IP = "10.244.7.1"   # scripts/local-cluster.sh: the CNI bridge gateway, where the cluster DNS listens
TWO_NODES = {"nodes": 2, "cpu": "500m", "memory": "1536Mi"}


def _pod(name: str, namespace: str, script: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, **spec,
                     "containers": [{"name": "main", "image": TRAINER_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["python", "-c", script]}]}}


def _pod_state(node: Node, namespace: str, name: str) -> dict:
    return node.get("pod", name, "-n", namespace)["status"]


def _node_query(name: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "cluster-dns.py"), "query", name, "--server", BRIDGE_IP],
                          capture_output=True, text=True)
    return proc.stdout.split()


RESOLVE = """
import socket
def ips(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 29500, proto=socket.IPPROTO_TCP)})
    except socket.gaierror as exc:
        return f"gaierror {exc.errno}"
print(open("/etc/resolv.conf").read())
for name in ("peer-0.peers", "peers", "peer-0.peers.{ns}.svc.cluster.local", "kubernetes.default", "peer-9.peers"):
    print("RESOLVED", name, ips(name))
"""


def test_a_pod_resolves_a_headless_service_and_its_pod_records_through_the_cluster_dns(node):
    """What a rank pod's init container and torchrun do: glibc's getaddrinfo through the pod's
    resolv.conf (the kubelet's --cluster-dns), the search list and the headless Service."""
    namespace = f"dns-{RUN}"
    node.kubectl("create", "namespace", namespace)
    wait_for(lambda: node.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False), 60,
             "the namespace's default ServiceAccount")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers", "namespace": namespace},
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"app": "peer-0"},
                        "ports": [{"port": 29500}]}}
    sleeper = _pod("peer-0", namespace, "import time; time.sleep(600)", hostname="peer-0", subdomain="peers")
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([service, sleeper]))
    peer_ip = wait_for(lambda: _pod_state(node, namespace, "peer-0").get("podIP"), 120, "peer-0's IP")
    # The Endpoints controller, then the DNS's watch, follow within seconds: ask from the node first.
    wait_for(lambda: _node_query(f"peer-0.peers.{namespace}.svc.cluster.local") == [peer_ip], 60, "the DNS record")
    # A second pod asks: its own /etc/hosts knows nothing of peer-0, so every answer is the DNS's.
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump(_pod("asker", namespace, RESOLVE.replace("{ns}", namespace))))
    wait_for(lambda: _pod_state(node, namespace, "asker").get("phase") in ("Succeeded", "Failed"), 120, "the asker pod")
    log = node.kubectl("logs", "asker", "-n", namespace)
    kubernetes_ip = node.get("service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    assert f"nameserver {BRIDGE_IP}" in log and f"search {namespace}.svc.cluster.local svc.cluster.local" in log, log
    assert f"RESOLVED peer-0.peers ['{peer_ip}']" in log, log
    assert f"RESOLVED peers ['{peer_ip}']" in log, log
    assert f"RESOLVED peer-0.peers.{namespace}.svc.cluster.local ['{peer_ip}']" in log, log
    assert f"RESOLVED kubernetes.default ['{kubernetes_ip}']" in log, log
    assert "RESOLVED peer-9.peers gaierror -2" in log, log      # EAI_NONAME: NXDOMAIN for every search path
    events = node.get("events", "-n", namespace)["items"]
    assert not [e for e in events if e["reason"] == "MissingClusterDNS"], events
    node.kubectl("delete", "namespace", namespace, "--wait=false")


def _train_logs(node: Node, namespace: str, name: str) -> dict[str, str]:
    """Every training pod's trainer log, by pod name."""
    return {pod["metadata"]["name"]: node.kubectl("logs", pod["metadata"]["name"], "-n", namespace, "-c", "trainer",
                                                  check=False)
            for pod in children(node, namespace, name, "pods")
            if pod["metadata"]["labels"].get("stepshot.dev/component") == "train"}


def test_a_two_node_stage_trains_across_two_pods_to_succeeded(operator):
    node, namespace, name = operator, f"nas-multinode-{RUN}", "multinode"
    work = node.work_volume(namespace)
    start = time.monotonic()
    apply(node, training(name, namespace, dataset={"trainLimit": 1024}, fewShot={"mode": "none"},
                         oneShot={"epochs": 1}, resources=TWO_NODES))
    body = wait_phase(node, namespace, name, 900)
    timing("2-node one-shot stage as two pods (2 train + 1 snapshot + 1 eval pods): apply -> Succeeded",
           time.monotonic() - start)
    assert_succeeded(node, body, work, ["oneshot"])

    jobs = {j["metadata"]["name"] for j in children(node, namespace, name, "jobs")}
    assert {f"{name}-oneshot-0", f"{name}-oneshot-1"} <= jobs
    [service] = [s for s in children(node, namespace, name, "services")]
    assert service["metadata"]["name"] == f"{name}-oneshot" and service["spec"]["clusterIP"] == "None"
    train = [p for p in children(node, namespace, name, "pods") if p["metadata"]["labels"]["stepshot.dev/component"] == "train"]
    assert sorted(p["spec"]["hostname"] for p in train) == [f"{name}-oneshot-0", f"{name}-oneshot-1"]
    assert len({p["status"]["podIP"] for p in train}) == 2 and all(p["status"]["phase"] == "Succeeded" for p in train)

    # One process group of two ranks: 1024 images / (64 per rank x 2 ranks) = 8 steps (one rank
    # alone would take 16), and one checkpoint, which only rank 0 writes.
    # Either pod's agent may get group rank 0 in the rendezvous: exactly one has it.
    logs = _train_logs(node, namespace, name)
    assert len([log for log in logs.values() if "2 process(es), rank 0 on cpu, backend gloo" in log]) == 1, logs
    checkpoints = work / "oneshot" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0001.json", "epoch-0001.pt"]
    assert json.loads((checkpoints / "epoch-0001.json").read_text())["step"] == 8
    assert Layout(work).snapshot_manifest("oneshot").is_file()


def test_a_killed_rank_pod_mid_stage_makes_the_group_restart_and_resume(operator):
    """SIGKILL (as the OOM killer) to the container of node 1's pod after the first epoch's
    checkpoint: node 0's worker loses its gloo peer, its agent restarts the worker group
    (spec.maxRestarts), the Job starts a new pod for node 1 under the same hostname (a new IP,
    found again through the DNS), both agents meet in the next rendezvous round and the group
    resumes from the checkpoint to Succeeded."""
    node, namespace, name = operator, f"nas-multikill-{RUN}", "multikill"
    work = node.work_volume(namespace)
    start = time.monotonic()
    # 32 steps an epoch (4096 images, 64 per rank, 2 ranks): the kill lands inside epoch 2.
    apply(node, training(name, namespace, dataset={"trainLimit": 4096}, fewShot={"mode": "none"},
                         oneShot={"epochs": 3}, resources=TWO_NODES, maxRestarts=3))
    first = work / "oneshot" / "checkpoints" / "epoch-0001.json"
    wait_for(first.is_file, 600, "the first epoch's checkpoint", 0.25)
    [victim] = [p for p in node.get("pods", "-n", namespace, "-l", f"stepshot.dev/job={name}-oneshot-1")["items"]]
    _kill_container(victim)
    body = wait_phase(node, namespace, name, 600)
    timing("2-node stage, node 1's pod SIGKILLed after epoch 1 (group restart, resumed): apply -> Succeeded",
           time.monotonic() - start)
    assert_succeeded(node, body, work, ["oneshot"])
    jobs = {j["metadata"]["name"]: j["status"] for j in children(node, namespace, name, "jobs")}
    assert jobs[f"{name}-oneshot-1"].get("failed") == 1 and jobs[f"{name}-oneshot-1"]["succeeded"] == 1, jobs
    assert not jobs[f"{name}-oneshot-0"].get("failed") and jobs[f"{name}-oneshot-0"]["succeeded"] == 1, jobs
    logs = "\n".join(_train_logs(node, namespace, name).values())
    # From the last epoch's checkpoint, or from preempted.pt if node 0's worker got SIGTERM from its
    # agent before it noticed the lost peer (the trainer then checkpoints mid-epoch).
    resumed = re.search(r"resumed from (epoch-\d+|preempted)\.pt \(epoch (\d+), step (\d+)\)", logs)
    assert resumed, logs[-4000:]
    epoch, step = int(resumed.group(2)), int(resumed.group(3))
    if resumed.group(1) == "preempted":
        assert epoch in (1, 2) and 32 * epoch <= step < 32 * (epoch + 1), resumed.group(0)
    else:
        assert resumed.group(1) == f"epoch-{epoch:04d}" and epoch in (1, 2) and step == 32 * epoch, resumed.group(0)
    final = json.loads((work / "oneshot" / "checkpoints" / "epoch-0003.json").read_text())
    assert final["step"] == 96                      # 3 epochs x 32 steps: every step once after the resume
