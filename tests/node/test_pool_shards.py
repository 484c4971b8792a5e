"""Ranking a pool on the real node: evaluation.shards = 2 over a 100-architecture pool (the 64
with a ground truth and 36 without, in the challenge's format on the claim), one shard's pod
SIGKILLed mid-way; the merge's predictions equal one unsharded `stepshot evaluate` byte for
byte, and the status counts architectures (evaluated of the pool, scored) from what crossed
the pod boundary: the shards' termination messages and the Jobs' status."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import time

import yaml

from localnode import ROOT, timing, wait_for
from stepshot.archsets import load_codes, stratified_archs
from stepshot.pool import shard_range
from stepshot.space import get_space
from test_pipeline import RUN, _kill_container, apply, assert_succeeded, training, wait_phase

POOL, SHARDS, EVERY = 100, 2, 4


def _pool() -> tuple[dict[str, dict], set[str]]:
    """The ground truth's 64 codes and 36 more, shuffled (both shards score some), in the
    challenge's format with its 51-char codes; and the codes with a ground truth."""
    truth = set(load_codes(ROOT / "benchmarks/archs/resnet48-fmnist-64.json").values())
    more = [a.encode() for a in stratified_archs(get_space("resnet48-fmnist"), 80, seed=26)]
    codes = sorted(truth) + [c for c in dict.fromkeys(more) if c not in truth][:POOL - len(truth)]
    random.Random(26).shuffle(codes)
    assert len(codes) == POOL
    return {f"arch{i + 1}": {"arch": code[1:]} for i, code in enumerate(codes)}, truth


def test_two_shards_over_100_archs_resume_a_killed_shard_and_merge_the_unsharded_predictions(operator):
    """One Job per shard on this 1.20 server, one at a time; shard 0's pod is killed after its
    first parts: the replacement resumes without rewriting them."""
    node, namespace, name = operator, f"nas-pool-{RUN}", "pool"
    work = node.work_volume(namespace)
    pool_doc, truth = _pool()
    (work / "pool.json").write_text(json.dumps(pool_doc))
    evaluation = {"shards": SHARDS, "maxParallel": 1, "checkpointEvery": EVERY, "evalImages": 2000,
                  "archs": "/workdir/pool.json"}                 # the claim, as the pods mount it
    doc = training(name, namespace, evaluation=evaluation)
    start = time.monotonic()
    apply(node, doc)
    parts = work / "eval" / "predictions.parts"

    def first_shard_part_files():
        pods = node.get("pods", "-n", namespace, "-l", f"stepshot.dev/job={name}-eval-0")["items"]
        running = [p for p in pods if (p["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("running")]
        files = {p: p.stat().st_mtime_ns for p in parts.glob("*/part-*.json")}
        return (running[0], files) if running and files else None
    pod, before = wait_for(first_shard_part_files, 900, "shard 0 running with a part written", 0.25)
    _kill_container(pod)

    body = wait_phase(node, namespace, name, 900)
    timing(f"pool of {POOL} in {SHARDS} shards (2 train + 2 snapshot + 2 shard + 1 merge pods, 1 killed): "
           "apply -> Succeeded", time.monotonic() - start)
    assert_succeeded(node, body, work, ["oneshot", "g2"])
    status = body["status"]
    assert status["result"]["evaluated"] == POOL and status["result"]["scored"] == len(truth)
    assert status["stages"]["eval"]["shards"] == {"done": SHARDS, "total": SHARDS, "merge": "Succeeded"}
    # The shards' own messages, through the kubelet (the killed pod's is not among them).
    slices = [[c["arch"] for c in list(pool_doc.values())[s.start:s.stop]]
              for s in (shard_range(POOL, i, SHARDS) for i in range(SHARDS))]
    assert status["stages"]["eval"]["shardReports"] == {
        str(i): {"pool": POOL, "archs": len(codes), "scored": sum("1" + c in truth for c in codes)}
        for i, codes in enumerate(slices)}
    assert status["archs"] == {"evaluated": POOL, "total": POOL, "scored": len(truth), "progress": f"{POOL}/{POOL}"}
    assert f"{POOL}/{POOL}" in node.kubectl("get", "sst", name, "-n", namespace)     # the Archs column
    assert node.get("job", f"{name}-eval-0", "-n", namespace)["status"].get("failed") == 1
    # The parts written before the kill were not evaluated (written) again, nor any twice.
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(list(parts.glob("*/part-*.json"))) == sum(math.ceil(len(s) / EVERY) for s in
                                                         (shard_range(POOL, i, SHARDS) for i in range(SHARDS)))

    local = dict(doc, spec={**doc["spec"], "dataset": {k: v for k, v in doc["spec"]["dataset"].items() if k != "volume"}})
    local["spec"]["dataset"]["path"] = "/usr/share/datasets/fashion-mnist"
    local["spec"]["evaluation"] = {**doc["spec"]["evaluation"], "archs": str(work / "pool.json"),
                                   "groundTruth": str(ROOT / "benchmarks/groundtruth/resnet48-fmnist.json")}
    (work / "local.yaml").write_text(yaml.safe_dump(local))
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "stepshot.cli", "evaluate", str(work / "local.yaml"),
                    "--workdir", str(work), "--out", str(work / "eval/unsharded.json"), "--threads", "1",
                    "--processes", "1"], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (work / "eval/predictions.json").read_bytes() == (work / "eval/unsharded.json").read_bytes()
