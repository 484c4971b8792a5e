"""The operator's Prometheus metrics carry exactly the names in docs/design.md."""
from prometheus_client import generate_latest

from stepshot_operator import metrics

DESIGN_NAMES = {
    "stepshot_resources", "stepshot_resource_stage_index", "stepshot_partitions_done",
    "stepshot_partitions_total", "stepshot_stage_transitions_total", "stepshot_stage_duration_seconds",
    "stepshot_child_jobs", "stepshot_reconcile_errors_total", "stepshot_reconcile_duration_seconds",
    "stepshot_kendall_tau",
}


def test_metric_names_are_the_design_names():
    assert set(metrics.metric_names()) == DESIGN_NAMES


def test_resource_observation_and_forgetting():
    status = {"phase": "Succeeded", "stageIndex": 3, "partitionsDone": 6, "partitionsTotal": 6,
              "result": {"kendall_tau": 0.7}, "childJobs": {"active": 0, "succeeded": 14, "failed": 0}}
    metrics.observe_resource("ns", "a", status)
    metrics.observe_transition("fewshot", "Succeeded", 120.0)
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'stepshot_kendall_tau{name="a",namespace="ns"} 0.7' in text
    assert 'stepshot_resources{phase="Succeeded"} 1.0' in text
    assert 'stepshot_child_jobs{state="succeeded"} 14.0' in text
    assert 'stepshot_stage_transitions_total{kind="fewshot",state="Succeeded"} 1.0' in text
    metrics.forget_resource("ns", "a")
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'name="a"' not in text and 'stepshot_resources{phase="Succeeded"} 0.0' in text
