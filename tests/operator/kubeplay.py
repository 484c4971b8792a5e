"""Drive a SupernetTraining through the real API server by playing the Job controller + kubelet.

Shared by test_operator_e2e.py and benchmarks/reconcile_latency.py. The operator runs as a
subprocess (`python -m stepshot_operator`), so a test can SIGKILL and restart it.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from apiserver import ApiServer, finish_job, result_message, terminated_pod, wait_for
from stepshot.names import job_name, snapshot_name
from stepshot.plan import build_plan
from stepshot.spec import GROUP, PLURAL, VERSION, load

LATENCIES: list[float] = []   # child Job finished -> next stage's Job visible, seconds (all runs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class OperatorProcess:
    def __init__(self, server: ApiServer, namespace: str, log: Path, env: dict[str, str] | None = None):
        self.server, self.namespace, self.log = server, namespace, log
        self.env = env or {}     # the chart's settings (the Deployment's environment)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60, resync: float = 2) -> "OperatorProcess":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stepshot_operator", "--namespace", self.namespace, "--standalone",
             "--metrics-port", "0", "--resync", str(resync), "--liveness", f"http://127.0.0.1:{port}/healthz"],
            env={**self.server.env(), **self.env}, stdout=out, stderr=subprocess.STDOUT)

        def alive() -> bool:
            assert self.proc.poll() is None, f"operator exited:\n{self.output()}"
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
            except OSError:
                return False
        wait_for(alive, timeout, "operator liveness", interval=0.2)
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""


class Training:
    """One SupernetTraining and the Jobs the test finishes for it."""

    def __init__(self, server: ApiServer, namespace: str, body: dict):
        from kubernetes import client
        api = server.client()
        self.batch, self.core, self.custom = client.BatchV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.namespace, self.body = namespace, body
        self.name = body["metadata"]["name"]
        self.plan = build_plan(load(body))
        self.kinds: dict[str, tuple[str, object]] = {}
        for stage in self.plan.stages:
            self.kinds[job_name(self.name, stage.name)] = ("train" if stage.is_train else "evaluate", stage)
            if stage.is_train:
                self.kinds[snapshot_name(self.name, stage.name)] = ("snapshot", stage)
        self.uids: dict[str, str] = {}
        self.frozen: set[str] = set()
        self.latencies: list[float] = []

    # ------------------------------------------------------------------ API
    def create(self) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.body)

    def get(self) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)

    def status(self) -> dict:
        return self.get().get("status") or {}

    def jobs(self) -> dict[str, dict]:
        resp = self.batch.list_namespaced_job(self.namespace, label_selector=f"stepshot.dev/training={self.name}",
                                              _preload_content=False)
        jobs = {j["metadata"]["name"]: j for j in json.loads(resp.data)["items"]}
        for name, job in jobs.items():  # a Job is never deleted and recreated behind our back
            assert self.uids.setdefault(name, job["metadata"]["uid"]) == job["metadata"]["uid"], f"{name} recreated"
        return jobs

    def wait_jobs(self, names: set[str], timeout: float = 20) -> float:
        wait_for(lambda: names <= set(self.jobs()), timeout, what=f"Jobs {sorted(names)}")
        return time.monotonic()

    # ------------------------------------------------------------------ playing the controllers
    def message_for(self, name: str) -> str | None:
        return result_message(self.jobs()[name]["spec"]["template"]["metadata"]["labels"])

    def finish(self, name: str, ok: bool = True, message: str | None = None, exit_code: int | None = None) -> float:
        """The kubelet's pod (with its termination message), then the Job's final status.

        Returns the monotonic time the Job status write began."""
        job = self.jobs()[name]
        message = message if message is not None else self.message_for(name)
        if message is not None:
            terminated_pod(self.core, job, message, exit_code=exit_code if exit_code is not None else 0 if ok else 1)
        started = time.monotonic()
        finish_job(self.batch, self.namespace, name, ok)
        return started

    def expected_after(self, name: str) -> set[str]:
        kind, stage = self.kinds[name]
        if kind == "train":
            return {snapshot_name(self.name, stage.name)}
        if kind == "evaluate":
            return set()
        self.frozen.add(stage.name)
        out = {job_name(self.name, child.name) for child in self.plan.children(stage.name)}
        if set(self.plan.leaves) <= self.frozen:
            out.add(job_name(self.name, self.plan.stages[-1].name))
        return out

    def step(self, name: str) -> set[str]:
        """Finish `name`, wait for the Jobs that must follow, record the latency; return them."""
        started = self.finish(name)
        expected = self.expected_after(name)
        if expected:
            seen = self.wait_jobs(expected)
            self.latencies.append(seen - started)
            LATENCIES.append(seen - started)
        return expected

    def run(self, queue: list[str] | None = None, stop_before: str | None = None) -> list[str]:
        """Finish Jobs first-in first-out until none is left (or `stop_before` is next)."""
        queue = list(queue or [job_name(self.name, self.plan.stages[0].name)])
        self.wait_jobs(set(queue))
        while queue and queue[0] != stop_before:
            name = queue.pop(0)
            queue += sorted(self.step(name))
            unexpected = set(self.jobs()) - set(self.kinds)
            assert not unexpected, f"unexpected Jobs {unexpected}"
        return queue
