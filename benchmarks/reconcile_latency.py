#!/usr/bin/env python3
"""Reconcile latency against a real kube-apiserver: child Job finished -> next stage's Job created.

Starts etcd + kube-apiserver (tests/apiserver.py) and the operator (`python -m stepshot_operator`),
then plays the Job controller through grouped SupernetTrainings (oneshot, G = 2..7, eval) until
at least --n transitions were timed. Prints JSON {"p50_s", "p95_s", "n"}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "operator")]

from apiserver import ApiServer, find_binary  # noqa: E402
from kubeplay import OperatorProcess, Training, percentile  # noqa: E402

from stepshot.spec import API_VERSION, KIND, crd  # noqa: E402


def training(name: str) -> dict:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
            "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"},
                     "storage": {"claimName": "work"}, "fewShot": {"mode": "grouped", "groups": [2, 3, 4, 5, 6, 7]}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="minimum number of timed transitions")
    args = parser.parse_args()
    server = ApiServer(find_binary()).start()
    operator = None
    try:
        server.apply_crd(crd())
        namespace = server.create_namespace("bench")
        operator = OperatorProcess(server, namespace, Path(tempfile.mkdtemp()) / "operator.log").start()
        latencies: list[float] = []
        run = 0
        while len(latencies) < args.n:
            t = Training(server, namespace, training(f"bench-{run}"))
            t.create()
            t.run()
            latencies += t.latencies
            run += 1
        print(json.dumps({"p50_s": round(percentile(latencies, 0.5), 4),
                          "p95_s": round(percentile(latencies, 0.95), 4), "n": len(latencies)}))
    finally:
        if operator:
            operator.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
