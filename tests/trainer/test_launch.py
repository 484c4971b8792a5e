"""`stepshot_trainer.launch`: torchrun whose exit code is its worker's, under real torchrun
agents and workers on CPU (one thread per process)."""
import copy
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from stepshot.commands import StageCommands
from stepshot_trainer.launch import worker_exit_code
from trainer_helpers import TINY, needs_fmnist, processes_mentioning

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "STEPSHOT_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}


def _spec_file(tmp_path, **dataset):
    doc = copy.deepcopy(TINY)
    doc.update(apiVersion="stepshot.dev/v1alpha1", kind="SupernetTraining")
    doc["spec"]["dataset"].update(dataset)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _train(tmp_path, spec_file, procs: int) -> list[str]:
    launcher = ("--standalone", "--nnodes", "1", "--nproc-per-node", str(procs))
    return StageCommands(sys.executable, str(spec_file), str(tmp_path / "work")).train("oneshot", launcher)


@pytest.mark.parametrize("procs", [1, 2])
def test_bad_input_exits_2_with_the_workers_one_line_and_no_traceback(tmp_path, procs):
    spec_file = _spec_file(tmp_path, path=str(tmp_path / "no-such-data"))
    message = tmp_path / "termination-log"
    env = {**ENV, "STEPSHOT_TERMINATION_LOG": str(message)}
    out = subprocess.run(_train(tmp_path, spec_file, procs), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = set(out.stderr.splitlines())             # each rank says it (the preflight's): the same line
    error = f"spec.dataset.path: {tmp_path / 'no-such-data'}: no such directory"
    assert lines == {f"stepshot train: error: {error}"}, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert message.read_text() == f"stepshot: error: {error}"      # what the operator shows


def test_a_worker_killed_by_a_signal_exits_as_the_shell_reports_it():
    def failed(*codes: int) -> ChildFailedError:
        failures = {rank: ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=code, error_file="")
                    for rank, code in enumerate(codes)}
        for rank, failure in failures.items():
            failure.timestamp = rank          # rank 0 failed first: the root cause
        return ChildFailedError("stepshot.cli", failures)

    assert worker_exit_code(failed(2, -15)) == 2
    assert worker_exit_code(failed(-9)) == 137
    assert worker_exit_code(failed(143, 143)) == 143


@needs_fmnist
@pytest.mark.slow
def test_sigterm_to_the_launcher_alone_checkpoints_and_exits_143(tmp_path):
    """What the kubelet does to a preempted pod: SIGTERM to PID 1 (the agent), which forwards it."""
    spec_file = _spec_file(tmp_path, trainLimit=1600)    # 50 steps per epoch: time to land mid-epoch
    work = tmp_path / "work"
    proc = subprocess.Popen(_train(tmp_path, spec_file, 2), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = work / "oneshot" / "checkpoints" / "epoch-0001.pt"
        deadline = time.monotonic() + 300
        while not first.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for line in processes_mentioning(str(work)):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
    assert proc.returncode == 143, out[-3000:]
    assert "SIGTERM: checkpoint at step" in out, out[-3000:]
    assert (work / "oneshot" / "checkpoints" / "preempted.pt").exists()
