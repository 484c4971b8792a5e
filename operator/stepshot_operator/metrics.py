"""Operator metrics (names fixed by docs/design.md; the Grafana dashboard uses only these)."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
JOB_STATES = ("active", "suspended", "succeeded", "failed")

REGISTRY = CollectorRegistry()
_KEY = ["namespace", "name"]
RESOURCES = Gauge("stepshot_resources", "SupernetTraining resources by phase", ["phase"], registry=REGISTRY)
PHASE = Gauge("stepshot_resource_phase", "1 for the phase a resource is in, 0 for the others",
              [*_KEY, "phase"], registry=REGISTRY)
CURRENT_STAGE = Gauge("stepshot_resource_current_stage", "1 for the stage a resource is at (label stage)",
                      [*_KEY, "stage"], registry=REGISTRY)
STEP_INDEX = Gauge("stepshot_resource_step_index", "Index of the current step of a resource's plan",
                   _KEY, registry=REGISTRY)
STAGES_DONE = Gauge("stepshot_resource_stages_done", "Stages (training, few-shot, evaluation) finished",
                    _KEY, registry=REGISTRY)
STAGES_PLANNED = Gauge("stepshot_resource_stages", "Stages (training, few-shot, evaluation) planned",
                       _KEY, registry=REGISTRY)
LAST_PROGRESS = Gauge("stepshot_resource_last_progress_timestamp_seconds",
                      "When a stage of the resource last changed state (Unix time)", _KEY, registry=REGISTRY)
TRANSITIONS = Counter("stepshot_stage_transitions_total", "Stage state transitions",
                      ["kind", "state"], registry=REGISTRY)
STAGE_DURATION = Histogram("stepshot_stage_duration_seconds", "Training/evaluation time of finished stages",
                           ["kind"], registry=REGISTRY,
                           buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, float("inf")))
CHILD_JOBS = Gauge("stepshot_child_jobs", "Child Jobs of all resources by state", ["state"], registry=REGISTRY)
RECONCILE_ERRORS = Counter("stepshot_reconcile_errors_total", "Reconcile passes that raised", registry=REGISTRY)
RECONCILE_DURATION = Histogram("stepshot_reconcile_duration_seconds", "Wall time of one reconcile pass",
                               registry=REGISTRY,
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
KENDALL_TAU = Gauge("stepshot_kendall_tau", "Final Kendall tau of a resource's evaluation",
                    _KEY, registry=REGISTRY)

_PER_RESOURCE = (STEP_INDEX, STAGES_DONE, STAGES_PLANNED, LAST_PROGRESS, KENDALL_TAU)
_phases: dict[tuple[str, str], str] = {}
_stages: dict[tuple[str, str], str] = {}
_jobs: dict[tuple[str, str], Mapping[str, int]] = {}


def metric_names() -> list[str]:
    """The exposed family names (counters with their `_total`)."""
    names = []
    for collector in REGISTRY._collector_to_names:  # noqa: SLF001 - the registry's own index
        for family in collector.describe():
            names.append(family.name + ("_total" if family.type == "counter" else ""))
    return sorted(set(names))


def serve(port: int, address: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=address, registry=REGISTRY)


def observe_resource(namespace: str, name: str, status: Mapping) -> None:
    key = (namespace, name)
    _phases[key] = status.get("phase", "Pending")
    _jobs[key] = status.get("childJobs") or {}
    for phase in PHASES:
        PHASE.labels(namespace, name, phase).set(1 if phase == _phases[key] else 0)
    stage = str(status.get("currentStage") or "")
    if _stages.get(key) not in (None, stage):
        _remove(CURRENT_STAGE, namespace, name, _stages[key])
    _stages[key] = stage
    CURRENT_STAGE.labels(namespace, name, stage).set(1)
    for gauge, field in ((STEP_INDEX, "stepIndex"), (STAGES_DONE, "stagesDone"), (STAGES_PLANNED, "stagesTotal")):
        if field in status:
            gauge.labels(namespace, name).set(status[field])
    progressed = _last_change(status)
    if progressed is not None:
        LAST_PROGRESS.labels(namespace, name).set(progressed)
    tau = (status.get("result") or {}).get("kendallTau")
    if isinstance(tau, (int, float)):
        KENDALL_TAU.labels(namespace, name).set(tau)
    _refresh()


def _last_change(status: Mapping) -> float | None:
    """The latest start or completion time among the resource's stages (Unix seconds)."""
    times = [t for entry in (status.get("stages") or {}).values()
             for t in (entry.get("startTime"), entry.get("completionTime"),
                       (entry.get("snapshot") or {}).get("completionTime")) if t]
    if not times:
        return None
    return datetime.fromisoformat(max(times).replace("Z", "+00:00")).timestamp()


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def forget_resource(namespace: str, name: str) -> None:
    _phases.pop((namespace, name), None)
    _jobs.pop((namespace, name), None)
    stage = _stages.pop((namespace, name), None)
    if stage is not None:
        _remove(CURRENT_STAGE, namespace, name, stage)
    for phase in PHASES:
        _remove(PHASE, namespace, name, phase)
    for gauge in _PER_RESOURCE:
        _remove(gauge, namespace, name)
    _refresh()


def observe_transition(kind: str, state: str, seconds: float | None) -> None:
    TRANSITIONS.labels(kind, state).inc()
    if seconds is not None:
        STAGE_DURATION.labels(kind).observe(seconds)


def _refresh() -> None:
    for phase in PHASES:
        RESOURCES.labels(phase).set(sum(1 for p in _phases.values() if p == phase))
    for state in JOB_STATES:
        CHILD_JOBS.labels(state).set(sum(c.get(state, 0) for c in _jobs.values()))
