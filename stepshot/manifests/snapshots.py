"""Freezing a training stage's selected checkpoint: the snapshot Job (a sha256-manifested copy)
and, where the cluster serves them, a CSI VolumeSnapshot of the work volume."""
from __future__ import annotations

from stepshot.manifests import pods
from stepshot.manifests.context import Context, labels, meta
from stepshot.manifests.jobs import stage_job
from stepshot.names import snapshot_name
from stepshot.plan import Stage


def snapshot_job(ctx: Context, stage: Stage) -> dict:
    """Freeze the stage's selected checkpoint: an immutable copy with a sha256 manifest.

    The container's termination message is that manifest (JSON), which the operator records
    as the stage's selected checkpoint.
    """
    volumes, mounts = pods.volumes(ctx, None)
    command = pods.commands(ctx).snapshot(stage.name)
    container = pods.container(ctx, "snapshot", command, pods.resources("500m", "1Gi", 0), mounts,
                               ports=pods.metrics_ports(ctx))   # bytes written
    return stage_job(ctx, "snapshot", snapshot_name(ctx.name, stage.name), labels(ctx, stage, "snapshot"),
                     pods.pod_spec([container], volumes))


def wants_volume_snapshot(ctx: Context) -> bool:
    mode = ctx.spec.storage.snapshot
    return (mode in ("auto", "volumeSnapshot") and ctx.caps.volume_snapshots
            and bool(ctx.spec.storage.get("claim_name")))


def volume_snapshot(ctx: Context, stage: Stage) -> dict:
    """A CSI VolumeSnapshot of the work volume, taken once the stage's copy is written."""
    spec: dict = {"source": {"persistentVolumeClaimName": ctx.spec.storage.claim_name}}
    if ctx.spec.storage.get("volume_snapshot_class_name"):
        spec["volumeSnapshotClassName"] = ctx.spec.storage.volume_snapshot_class_name
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": meta(ctx, snapshot_name(ctx.name, stage.name), labels(ctx, stage, "snapshot")),
            "spec": spec}
