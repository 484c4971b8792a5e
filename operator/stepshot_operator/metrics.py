"""Operator metrics (names fixed by docs/design.md; the Grafana dashboard uses only these)."""
from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
JOB_STATES = ("active", "succeeded", "failed")

REGISTRY = CollectorRegistry()
RESOURCES = Gauge("stepshot_resources", "SupernetTraining resources by phase", ["phase"], registry=REGISTRY)
STAGE_INDEX = Gauge("stepshot_resource_stage_index", "Index of the current step of a resource",
                    ["namespace", "name"], registry=REGISTRY)
PARTITIONS_DONE = Gauge("stepshot_partitions_done", "Few-shot partitions (stages) finished",
                        ["namespace", "name"], registry=REGISTRY)
PARTITIONS_TOTAL = Gauge("stepshot_partitions_total", "Few-shot partitions (stages) planned",
                         ["namespace", "name"], registry=REGISTRY)
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
                    ["namespace", "name"], registry=REGISTRY)

_PER_RESOURCE = (STAGE_INDEX, PARTITIONS_DONE, PARTITIONS_TOTAL, KENDALL_TAU)
_phases: dict[tuple[str, str], str] = {}
_jobs: dict[tuple[str, str], Mapping[str, int]] = {}


def metric_names() -> list[str]:
    """The exposed family names (counters with their `_total`)."""
    names = []
    for collector in REGISTRY._collector_to_names:  # noqa: SLF001 - the registry's own index
        for family in collector.describe():
            names.append(family.name + ("_total" if family.type == "counter" else ""))
    return sorted(set(names))


def serve(port: int) -> None:
    if port:
        start_http_server(port, registry=REGISTRY)


def observe_resource(namespace: str, name: str, status: Mapping) -> None:
    key = (namespace, name)
    _phases[key] = status.get("phase", "Pending")
    _jobs[key] = status.get("childJobs") or {}
    if "stageIndex" in status:
        STAGE_INDEX.labels(namespace, name).set(status["stageIndex"])
    if "partitionsTotal" in status:
        PARTITIONS_DONE.labels(namespace, name).set(status["partitionsDone"])
        PARTITIONS_TOTAL.labels(namespace, name).set(status["partitionsTotal"])
    tau = (status.get("result") or {}).get("kendall_tau")
    if isinstance(tau, (int, float)):
        KENDALL_TAU.labels(namespace, name).set(tau)
    _refresh()


def forget_resource(namespace: str, name: str) -> None:
    _phases.pop((namespace, name), None)
    _jobs.pop((namespace, name), None)
    for gauge in _PER_RESOURCE:
        try:
            gauge.remove(namespace, name)
        except KeyError:
            pass
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
