"""A real single-node Kubernetes (scripts/local-cluster.sh) with the project's images and chart.

Session-wide: the node is started once (and stopped at the end if this session started it),
both images are built from the Dockerfile (scripts/build-images.sh) and imported into the
node's containerd, and the chart installs the operator as a pod from the operator image, with
the chart's ServiceAccount and RBAC only. Tests then act as users do: `kubectl apply`,
`kubectl get/describe/logs`, and read what the pods wrote on the node's disk.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

import apiserver   # tests/: shared helpers (conftest puts it on sys.path)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "local-cluster.sh"
IMAGES = ROOT / "scripts" / "build-images.sh"
VALUES = ROOT / "examples" / "local-cluster" / "values.yaml"   # image tag "dev", rbac.mode=cluster
TAG = "dev"
RELEASE, RELEASE_NS = "stepshot", "stepshot-system"
CLUSTER_DIR = Path(os.environ.get("STEPSHOT_CLUSTER_DIR", "/var/tmp/stepshot-cluster"))
TIMINGS: list[str] = []          # figures the session reports at its end (conftest)


def timing(what: str, seconds: float) -> None:
    TIMINGS.append(f"{what}: {seconds:.1f} s")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """tests/apiserver.py's, polling at kubectl's pace."""
    return apiserver.wait_for(predicate, timeout, what, interval)


def _pod_processes() -> set[int]:
    """Processes in containerd's k8s.io cgroups: the node's containers (nothing else runs pods here)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and "/k8s.io/" in (proc / "cgroup").read_text():
                pids.add(int(proc.name))
        except OSError:   # the process ended meanwhile
            pass
    return pids


@dataclass
class Node:
    kubeconfig: Path
    started_here: bool

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def up(cls) -> "Node":
        was_up = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0
        start = time.monotonic()
        # The node's cluster DNS (scripts/cluster-dns.py) runs on this Python (dnslib, kubernetes).
        out = _run(["bash", str(CLUSTER), "up"], env=dict(os.environ, STEPSHOT_PYTHON=sys.executable)).stdout.strip().splitlines()
        node = cls(Path(out[-1]), started_here=not was_up)
        timing("node up", time.monotonic() - start)
        return node

    def down(self) -> None:
        """Stop the node if this session started it; no pod process may outlive it."""
        if not self.started_here:
            return
        pods = _pod_processes()
        _run(["bash", str(CLUSTER), "down"])
        wait_for(lambda: not pods & _pod_processes(), 10, "the node's pod processes to end after `down`", 0.2)

    def load_images(self) -> None:
        start = time.monotonic()
        archives = _run(["bash", str(IMAGES)], env=dict(os.environ, STEPSHOT_IMAGE_TAG=TAG)).stdout.split()
        timing("image build", time.monotonic() - start)
        start = time.monotonic()
        _run(["bash", str(CLUSTER), "load", *archives])
        timing("image import", time.monotonic() - start)
        for archive in archives:
            TIMINGS.append(f"image {Path(archive).name}: {Path(archive).stat().st_size / 2**20:.0f} MiB")

    # ------------------------------------------------------------------ clients
    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=self.env(), input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr[-3000:]}")
        return proc.stdout

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def client(self):
        from kubernetes import config
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    # ------------------------------------------------------------------ the operator
    def install_chart(self, tmp: Path, values: dict | None = None) -> None:
        """The operator from its image, watching every namespace: the README's command (with
        `values` on top, e.g. the monitors)."""
        extra = tmp / "values.yaml"
        extra.write_text(json.dumps({"operator": {"extraArgs": ["--resync", "5"]}, **(values or {})}))
        start = time.monotonic()
        existed = self.operator_pod() is not None
        _run([sys.executable, str(ROOT / "scripts" / "install-chart.py"), "-f", str(VALUES), "-f", str(extra),
              "--release", RELEASE, "-n", RELEASE_NS], env=self.env())
        if existed:   # same tag, new image: the pod must be recreated to run it
            self.kubectl("rollout", "restart", f"deployment/{RELEASE}", "-n", RELEASE_NS)
        self.kubectl("rollout", "status", f"deployment/{RELEASE}", "-n", RELEASE_NS, "--timeout=180s")
        self.wait_operator_ready()
        timing("chart install -> operator Ready", time.monotonic() - start)

    def operator_pod(self) -> dict | None:
        pods = self.get("pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=stepshot")["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return live[0] if live else None

    def wait_operator_ready(self, timeout: float = 180) -> dict:
        def ready():
            pod = self.operator_pod()
            conds = {c["type"]: c["status"] for c in ((pod or {}).get("status") or {}).get("conditions") or []}
            return pod if conds.get("Ready") == "True" else None
        try:
            return wait_for(ready, timeout, "the operator pod to be Ready")
        except AssertionError:
            raise AssertionError(f"operator not Ready:\n{self.kubectl('describe', 'pods', '-n', RELEASE_NS, check=False)}"
                                 f"\n{self.kubectl('logs', '-n', RELEASE_NS, '-l', 'app.kubernetes.io/name=stepshot', '--tail=50', check=False)}")

    def scrape(self, pod: dict, port: int, timeout: float = 5) -> str:
        """GET /metrics from a pod's IP: the node's bridge routes to pods, as a Prometheus would."""
        url = f"http://{pod['status']['podIP']}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode()

    # ------------------------------------------------------------------ storage on the node
    def work_volume(self, namespace: str, claim: str = "stepshot-work") -> Path:
        """A namespace with a claim bound to a fresh hostPath PersistentVolume; returns its folder."""
        path = CLUSTER_DIR / "volumes" / f"{namespace}-work"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)     # pods run as uid 1000; a hostPath volume gets no fsGroup
        docs = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-work"},
             "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                      "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                      "claimRef": {"namespace": namespace, "name": claim},
                      "hostPath": {"path": str(path), "type": "Directory"}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": f"{namespace}-work",
                      "resources": {"requests": {"storage": "1Gi"}}}},
        ]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        # The PV controller binds on its next sync (up to 15 s): wait here, so that pod start
        # figures measure the stage pods, not the claim.
        wait_for(lambda: self.get("pvc", claim, "-n", namespace)["status"].get("phase") == "Bound", 60,
                 f"claim {namespace}/{claim} to bind")
        return path
