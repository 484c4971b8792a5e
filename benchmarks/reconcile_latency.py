#!/usr/bin/env python3
"""Reconcile latency and operator memory against a real kube-apiserver, under load.

Starts etcd + kube-apiserver (tests/apiserver.py) and the operator (`python -m stepshot_operator`,
resync 10 s as in the chart), creates N grouped SupernetTrainings (oneshot, G=2, eval: five Jobs
each) at once, and plays the Job controller and the kubelet for all of them: every Job is
finished as soon as a watch shows it. Measured per N:
- latency from "a child Job finished" to "the next stage's Job created" (watch time), p50/p95;
- the operator's RSS: peak during the run, and after every resource finished and two resyncs.
Prints one JSON line per N.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "operator")]

from apiserver import ApiServer, find_binary, finish_job, result_message, terminated_pod  # noqa: E402
from kubeplay import OperatorProcess, Training, percentile  # noqa: E402

from stepshot.spec import API_VERSION, KIND, crd  # noqa: E402


def training(name: str) -> dict:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
            "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"},
                     "storage": {"claimName": "work"}, "fewShot": {"mode": "grouped", "groups": [2]}}}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _watch(batch, namespace: str, seen: queue.Queue, stop: threading.Event) -> None:
    from kubernetes import watch

    w = watch.Watch()
    try:
        for event in w.stream(batch.list_namespaced_job, namespace, label_selector="stepshot.dev/training",
                              timeout_seconds=3600):
            if event["type"] == "ADDED":
                seen.put((time.monotonic(), event["object"]))
            if stop.is_set():
                w.stop()
    except Exception:  # noqa: BLE001 - the server goes away at the end of the benchmark
        if not stop.is_set():
            raise


def measure(server: ApiServer, count: int, timeout: float) -> dict:
    namespace = server.create_namespace(f"load-{count}")
    operator = OperatorProcess(server, namespace, Path(tempfile.mkdtemp()) / "operator.log").start(resync=10)
    pid = operator.proc.pid
    trainings = {f"r{i}": Training(server, namespace, training(f"r{i}")) for i in range(count)}
    batch, core = next(iter(trainings.values())).batch, next(iter(trainings.values())).core
    seen: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_watch, args=(batch, namespace, seen, stop), daemon=True).start()
    started = time.monotonic()
    for t in trainings.values():
        t.create()
    finished_at: dict[str, float] = {}      # Job -> when the Job it waits for was finished
    latencies: list[float] = []
    evals_done, peak = 0, rss_mib(pid)
    deadline = started + timeout
    while evals_done < count and time.monotonic() < deadline:
        try:
            at, job = seen.get(timeout=1)
        except queue.Empty:
            peak = max(peak, rss_mib(pid))
            continue
        name, owner = job.metadata.name, job.metadata.labels["stepshot.dev/training"]
        if name in finished_at:
            latencies.append(at - finished_at.pop(name))
        t = trainings[owner]
        message = result_message(job.metadata.labels)
        if message is not None:
            terminated_pod(core, job, message)
        finish_job(batch, namespace, name)
        done = time.monotonic()
        for successor in t.expected_after(name):
            finished_at[successor] = done
        evals_done += name == f"{owner}-eval"
        peak = max(peak, rss_mib(pid))
    wall = time.monotonic() - started
    time.sleep(25)                             # two resyncs over the finished resources
    after = rss_mib(pid)
    stop.set()
    operator.stop()
    return {"resources": count, "jobs_per_resource": 5, "transitions": len(latencies), "finished": evals_done,
            "p50_s": round(percentile(latencies, 0.5), 3), "p95_s": round(percentile(latencies, 0.95), 3),
            "wall_s": round(wall, 1), "rss_peak_mib": round(peak, 1), "rss_after_mib": round(after, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per N")
    args = parser.parse_args()
    server = ApiServer(find_binary()).start()
    try:
        server.apply_crd(crd())
        for count in args.resources:
            print(json.dumps(measure(server, count, args.timeout)), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
