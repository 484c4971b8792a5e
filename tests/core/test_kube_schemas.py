"""Everything stepshot writes for a cluster passes the strict Kubernetes schemas of current
releases (kubernetes-validate: unknown fields are errors), and the core types embedded in the
CRD are the generated ones."""
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from stepshot import manifests, plan, spec
from stepshot.manifests import ClusterCaps, Context

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ["1.28.0", "1.31.0"]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD_KINDS = {"VolumeSnapshot"}   # served by the CSI snapshotter's CRD, not in the core schemas


def _objects(path: Path, version: tuple[int, int]) -> list[dict]:
    s = spec.load_file(path)
    if not s.storage.get("claim_name"):
        return []      # local-only examples (no claim): `stepshot render` is for cluster specs
    caps = ClusterCaps(version=version, volume_snapshots=True, trainer_service_account="trainer",
                trainer_pull_secrets=("regcred",), volume_types=manifests.SAFE_VOLUME_TYPES | {"hostPath"})
    ctx = Context(s, plan.build_plan(s), caps)
    return [manifests.trainer_service_account(ctx), *manifests.all_objects(ctx)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_rendered_objects_pass_strict_schemas(example, version):
    objects = _objects(example, tuple(int(x) for x in version.split(".")[:2]))
    if not objects and example.name != "fmnist-quick.yaml":
        pytest.fail(f"{example.name} renders nothing")
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)


def test_multi_node_fallback_and_gpu_scheduling_pass_strict_schemas():
    doc = yaml.safe_load((ROOT / "examples" / "imagenet-resnet48.yaml").read_text())
    s = spec.load(doc)
    for version in ((1, 20), (1, 31)):    # per-node Jobs (no Indexed Jobs), Indexed Job + podFailurePolicy
        ctx = Context(s, plan.build_plan(s), ClusterCaps(version=version))
        for obj in manifests.all_objects(ctx):
            kubernetes_validate.validate(obj, "1.31.0", strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_crd_passes_strict_schemas(version):
    kubernetes_validate.validate(spec.crd(), version, strict=True)


def test_embedded_core_types_are_generated_from_the_pinned_openapi():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-kube-types.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sharded_evaluation_passes_strict_schemas():
    """Shards as an Indexed Job (its index through the downward API) or one Job per shard, and the merge."""
    doc = yaml.safe_load((ROOT / "examples" / "imagenet-resnet48.yaml").read_text())
    doc["spec"].setdefault("evaluation", {}).update(shards=4, maxParallel=2)
    s = spec.load(doc)
    for version in ((1, 20), (1, 31)):
        ctx = Context(s, plan.build_plan(s), ClusterCaps(version=version))
        jobs = manifests.stage_objects(ctx, ctx.plan.stages[-1])
        assert len(jobs) == (5 if version < (1, 22) else 2)
        for obj in jobs:
            kubernetes_validate.validate(obj, "1.31.0", strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_gpu_cluster_pod_settings_pass_strict_schemas(version):
    """Every pod setting of spec.scheduling at once (env, runtimeClassName, a MIG GPU resource,
    RDMA devices, hostNetwork, IPC_LOCK; chart defaults under them), on the multi-node layouts."""
    doc = yaml.safe_load((ROOT / "examples" / "imagenet-resnet48.yaml").read_text())
    doc["spec"]["scheduling"] = {
        **doc["spec"].get("scheduling", {}), "runtimeClassName": "nvidia",
        "env": [{"name": "NCCL_IB_HCA", "value": "mlx5"}, {"name": "NCCL_DEBUG"}],
        "training": {"hostNetwork": True, "capabilities": ["IPC_LOCK"], "gpuResource": "amd.com/gpu",
                     "extraResources": {"rdma/hca_shared_devices_a": "1"}},
        "evaluation": {"gpuResource": "nvidia.com/mig-1g.10gb"}}
    s = spec.load(doc)
    defaults = {"env": [{"name": "NCCL_SOCKET_IFNAME", "value": "ib0"}], "annotations": {"a": "b"}}
    for kube in ((1, 20), tuple(int(x) for x in version.split(".")[:2])):
        caps = ClusterCaps(version=kube, host_network=True, capabilities=frozenset({"IPC_LOCK"}),
                           pod_defaults=defaults)
        assert manifests.cluster_errors(s, caps) == []
        ctx = Context(s, plan.build_plan(s), caps)
        jobs = [o for o in manifests.all_objects(ctx) if o["kind"] == "Job"]
        assert any(j["spec"]["template"]["spec"].get("hostNetwork") for j in jobs)
        for obj in manifests.all_objects(ctx):
            kubernetes_validate.validate(obj, version, strict=True)
