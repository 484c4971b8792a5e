"""Pure manifest builders: (spec, plan stage, server capabilities) -> Kubernetes object dicts.

Torch-free core, no kopf, no kubernetes client: `stepshot render` prints exactly what these
return, and the operator creates exactly that (plus owner references from `kopf.adopt`).

Every pod runs the trainer image as a non-root user with a read-only root filesystem and
no service-account token: trainer pods have no API rights. What the operator needs back
from them (selected checkpoint, evaluation metrics) travels in the container termination
message, a file named by env STEPSHOT_TERMINATION_LOG.

One module per concern, this package the public entry: `cluster` (what the cluster serves and
allows, `cluster_errors`), `context` (labels, annotations, pod paths), `pods` (containers,
volumes, resources), `jobs` (a stage Job: scheduling per role, failure policy), `config_map`,
`service_account`, and the stages' builders `training`, `snapshots`, `evaluation`.
"""
from __future__ import annotations

from stepshot.manifests.cluster import (SAFE_VOLUME_TYPES, ClusterCaps, cluster_errors, image_errors,
                                        volume_errors)
from stepshot.manifests.config_map import spec_config_map, spec_from_config_map
from stepshot.manifests.context import (ANNOTATION_SPEC_HASH, ANNOTATION_SUSPENDED_BY, LABEL_COMPONENT,
                                        LABEL_JOB, LABEL_PARTITION, LABEL_STAGE, LABEL_STEP, LABEL_TRAINING,
                                        SPEC_DIR, SPEC_FILE, SUSPENDED_BY_OPERATOR, UID, Context, labels,
                                        selector)
from stepshot.manifests.evaluation import COMPLETION_INDEX, SHARD_ENV, eval_job_names, eval_jobs, merge_job
from stepshot.manifests.jobs import role_settings
from stepshot.manifests.service_account import trainer_service_account
from stepshot.manifests.snapshots import snapshot_job, volume_snapshot, wants_volume_snapshot
from stepshot.manifests.training import MASTER_PORT, train_job_names, train_objects
from stepshot.names import label_value
from stepshot.plan import Stage

__all__ = [
    "ANNOTATION_SPEC_HASH", "ANNOTATION_SUSPENDED_BY", "COMPLETION_INDEX", "LABEL_COMPONENT", "LABEL_JOB",
    "LABEL_PARTITION", "LABEL_STAGE", "LABEL_STEP", "LABEL_TRAINING", "MASTER_PORT", "SAFE_VOLUME_TYPES",
    "SHARD_ENV", "SPEC_DIR", "SPEC_FILE", "SUSPENDED_BY_OPERATOR", "UID", "ClusterCaps", "Context",
    "all_objects", "cluster_errors", "eval_job_names", "eval_jobs", "image_errors", "label_value", "labels",
    "merge_job", "role_settings", "selector", "snapshot_job", "spec_config_map", "spec_from_config_map",
    "stage_objects", "train_job_names", "train_objects", "trainer_service_account", "volume_errors",
    "volume_snapshot", "wants_volume_snapshot",
]


def stage_objects(ctx: Context, stage: Stage) -> list[dict]:
    """Every object the operator creates for a stage, in creation order."""
    if not stage.is_train:
        return eval_jobs(ctx, stage) + ([merge_job(ctx, stage)] if ctx.spec.evaluation.shards > 1 else [])
    objs = train_objects(ctx, stage) + [snapshot_job(ctx, stage)]
    if wants_volume_snapshot(ctx):
        objs.append(volume_snapshot(ctx, stage))
    return objs


def all_objects(ctx: Context) -> list[dict]:
    return [spec_config_map(ctx)] + [o for stage in ctx.plan.stages for o in stage_objects(ctx, stage)]
