"""The work-directory layout and the result messages: what a pod writes is what the operator reads."""
import json
import math

import pytest

from stepshot import workdir
from stepshot.workdir import EvaluationResult, Layout, MessageError, SnapshotResult

SNAP = SnapshotResult(stage="s4w0", partition="s4w0", epoch=3, file="s4w0/checkpoints/epoch-0003.pt",
                      sha256="a" * 64, kendall_tau=0.5)


def test_messages_round_trip_and_status_drops_absent_values():
    assert workdir.parse_snapshot(SNAP.message()) == SNAP
    ev = EvaluationResult(n=64, kendall_tau=0.61, spearman=0.8)
    assert workdir.parse_evaluation(ev.message()) == ev
    assert ev.status() == {"n": 64, "kendallTau": 0.61, "spearman": 0.8}   # status keys are camelCase


@pytest.mark.parametrize("text,why", [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"n": 3, "kendall_tau": 0.9, "extra": 1}), "unknown keys"),
    ('{"n": 3, "kendall_tau": NaN}', "finite number"),
    ('{"n": 3, "kendall_tau": Infinity}', "finite number"),
    (json.dumps({"n": 3, "kendall_tau": "0.9"}), "finite number"),
    (json.dumps({"n": True}), "integer"),
    (json.dumps({"n": -1}), "integer"),
    (json.dumps({"kendall_tau": 0.9}), "integer"),
    (json.dumps({"n": 1}) + " " * 5000, "larger than"),
])
def test_evaluation_messages_that_no_command_writes_are_refused(text, why):
    with pytest.raises(MessageError, match=why):
        workdir.parse_evaluation(text)


@pytest.mark.parametrize("change,why", [
    ({"sha256": "A" * 64}, "hex"),
    ({"sha256": "ab"}, "hex"),
    ({"epoch": 1.5}, "integer"),
    ({"stage": ""}, "non-empty"),
    ({"file": None}, "non-empty"),
    ({"kendall_tau": math.inf}, "finite"),
])
def test_snapshot_messages_are_checked_field_by_field(change, why):
    doc = {**json.loads(SNAP.message()), **change}
    with pytest.raises(MessageError, match=why):
        workdir.parse_snapshot(json.dumps(doc))


SHARD = workdir.ShardResult(shard=1, shards=2, pool=100, archs=50, scored=16)


@pytest.mark.parametrize("change,why", [
    ({}, None),
    ({"scored": None}, None),
    ({"shard": 2}, "inconsistent"),
    ({"shards": 0}, "integer >= 1"),
    ({"archs": 101}, "inconsistent"),
    ({"scored": 51}, "inconsistent"),
    ({"pool": -1}, "integer"),
    ({"pool": 1.5}, "integer"),
    ({"slice": [50, 100]}, "unknown keys"),
])
def test_shard_messages_are_checked_field_by_field(change, why):
    doc = {**json.loads(SHARD.message()), **change}
    if why is None:
        assert workdir.parse_shard(json.dumps(doc)) == workdir.ShardResult(**doc)
        return
    with pytest.raises(MessageError, match=why):
        workdir.parse_shard(json.dumps(doc))


def test_write_message_goes_where_the_pod_says(tmp_path, monkeypatch):
    monkeypatch.setenv(workdir.TERMINATION_ENV, str(tmp_path / "term"))
    workdir.write_message(SNAP.message())
    assert workdir.parse_snapshot((tmp_path / "term").read_text()) == SNAP
    with pytest.raises(MessageError):
        workdir.write_message("x" * (workdir.MESSAGE_LIMIT + 1))


def test_layout(tmp_path):
    layout = Layout(tmp_path)
    assert not layout.stage_finished("g2")
    layout.done("g2").parent.mkdir(parents=True)
    layout.done("g2").write_text("")
    assert not layout.stage_finished("g2")            # trained, not yet snapshotted
    layout.snapshot_manifest("g2").parent.mkdir(parents=True)
    layout.snapshot_manifest("g2").write_text("{}")
    assert layout.stage_finished("g2")
    assert layout.predictions("step1") == tmp_path / "eval" / "step1-predictions.json"


def test_write_failure_is_cut_to_what_the_kubelet_keeps(tmp_path, monkeypatch):
    monkeypatch.setenv(workdir.TERMINATION_ENV, str(tmp_path / "term"))
    workdir.write_failure("stepshot: error: " + "é" * 5000)
    text = (tmp_path / "term").read_text()
    assert text.startswith("stepshot: error: ") and len(text.encode()) <= workdir.MESSAGE_LIMIT


def test_status_correlations_print_four_decimals_the_message_keeps_every_digit():
    """`kubectl get sst` prints the Tau column as stored: 0.5383, not 0.5382611189082496."""
    ev = EvaluationResult(n=64, kendall_tau=0.5382611189082496, spearman=-0.71234567, pearson=1.0)
    assert ev.status() == {"n": 64, "kendallTau": 0.5383, "spearman": -0.7123, "pearson": 1.0}
    assert workdir.parse_evaluation(ev.message()).kendall_tau == 0.5382611189082496
    snap = SnapshotResult(**{**SNAP.__dict__, "kendall_tau": 0.123456789})
    assert snap.status()["kendallTau"] == 0.1235
