"""`stepshot run`: the whole plan locally, resumable, with a stage table, report and plot."""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import yaml

from stepshot import cpus, local
from stepshot.cli import main
from trainer_helpers import TINY, needs_fmnist, processes_mentioning


def write_spec(tmp_path, truth_codes=None):
    doc = copy.deepcopy(TINY)
    doc["apiVersion"], doc["kind"] = "stepshot.dev/v1alpha1", "SupernetTraining"
    doc["spec"]["oneShot"]["epochs"] = 1
    doc["spec"]["evaluation"].update(groundTruth="gt.json", everyStage=True)
    from stepshot.archsets import stratified_archs
    from stepshot.space import get_space

    archs = stratified_archs(get_space("resnet48-fmnist"), 4, seed=1)
    (tmp_path / "gt.json").write_text(json.dumps(
        {f"arch{i}": {"arch": a.encode(), "acc": 80.0 + i} for i, a in enumerate(archs)}))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@needs_fmnist
def test_run_resumes_and_never_reruns_finished_stages(tmp_path, capsys):
    spec_file = write_spec(tmp_path)
    work = tmp_path / "work"
    assert main(["run", str(spec_file), "--workdir", str(work), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "oneshot" in out and "g2" in out and "kendall" in out
    report = json.loads((work / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["done", "done"]
    assert report["final"]["n"] == 4 and -1 <= report["final"]["kendall_tau"] <= 1
    # How the numbers were made travels with them: the thread count asked for, the images used.
    protocol = report["final"]["protocol"]
    assert protocol["threads"] == 1 and protocol["bn_folded"] and protocol["device"] == "cpu"
    assert protocol["processes"] == min(4, os.cpu_count())   # one evaluating process per core, 4 archs
    ev = TINY["spec"]["evaluation"]
    assert protocol["eval_images"] == ev["evalImages"]
    assert protocol["calibration_images"] == ev["calibrationBatches"] * ev["calibrationBatchSize"]
    assert (work / "ranking.png").stat().st_size > 1000
    # The free baselines stand beside the super-net, in the report and under the table.
    assert set(report["final"]["baselines"]) == {"macs", "params", "synflow", "snip", "grad_norm", "naswot",
                                                 "jacob_cov"}
    assert len(report["final"]["ci95"]) == 2 and "(free baseline)" in out
    oneshot_ckpt = (work / "snapshots" / "oneshot" / "model.pt").stat().st_mtime_ns

    # A run killed during g2: its DONE marker and snapshot never got written.
    (work / "g2" / "DONE").unlink()
    shutil.rmtree(work / "snapshots" / "g2")
    shutil.rmtree(work / "eval")
    results = local.run(spec_file, work)
    assert [(r.stage, r.status) for r in results] == [("oneshot", "skipped"), ("g2", "done")]
    assert (work / "snapshots" / "oneshot" / "model.pt").stat().st_mtime_ns == oneshot_ckpt
    assert results[-1].metrics["n"] == 4


def test_thread_count_is_explicit_for_every_child(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cpus.threads_per_process(None, procs=2) == 4     # the cores shared among a stage's processes
    assert cpus.threads_per_process(None) == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpus.threads_per_process(None, procs=2) == 3     # the caller's choice wins
    assert cpus.threads_per_process(2, procs=2) == 2        # and --threads over both
    assert cpus.threads_per_process(2, procs=2, cores=4) == 2
    assert main(["run", "x.yaml", "--threads", "0"]) == 2
    assert main(["run", "x.yaml", "--cores", "0"]) == 2


def test_evaluation_splits_architectures_over_processes(monkeypatch):
    """Evaluation: one thread per process and a process per core, unless threads are asked for."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cpus.evaluation_split(None) == (8, 1)
    assert cpus.evaluation_split(None, cores=2) == (2, 1)     # a run's share of the machine
    assert cpus.evaluation_split(2) == (4, 2)
    assert cpus.evaluation_split(16) == (1, 16)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")                 # an evaluation pod: its cores as threads
    assert cpus.evaluation_split(None) == (1, 8)


def test_bad_yaml_gets_the_api_servers_field_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
                                    "metadata": {"name": "x"},
                                    "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"},
                                             "resources": {"nodes": 0}}}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "spec.resources.nodes: Invalid value: 0" in err


@needs_fmnist
def test_sigterm_checkpoints_stops_every_process_and_the_rerun_resumes(tmp_path):
    spec_file = write_spec(tmp_path)
    doc = yaml.safe_load(spec_file.read_text())
    doc["spec"]["dataset"]["trainLimit"] = 1600          # 50 steps per epoch: time to land mid-epoch
    doc["spec"]["oneShot"]["epochs"] = 2
    spec_file.write_text(yaml.safe_dump(doc))
    work = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STEPSHOT_NO_PROGRESS": "1"}
    command = [sys.executable, "-m", "stepshot.cli", "run", str(spec_file), "--workdir", str(work)]
    runner = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = work / "oneshot" / "checkpoints" / "epoch-0001.pt"
    deadline = time.monotonic() + 300
    while not first.exists():
        assert time.monotonic() < deadline and runner.poll() is None, runner.stdout.read()
        time.sleep(0.05)
    runner.send_signal(signal.SIGTERM)                   # to `stepshot run` alone, as `kill` would
    out, _ = runner.communicate(timeout=120)
    assert runner.returncode == 1 and "stopped by SIGTERM" in out, out[-3000:]
    assert "SIGTERM: checkpoint at step" in out, out[-3000:]
    assert not processes_mentioning(str(work)), "left behind"
    assert (work / "oneshot" / "checkpoints" / "preempted.pt").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resumed from preempted.pt (epoch 1, step" in rerun.stdout + rerun.stderr


@needs_fmnist
def test_run_in_evaluation_shards_gives_the_unsharded_predictions(tmp_path):
    """spec.evaluation.shards: `stepshot run` evaluates the slices one after another and merges
    them; the predictions are the unsharded run's, bit for bit."""
    spec_file = write_spec(tmp_path)
    work = tmp_path / "work"
    local.run(spec_file, work, threads=1)
    before = {p.name: p.read_bytes() for p in (work / "eval").glob("*-predictions.json")}
    assert len(before) == 2                                          # everyStage: after each step
    doc = yaml.safe_load(spec_file.read_text())
    doc["spec"]["evaluation"].update(shards=3, checkpointEvery=1)
    spec_file.write_text(yaml.safe_dump(doc))
    shutil.rmtree(work / "eval")
    results = local.run(spec_file, work, threads=1)
    assert [r.status for r in results] == ["skipped", "skipped"] and results[-1].metrics["n"] == 4
    assert {p.name: p.read_bytes() for p in (work / "eval").glob("*-predictions.json")} == before
    parts = sorted(p.name for p in (work / "eval").glob("step1-predictions.parts/*/part-*.json"))
    assert parts == ["part-0000000-0000001.json", "part-0000001-0000002.json", "part-0000002-0000003.json",
                     "part-0000003-0000004.json"]
