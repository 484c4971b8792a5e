"""The stage plan: what the operator, the local runner and render all derive from one spec."""
import copy

import pytest

from stepshot import plan as planmod
from stepshot import split_modes
from stepshot.errors import StepshotError
from stepshot.names import MAX_JOB_NAME, job_name, snapshot_name
from stepshot import spec

BASE = {
    "metadata": {"name": "demo"},
    "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"}},
}


def make(**few):
    doc = copy.deepcopy(BASE)
    doc["spec"]["fewShot"] = few
    return planmod.build_plan(spec.load(doc))


def test_grouped_plan_is_a_chain_with_paper_lrs():
    p = make(mode="grouped")
    assert [s.name for s in p.stages] == ["oneshot", "g2", "g3", "g4", "g5", "g6", "g7", "eval"]
    assert [s.parent for s in p.stages[1:-1]] == ["oneshot", "g2", "g3", "g4", "g5", "g6"]
    assert p.stage("g3").lr == 0.002 and p.stage("g2").lr == 0.001
    assert p.stage("g2").warmup_epochs == 0 and p.stage("oneshot").warmup_epochs == 5
    assert p.leaves == ("g7",)
    assert [len(step) for step in p.steps] == [1] * 8


def test_partitioned_plan_fans_out_and_every_child_has_its_parent():
    p = make(mode="partitioned", steps=[{"dimension": "width", "stage": 4, "parts": 2},
                                        {"dimension": "depth", "stage": 3, "parts": 3}])
    sizes = [len(step) for step in p.steps]
    assert sizes == [1, 2, 6, 1]
    names = {s.name for s in p.stages}
    for stage in p.steps[2]:
        assert stage.parent in {s.name for s in p.steps[1]}
        assert stage.partition.startswith(p.stage(stage.parent).partition + ".")
    assert set(p.leaves) == {s.name for s in p.steps[2]}
    assert len(names) == len(p.stages)  # unique


def test_one_shot_only():
    p = make(mode="none")
    assert [s.name for s in p.stages] == ["oneshot", "eval"] and p.leaves == ("oneshot",)


def test_job_names_are_deterministic_dns_labels():
    p = make(mode="partitioned", steps=[{"dimension": "width", "stage": 4, "parts": 2}])
    long_name = "a" * 80
    names = [job_name(long_name, s.name) for s in p.stages]
    assert len(set(names)) == len(names)
    assert all(len(n) <= MAX_JOB_NAME and n == n.lower() for n in names)
    assert names == [job_name(long_name, s.name) for s in make(
        mode="partitioned", steps=[{"dimension": "width", "stage": 4, "parts": 2}]).stages]
    snap = snapshot_name("demo", p.stage("oneshot").name)
    assert snap == "demo-oneshot-snap"


def test_every_stage_carries_its_typed_split():
    grouped = make(mode="grouped", groups=[2, 3])
    assert grouped.stage("oneshot").split == planmod.Split() and grouped.stage("eval").split.mode == "none"
    assert grouped.stage("g3").split == planmod.Split("grouped", groups=3) and grouped.stage("g3").groups == 3
    parts = make(mode="partitioned", steps=[{"dimension": "width", "stage": 4, "parts": 2},
                                            {"dimension": "depth", "stage": 3, "parts": 2}])
    leaf = parts.stage("s4w1-s3d0")
    assert leaf.split == planmod.Split("partitioned", partition="s4w1.s3d0") and leaf.partition == "s4w1.s3d0"
    assert leaf.split.describe(leaf.name) == "partition s4w1.s3d0 (stage s4w1-s3d0)"


def test_one_table_of_split_modes_feeds_the_schema_and_the_plan():
    assert _mode_enum(spec.SPEC_SCHEMA) == list(split_modes.MODES)
    assert set(planmod.STEP_RULES) == set(split_modes.MODES)
    for name, mode in split_modes.MODES.items():
        doc = copy.deepcopy(BASE)
        doc["spec"]["fewShot"] = {"mode": name, "groups": [2, 3],
                                  "steps": [{"dimension": "width", "stage": 4, "parts": 2}]}
        s = spec.load(doc)
        few_shot = [st for st in planmod.build_plan(s).stages if st.is_train and st.step > 0]
        assert spec.stage_count(s.raw["spec"]) == 2 + len(few_shot) == 2 + mode.few_shot_stages(doc["spec"]["fewShot"], 99)
        assert {st.split.mode for st in few_shot} <= {name}


def _mode_enum(schema: dict) -> list:
    return schema["properties"]["fewShot"]["properties"]["mode"]["enum"]


def test_a_mode_added_to_the_table_without_a_step_rule_fails_loudly(monkeypatch):
    """What adding a mode to stepshot.split_modes does (the schema's enum is built from the table
    at import, so the test extends both); the plan has no rule for it and says so."""
    monkeypatch.setitem(split_modes.MODES, "sliced", split_modes.SplitMode(
        "sliced", "groups", lambda few, limit: len(few["groups"])))
    monkeypatch.setitem(spec.SPEC_SCHEMA["properties"]["fewShot"]["properties"]["mode"], "enum",
                        list(split_modes.MODES))
    doc = copy.deepcopy(BASE)
    doc["spec"]["fewShot"] = {"mode": "sliced", "groups": [2, 3]}
    s = spec.load(doc)   # the table and the schema accept it ...
    assert spec.stage_count(s.raw["spec"]) == 4
    with pytest.raises(StepshotError, match="split mode 'sliced' has no step rule in the plan"):
        planmod.build_plan(s)   # ... the plan refuses it instead of making no few-shot stages
