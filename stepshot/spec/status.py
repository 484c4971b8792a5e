"""The status schema of the `SupernetTraining` resource (written by the operator) and the
columns `kubectl get` prints from it."""
from __future__ import annotations

from stepshot.spec.fields import field


def _s(description: str = "") -> dict:   # status fields: no defaults, no bounds (the operator writes them)
    return field("string", None, description)


def _i(description: str = "") -> dict:
    return field("integer", None, description)


def _n(description: str = "") -> dict:
    return field("number", None, description)


_CONDITION = {"type": "object", "required": ["type", "status"], "properties": {
    "type": _s("Running, Suspended, Succeeded, Failed, SpecChanged, Degraded or PodsPending (True while a "
               "stage pod cannot start: the scheduler's or kubelet's reason, e.g. Unschedulable, ImagePullBackOff)."),
    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
    "reason": _s(), "message": _s(), "lastTransitionTime": {"type": "string", "format": "date-time"},
    "observedGeneration": _i()}}
_CHECKPOINT = {"type": "object", "description": "The stage's selected checkpoint, frozen with its sha256.",
               "properties": {"stage": _s(), "partition": _s(), "epoch": _i(), "file": _s(), "sha256": _s(),
                              "kendallTau": _n("Checkpoint selection's score of that epoch.")}}
_STAGE_STATUS = {"type": "object", "properties": {
    "state": {"type": "string", "enum": ["Pending", "Running", "Snapshotting", "Succeeded", "Failed"]},
    "kind": _s(), "step": _i(), "partition": _s(), "parent": _s(),
    "jobs": {"type": "array", "items": _s()},
    "startTime": _s(), "completionTime": _s(), "message": _s("Why the stage failed."),
    "reason": _s("The failure's reason (the Failed condition's): StageFailed, InvalidInput, ..."),
    "shards": {"type": "object", "description": "Evaluation in shards: Jobs done of all, then the merge.",
               "properties": {"done": _i(), "total": _i(), "merge": _s()}},
    "shardReports": {"type": "object", "description": "Per finished shard (by index), its termination message: "
                                                      "the pool's size, its slice's, and how many have a ground truth.",
                     "additionalProperties": {"type": "object", "properties": {
                         "pool": _i(), "archs": _i(), "scored": _i()}}},
    "snapshot": {"type": "object", "properties": {
        "job": _s(), "state": _s(), "completionTime": _s(),
        "volumeSnapshot": {"type": "object", "properties": {"name": _s(), "readyToUse": {"type": "boolean"}}}}},
    "checkpoint": _CHECKPOINT}}
STATUS_SCHEMA: dict = {
    "type": "object",
    "description": "Written by the operator; derived from the resource's child Jobs.",
    "properties": {
        "observedGeneration": _i(),
        "phase": {"type": "string", "enum": ["Pending", "Running", "Suspended", "Succeeded", "Failed"]},
        "currentStage": _s("The stage in progress (`+N`: N more at the same step), `done` or `invalid`."),
        "stepIndex": _i("Index of the current step of the plan."),
        "stepsTotal": _i("Steps of the plan (one-shot, each few-shot step, evaluation)."),
        "progress": _s("Stages done / planned."),
        "stagesDone": _i(), "stagesTotal": _i(),
        "startTime": _s(), "completionTime": _s(),
        "stages": {"type": "object", "additionalProperties": _STAGE_STATUS, "description": "Per plan stage."},
        "result": {"type": "object", "description": "The final correlation evaluation.", "properties": {
            "n": _i("Architectures scored (with ground truth), else evaluated."), "kendallTau": _n(),
            "spearman": _n(), "pearson": _n(), "evaluated": _i("Architectures predicted."),
            "scored": _i("Of those, the ones with a ground truth."),
            "baselines": {"type": "object", "additionalProperties": _n(),
                          "description": "Kendall tau of each free baseline (spec.evaluation.baselines) on the "
                                         "scored architectures: what the super-net has to beat."},
            "priorGuided": {"type": "object", "description": "The prior-guided ranking (spec.evaluation.prior).",
                            "properties": {"proxy": _s(), "weight": _n(), "kendallTau": _n()}}}},
        "archs": {"type": "object", "description": "Architectures of the evaluation: evaluated of the pool "
                                                   "(finished shards' slices, then the result's) and scored.",
                  "properties": {"evaluated": _i(), "total": _i(), "scored": _i("Evaluated with a ground truth."),
                                 "progress": _s("Evaluated / in the pool.")}},
        "childJobs": {"type": "object", "properties": {
            "active": _i(), "suspended": _i(), "succeeded": _i(), "failed": _i()}},
        "conditions": {"type": "array", "items": _CONDITION},
        # kopf's own bookkeeping lives in annotations; kept here only if an older kopf writes it.
        "kopf": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "stages done/planned"},
    {"name": "Tau", "type": "number", "jsonPath": ".status.result.kendallTau"},
    {"name": "Archs", "type": "string", "jsonPath": ".status.archs.progress",
     "description": "architectures evaluated/in the pool (finished shards, then the result)"},
    # Empty until an operator has acted on the resource: in a namespace no operator watches
    # (or while the operator is down) it stays empty, unlike a run that is merely queued.
    {"name": "Seen", "type": "integer", "jsonPath": ".status.observedGeneration",
     "description": "the spec generation the operator last acted on; empty: no operator has seen it"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
