"""A multi-node stage as the operator renders it: two torchrun agents (two "nodes") meet in the
c10d rendezvous with exactly the PET_* settings of the stage's pods and train to the end with
the weights of one two-rank process group. CPU, gloo, one thread per process.

The group restart after one node dies (a replacement joining the next round) runs as pods in
tests/node/test_multinode.py and as processes in benchmarks/group_restart_check.sh (which
benchmarks/gpu_check.sh runs over NCCL on a machine with 2 GPUs)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stepshot import manifests, plan
from stepshot.commands import StageCommands
from stepshot.manifests import ClusterCaps, Context
from stepshot_trainer import checkpoint
from trainer_helpers import TINY, free_port, needs_fmnist, processes_mentioning, tiny_spec

pytestmark = [needs_fmnist, pytest.mark.slow]
SPEC = {"dataset": {"trainLimit": 640}, "oneShot": {"epochs": 3}, "resources": {"nodes": 2}}


def _pod_env(spec) -> dict[str, str]:
    """The torchrun settings the operator gives each node's pod (PET_*, TORCH_*), for this machine."""
    ctx = Context(spec, plan.build_plan(spec), ClusterCaps())
    job = next(o for o in manifests.train_objects(ctx, ctx.plan.stage("oneshot")) if o["kind"] == "Job")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
           if e["name"].startswith(("PET_", "TORCH_"))}
    host, port = env["PET_RDZV_ENDPOINT"].rsplit(":", 1)
    assert env["PET_RDZV_BACKEND"] == "c10d" and host == "tiny-oneshot-0.tiny-oneshot"
    return env


def _nodes(spec_file: Path, workdir: Path, env: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    env = {**os.environ, **env, "PET_RDZV_ENDPOINT": f"127.0.0.1:{free_port()}", "OMP_NUM_THREADS": "1",
           "STEPSHOT_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    command = StageCommands(sys.executable, str(spec_file), str(workdir)).train("oneshot")   # the pods' own
    return [subprocess.Popen(command, env=env, stdout=open(logs / f"node{i}.log", "w"), stderr=subprocess.STDOUT,
                             start_new_session=True) for i in range(2)]


def _wait(procs: list[subprocess.Popen], workdir: Path, timeout: float = 240) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        # torchrun starts its workers in sessions of their own: none may outlive the test
        for line in processes_mentioning(str(workdir)):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


def test_two_nodes_meet_in_the_rendezvous_the_pods_use_and_train_as_one_group(tmp_path):
    spec = tiny_spec(**SPEC)
    env = _pod_env(spec)
    doc = {**TINY, "spec": {**TINY["spec"], **{k: {**TINY["spec"].get(k, {}), **v} for k, v in SPEC.items()}}}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining", **doc}))
    assert _wait(_nodes(spec_file, tmp_path, env, tmp_path), tmp_path) == [0, 0]
    logs = "".join((tmp_path / f"node{i}.log").read_text() for i in range(2))
    assert "[stepshot] 2 process(es), rank 0 on cpu, backend gloo" in logs, logs[-3000:]
    final, _ = checkpoint.load(tmp_path / "oneshot/checkpoints/epoch-0003.pt")
    assert final["step"] == 30 and final["epoch"] == 3          # 640 images / (32 x 2 ranks) x 3 epochs
