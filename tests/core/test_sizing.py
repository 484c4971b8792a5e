"""Sizing of the image pipeline (stepshot.sizing) and how the Jobs carry it."""
import copy

import pytest

from stepshot import sizing, manifests
from stepshot import plan as planmod
from stepshot import spec as specmod
from stepshot.manifests import Context

IMAGENET = {
    "metadata": {"name": "inet"},
    "spec": {"space": "resnet48", "dataset": {"kind": "imagefolder", "path": "/data"},
             "resources": {"nodes": 1, "procsPerNode": 8, "gpusPerNode": 8, "cpu": "96", "memory": "480Gi"},
             "training": {"batchSize": 128}, "fewShot": {"mode": "none"},
             "evaluation": {"batchSize": 256, "calibrationBatchSize": 128, "resources": {"cpu": "8", "memory": "64Gi"}}},
}


def load(**patch):
    doc = copy.deepcopy(IMAGENET)
    for section, values in patch.items():
        doc["spec"][section] = {**doc["spec"].get(section, {}), **values}
    return specmod.load(doc)


@pytest.mark.parametrize("cpu,procs,workers", [("96", 8, 11), ("64", 8, 7), ("8", 8, 0), ("4", 8, 0), ("2500m", 1, 1)])
def test_workers_default_to_the_process_share_of_cores_but_one(cpu, procs, workers):
    assert sizing.training_workers(load(resources={"cpu": cpu, "procsPerNode": procs})) == workers


def test_explicit_workers_win_and_fashion_mnist_decodes_nothing():
    assert sizing.training_workers(load(training={"workers": 3})) == 3
    fmnist = specmod.load({"spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"},
                                    "training": {"workers": 5}}})
    assert sizing.training_workers(fmnist) == sizing.evaluation_workers(fmnist) == 0
    assert sizing.training_shm_bytes(fmnist) == sizing.SHM_SLACK_BYTES
    assert sizing.evaluation_workers(load()) == 7


def test_more_workers_than_the_cpu_request_allows_are_refused():
    doc = copy.deepcopy(IMAGENET)
    doc["spec"]["training"]["workers"] = 12
    [error] = specmod.validate(doc)
    assert error.startswith("spec.training.workers: Invalid value: 12") and "at most 11" in error
    doc["spec"]["training"]["workers"] = 11
    assert specmod.validate(doc) == []
    small = copy.deepcopy(doc)
    small["spec"]["resources"]["cpu"] = "500m"            # no whole core per process: workers 0 only
    small["spec"]["training"]["workers"] = 0
    assert specmod.validate(small) == []
    doc["spec"].update(space="resnet48-fmnist", dataset={"kind": "fashion-mnist"})   # nothing to decode
    doc["spec"]["training"]["workers"] = 64
    assert specmod.validate(doc) == []


def test_training_pods_get_the_cores_and_shared_memory_of_their_loaders():
    s = load()
    c = Context(s, planmod.build_plan(s))
    [job] = manifests.train_objects(c, c.plan.stage("oneshot"))
    pod = job["spec"]["template"]["spec"]
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    batch = 128 * 3 * 224 * 224                                     # uint8 batches
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{-(-(8 * 11 * 2 * batch + 2**30) // 2**20)}Mi"}
    container = pod["containers"][0]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["resources"]["requests"]["cpu"] == "96"
    threads = {e["name"]: e["value"] for e in container["env"]}["OMP_NUM_THREADS"]
    assert threads == "1"                                            # 12 cores: 11 workers + the loop
    evaluation = manifests.eval_jobs(c, c.plan.stages[-1])[0]["spec"]["template"]["spec"]
    [eval_shm] = [v for v in evaluation["volumes"] if v["name"] == "dshm"]
    assert eval_shm["emptyDir"]["sizeLimit"] == sizing.mebibytes(7 * 2 * 256 * 3 * 224 * 224 + 2**30)


def test_cpu_training_threads_leave_the_workers_their_cores():
    s = load(resources={"cpu": "16", "procsPerNode": 1, "gpusPerNode": 0}, training={"workers": 5})
    c = Context(s, planmod.build_plan(s))
    [job] = manifests.train_objects(c, c.plan.stage("oneshot"))
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OMP_NUM_THREADS"] == "11"


def test_evaluation_cache_is_half_the_pods_memory():
    s = load()
    assert sizing.evaluation_cache_bytes(s) == 32 * 2**30
    assert sizing.selection_cache_bytes(s) == 480 * 2**30 // 32
