"""The README's cluster section, pasted on the local node: every line of its fenced block runs
as written, in order, and the resource it applies reaches `Succeeded`.

What differs from a user's paste, and why (nothing else is changed):
- the images: the local node has no registry, so the helm line also gets the operator image
  built here (the `image` values of examples/local-cluster/values.yaml) and the applied
  SupernetTraining gets `spec.image` = the trainer image built here (a copy of the file);
- `helm` runs as scripts/install-chart.py (helm-sdkpy, the same chart and values) because this
  machine has no helm binary; it upgrades the release when the session already installed it;
- the node has no storage provisioner: a hostPath PersistentVolume stands in for the default
  StorageClass (pre-bound to the README's claim), made before the lines run. Namespace `nas` is
  deleted first, so the lines meet a cluster that has never seen them.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from localnode import CLUSTER_DIR, ROOT, TAG, VALUES, Node, timing, wait_for

README = ROOT / "README.md"
TRAINER_IMAGE = f"localhost/stepshot-trainer:{TAG}"


def readme_commands() -> list[list[str]]:
    """The argv of each line of the first ```bash block under `## On a cluster`."""
    section = README.read_text().split("\n## On a cluster\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [argv for line in lines if (argv := shlex.split(line, comments=True))]


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def helm_as_install_chart(argv: list[str], tmp: Path) -> list[str]:
    """`helm install RELEASE charts/stepshot -n NS --create-namespace --set K=V ...` for
    scripts/install-chart.py, plus the locally built operator image."""
    assert argv[1] == "install" and argv[3] == "charts/stepshot", argv
    out = [sys.executable, str(ROOT / "scripts" / "install-chart.py"), "--release", argv[2]]
    rest = argv[4:]
    while rest:
        flag = rest.pop(0)
        if flag in ("-n", "--namespace"):
            out += ["-n", rest.pop(0)]
        elif flag == "--set":
            out += ["--set", rest.pop(0)]
        elif flag != "--create-namespace":     # install-chart.py always creates the namespace
            raise AssertionError(f"helm option {flag} has no translation here: add one")
    image = tmp / "image-values.yaml"
    image.write_text(yaml.safe_dump({"image": yaml.safe_load(VALUES.read_text())["image"]}))
    return out + ["-f", str(image)]


def with_local_trainer(argv: list[str], tmp: Path) -> list[str]:
    """`kubectl apply ... -f FILE` with a copy of each SupernetTraining FILE naming the local trainer image."""
    out = list(argv)
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "-f":
            docs = list(yaml.safe_load_all((ROOT / arg).read_text()))
            if any(d.get("kind") == "SupernetTraining" for d in docs):
                for d in docs:
                    d["spec"]["image"] = TRAINER_IMAGE
                copy = tmp / Path(arg).name
                copy.write_text(yaml.safe_dump_all(docs))
                out[i] = str(copy)
    return out


def fresh_namespace_and_storage(node: Node, namespace: str, claim: str) -> None:
    """No `nas` from an earlier run, and a volume the README's claim binds to (the node's
    stand-in for a default StorageClass)."""
    node.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=180s")
    pv = f"{namespace}-{claim}"
    node.kubectl("delete", "pv", pv, "--ignore-not-found")
    path = CLUSTER_DIR / "volumes" / f"readme-{int(time.time())}"
    path.mkdir(parents=True)
    path.chmod(0o777)     # pods run as uid 1000; a hostPath volume gets no fsGroup
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": namespace, "name": claim},
                 "hostPath": {"path": str(path), "type": "Directory"}}}))


def run_wait(node: Node, argv: list[str], env: dict, namespace: str, name: str, timeout: float) -> str:
    """The README's `kubectl wait`, ended early (and the test failed) if the resource fails."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def done():
            if proc.poll() is not None:
                return True
            status = node.get("sst", name, "-n", namespace).get("status") or {}
            assert status.get("phase") != "Failed", node.kubectl("describe", "sst", name, "-n", namespace)
            return False
        wait_for(done, timeout, f"`{shlex.join(argv)}`", interval=2)
        out = proc.stdout.read()
        assert proc.returncode == 0, f"{shlex.join(argv)} exited {proc.returncode}:\n{out}\n" + \
            node.kubectl("describe", "sst,pods", "-n", namespace, check=False)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_readme_cluster_commands_run_as_pasted_to_succeeded(node, tmp_path):
    commands = readme_commands()
    [wait] = [c for c in commands if c[:2] == ["kubectl", "wait"]]
    assert "--for=condition=Succeeded" in wait, wait
    namespace, name = _option(wait, "-n"), wait[2].split("/", 1)[1]
    [claim_file] = [c[-1] for c in commands if c[:2] == ["kubectl", "apply"] and "claim" in c[-1]]
    claim = yaml.safe_load((ROOT / claim_file).read_text())["metadata"]["name"]

    fresh_namespace_and_storage(node, namespace, claim)
    existed = node.operator_pod() is not None   # installed by this session's `operator` fixture
    env = dict(node.env(), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    outputs = {}
    try:
        for argv in commands:
            if argv[0] == "helm":
                cmd = helm_as_install_chart(argv, tmp_path)
            elif argv[:2] == ["kubectl", "apply"]:
                cmd = with_local_trainer(argv, tmp_path)
            else:
                cmd = argv
            if cmd is wait:
                outputs["wait"] = run_wait(node, cmd, env, namespace, name, 900)
                continue
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"README line `{shlex.join(argv)}` exited {proc.returncode}:\n" \
                                         f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            outputs[shlex.join(argv)] = proc.stdout
        timing("README cluster section, helm install -> Succeeded", time.monotonic() - start)

        body = node.get("sst", name, "-n", namespace)
        status = body["status"]
        assert status["phase"] == "Succeeded" and -1 <= status["result"]["kendallTau"] <= 1, status
        assert body["spec"]["image"] == TRAINER_IMAGE          # the only change to the applied file
        listed = [out for line, out in outputs.items() if line.startswith("kubectl get")]
        assert listed and all("Succeeded" in out and name in out for out in listed), listed
        described = [out for line, out in outputs.items() if line.startswith("kubectl describe")]
        assert described and all("PhaseSucceeded" in out for out in described), described
        rendered = [out for line, out in outputs.items() if line.startswith("stepshot render")]
        assert all("kind: Job" in out for out in rendered), rendered
    finally:
        if existed:   # give later tests the session's operator back (local values, resync 5 s)
            node.install_chart(tmp_path)
