"""A multi-node stage as the operator renders it: two torchrun agents (two "nodes") meet in the
c10d rendezvous with exactly the PET_* settings of the stage's pods. When one node's worker
dies mid-run, both agents restart the group, which resumes from the last checkpoint and ends
with the weights an uninterrupted run reaches. CPU, gloo, one thread per process."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from stepshot import manifests, plan
from stepshot.manifests import Caps, Context
from stepshot_trainer import checkpoint
from trainer_helpers import TINY, needs_fmnist, tiny_spec

pytestmark = [needs_fmnist, pytest.mark.slow]
SPEC = {"dataset": {"trainLimit": 640}, "oneShot": {"epochs": 3}, "resources": {"nodes": 2}}


def _pod_env(spec) -> dict[str, str]:
    """The torchrun settings the operator gives each node's pod (PET_*), for this machine."""
    ctx = Context(spec, plan.build_plan(spec), Caps())
    job = next(o for o in manifests.train_objects(ctx, ctx.plan.stage("oneshot")) if o["kind"] == "Job")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
           if e["name"].startswith("PET_")}
    host, port = env["PET_RDZV_ENDPOINT"].rsplit(":", 1)
    assert env["PET_RDZV_BACKEND"] == "c10d" and host == "tiny-oneshot-0.tiny-oneshot"
    return env


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(spec_file: Path, workdir: Path, env: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    env = {**os.environ, **env, "PET_RDZV_ENDPOINT": f"127.0.0.1:{_free_port()}", "OMP_NUM_THREADS": "1",
           "STEPSHOT_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "-m", "stepshot.cli", "train", str(spec_file),
               "--stage", "oneshot", "--workdir", str(workdir)]
    return [subprocess.Popen(command, env=env, stdout=open(logs / f"node{i}.log", "w"), stderr=subprocess.STDOUT,
                             start_new_session=True) for i in range(2)]


def _wait(procs: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_node_losing_its_worker_restarts_the_group_from_the_last_checkpoint(tmp_path):
    spec = tiny_spec(**SPEC)
    env = _pod_env(spec)
    doc = {**TINY, "spec": {**TINY["spec"], **{k: {**TINY["spec"].get(k, {}), **v} for k, v in SPEC.items()}}}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining", **doc}))

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert _wait(_nodes(spec_file, tmp_path / "a", env, tmp_path / "a")) == [0, 0]

    agents = _nodes(spec_file, tmp_path / "b", env, tmp_path / "b")
    first = tmp_path / "b/oneshot/checkpoints/epoch-0001.pt"
    deadline = time.monotonic() + 180
    while not checkpoint.is_valid(first):
        assert time.monotonic() < deadline and all(a.poll() is None for a in agents), "no epoch-1 checkpoint"
        time.sleep(0.05)
    [worker] = _children(agents[1].pid)               # node 1's only worker dies in epoch 2
    os.kill(worker, signal.SIGKILL)
    assert _wait(agents) == [0, 0]

    logs = "".join((tmp_path / "b" / f"node{i}.log").read_text() for i in range(2))
    assert "resumed from epoch-0001.pt" in logs, logs[-3000:]
    final = "oneshot/checkpoints/epoch-0003.pt"
    a, _ = checkpoint.load(tmp_path / "a" / final)
    b, _ = checkpoint.load(tmp_path / "b" / final)
    assert a.keys() == b.keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
