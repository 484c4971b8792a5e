"""The operator's Prometheus metrics carry exactly the names in docs/design.md, and promtool
finds nothing to lint in their exposition."""
from prometheus_client import generate_latest
from promtool import promtool_lint

from stepshot_operator import metrics

DESIGN_NAMES = {
    "stepshot_resources", "stepshot_resource_phase", "stepshot_resource_current_stage",
    "stepshot_resource_step_index", "stepshot_resource_stages_done", "stepshot_resource_stages",
    "stepshot_resource_last_progress_timestamp_seconds", "stepshot_stage_transitions_total",
    "stepshot_stage_duration_seconds", "stepshot_child_jobs", "stepshot_reconcile_errors_total",
    "stepshot_reconcile_duration_seconds", "stepshot_kendall_tau",
}
STATUS = {"phase": "Running", "currentStage": "g2", "stepIndex": 1, "stagesDone": 1, "stagesTotal": 3,
          "stages": {"oneshot": {"startTime": "2026-11-29T10:00:00Z", "completionTime": "2026-11-29T11:00:00Z",
                                 "snapshot": {"completionTime": "2026-11-29T11:02:00Z"}},
                     "g2": {"startTime": "2026-11-29T11:02:30Z"}},
          "childJobs": {"active": 1, "suspended": 0, "succeeded": 2, "failed": 0}}


def test_metric_names_are_the_design_names():
    assert set(metrics.metric_names()) == DESIGN_NAMES


def test_resource_observation_and_forgetting():
    metrics.observe_resource("ns", "a", STATUS)
    metrics.observe_resource("ns", "a", {**STATUS, "phase": "Succeeded", "currentStage": "done", "stagesDone": 3,
                                         "result": {"kendallTau": 0.7}})
    metrics.observe_transition("fewshot", "Succeeded", 120.0)
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'stepshot_kendall_tau{name="a",namespace="ns"} 0.7' in text
    assert 'stepshot_resources{phase="Succeeded"} 1.0' in text
    assert 'stepshot_resource_phase{name="a",namespace="ns",phase="Succeeded"} 1.0' in text
    assert 'stepshot_resource_phase{name="a",namespace="ns",phase="Running"} 0.0' in text
    assert 'stepshot_resource_current_stage{name="a",namespace="ns",stage="done"} 1.0' in text
    assert 'stage="g2"' not in text                      # the previous stage's series is gone
    assert 'stepshot_resource_stages_done{name="a",namespace="ns"} 3.0' in text
    # the last stage change: g2's start, 2026-11-29T11:02:30Z
    assert 'stepshot_resource_last_progress_timestamp_seconds{name="a",namespace="ns"} 1.79595015e+09' in text
    assert 'stepshot_child_jobs{state="succeeded"} 2.0' in text
    assert 'stepshot_stage_transitions_total{kind="fewshot",state="Succeeded"} 1.0' in text
    metrics.forget_resource("ns", "a")
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'name="a"' not in text and 'stepshot_resources{phase="Succeeded"} 0.0' in text


def test_promtool_finds_nothing_to_lint():
    metrics.observe_resource("ns", "b", STATUS)
    metrics.observe_transition("oneshot", "Succeeded", 60.0)
    try:
        assert promtool_lint(generate_latest(metrics.REGISTRY)) == ""
    finally:
        metrics.forget_resource("ns", "b")
