"""The SupernetTraining schema: defaults, API-server-style errors naming the field, CRD shape."""
import copy

import pytest
import yaml

from specdocs import BASE, spec_doc as with_spec
from stepshot import spec


def test_defaults_fill_nested_sections():
    s = spec.load(BASE)
    assert s.training.batch_size == 128
    assert s.training.zero_init_last_bn is True
    assert s.one_shot.epochs == 100 and s.one_shot.warmup_epochs == 5.0
    assert s.few_shot.mode == "grouped"
    assert s.few_shot.groups == (2, 3, 4, 5, 6, 7)
    assert s.few_shot.lr_by_groups.to_dict() == {"3": 0.002}
    assert s.resources.nodes == 1 and s.metrics_port == 9400


@pytest.mark.parametrize("field,value,needle", [
    ("resources__nodes", 0, "spec.resources.nodes: Invalid value: 0: spec.resources.nodes in body should be greater than or equal to 1"),
    ("oneShot__epochs", "3", "spec.oneShot.epochs: Invalid value: \"string\""),
    ("oneShot__lr", 0, "spec.oneShot.lr: Invalid value: 0"),
    ("space", "resnet50", "spec.space: Unsupported value: \"resnet50\""),
    ("fewShot__mode", "fewshot", "spec.fewShot.mode: Unsupported value"),
    ("training__ratioCodes", [1, 8], "spec.training.ratioCodes[1]: Invalid value: 8"),
    ("resources__memory", "lots", "spec.resources.memory: Invalid value: \"lots\""),
    ("trainng", {}, "spec.trainng: Unknown field"),
])
def test_bad_input_names_the_field(field, value, needle):
    errors = spec.validate(with_spec(**{field: value}))
    assert any(needle in e for e in errors), errors
    with pytest.raises(spec.SpecError) as exc:
        spec.load(with_spec(**{field: value}))
    assert needle in str(exc.value)


def test_missing_required_field():
    doc = copy.deepcopy(BASE)
    del doc["spec"]["space"]
    assert "spec.space: Required value" in spec.validate(doc)


def test_cross_field_rules():
    errors = spec.validate(with_spec(fewShot__groups=[3, 2]))
    assert any(e.startswith("spec.fewShot.groups:") for e in errors)
    errors = spec.validate(with_spec(fewShot__mode="partitioned"))
    assert errors == ["spec.fewShot.steps: Required value: partitioned mode needs at least one step"]
    errors = spec.validate(with_spec(fewShot__mode="partitioned",
                                     fewShot__steps=[{"dimension": "depth", "stage": 1, "parts": 5}]))
    assert any("spec.fewShot.steps[0].parts" in e and "at most 4" in e for e in errors), errors
    errors = spec.validate(with_spec(selection={"archs": "a.json"}))
    assert any(e.startswith("spec.selection") for e in errors)


def test_view_is_read_only_and_names_missing_fields():
    s = spec.load(BASE)
    with pytest.raises(AttributeError):
        s.training.batch_size = 3
    with pytest.raises(AttributeError, match="spec.evaluation.archs"):
        _ = s.evaluation.archs
    assert s.evaluation.get("archs") is None


def test_spec_hash_tracks_content():
    a = spec.load(BASE).spec_hash
    b = spec.load(with_spec(training__seed=1)).spec_hash
    assert a != b and a == spec.load(copy.deepcopy(BASE)).spec_hash
    assert spec.load(with_spec(suspend=True, ttlSecondsAfterFinished=60)).spec_hash == a  # runtime controls


def test_changed_fields_name_the_edited_paths_but_not_runtime_controls():
    old = spec.load(BASE).raw["spec"]
    new = spec.load(with_spec(training__seed=1, suspend=True)).raw["spec"]
    assert spec.changed_fields(old, new) == ["spec.training.seed"]
    assert spec.changed_fields(old, copy.deepcopy(old)) == []


def test_crd_shape():
    crd = spec.crd()
    version = crd["spec"]["versions"][0]
    assert crd["metadata"]["name"] == "supernettrainings.stepshot.dev"
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status   # structural: `kubectl explain` shows it
    assert status["properties"]["result"]["properties"]["kendallTau"]["type"] == "number"
    assert status["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {"Phase": ".status.phase", "Stage": ".status.currentStage", "Progress": ".status.progress",
                       "Tau": ".status.result.kendallTau", "Archs": ".status.archs.progress",
                       "Seen": ".status.observedGeneration",
                       "Age": ".metadata.creationTimestamp"}
    yaml.safe_dump(crd)  # serialisable


def test_load_file_resolves_relative_paths(tmp_path):
    path = tmp_path / "t.yaml"
    doc = with_spec(evaluation={"groundTruth": "gt.json"})
    path.write_text(yaml.safe_dump(doc))
    s = spec.load_file(path)
    assert s.resolve(s.evaluation.ground_truth) == tmp_path / "gt.json"
    path.write_text("spec: [unclosed")
    with pytest.raises(spec.SpecError, match="t.yaml"):
        spec.load_file(path)


@pytest.mark.parametrize("field,value,needle", [
    ("resources__cpu", "1.2.3", "spec.resources.cpu"),
    ("resources__memory", "8Gii", "spec.resources.memory"),
    ("resources__cpu", "-1", "spec.resources.cpu"),
    ("resources__cpu", "0", "spec.resources.cpu: Invalid value: \"0\": spec.resources.cpu in body should be at least 1m"),
    ("evaluation__resources__memory", "lots", "spec.evaluation.resources.memory"),
    ("scheduling__tolerations", [{"key": "nvidia.com/gpu", "operator": "Exist"}],
     'spec.scheduling.tolerations[0].operator: Unsupported value: "Exist"'),
    ("scheduling__training__affinity", {"nodeAffinity": {"required": {}}},
     'spec.scheduling.training.affinity.nodeAffinity.required: Unknown field'),
    ("scheduling__labels", {"stepshot.dev/training": "x"}, 'spec.scheduling.labels.stepshot.dev/training: Forbidden'),
    ("scheduling__labels", {"bad key!": "x"}, "must be a qualified name"),
    ("scheduling__evaluation__nodeSelector", {"gpu": "a" * 64}, "must be a label value"),
    ("scheduling__imagePullSecrets", [{"nam": "regcred"}], 'Unknown field: "nam" (did you mean "name"?)'),
    ("scheduling__priorityClassName", "High_Priority", "spec.scheduling.priorityClassName"),
])
def test_cluster_fields_are_checked_at_apply_time(field, value, needle):
    errors = spec.validate(with_spec(**{field: value}))
    assert any(needle in e for e in errors), errors


def test_unknown_fields_suggest_the_close_name():
    errors = spec.validate(with_spec(trainig={"batchSize": 1}, resources={"memry": "1Gi"}))
    assert 'spec.trainig: Unknown field: "trainig" (did you mean "training"?)' in errors
    assert 'spec.resources.memry: Unknown field: "memry" (did you mean "memory"?)' in errors


@pytest.mark.parametrize("name,nodes,ok", [("a-b", 1, True), ("x.y", 1, False), ("Upper", 1, False),
                                           ("1run", 1, True), ("1run", 2, False), ("a" * 64, 1, False),
                                           (["a"], 1, False)])
def test_metadata_name_must_make_valid_child_names(name, nodes, ok):
    doc = with_spec(resources={"nodes": nodes})
    doc["metadata"]["name"] = name
    errors = spec.validate(doc)
    assert (errors == []) == ok and all(e.startswith("metadata.name") for e in errors), errors


@pytest.mark.parametrize("text,value", [("2", 2), ("500m", 0.5), ("1.5", 1.5), ("8Gi", 8 * 2**30), ("1e3", 1000),
                                        ("64M", 64 * 10**6), (".5", 0.5)])
def test_quantities_parse_exactly(text, value):
    assert spec.parse_quantity(text) == pytest.approx(value)


_BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
BAD_FILES = {
    "alias-bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n" + _BOMB + "spec: {space: resnet48-fmnist, x: *h}\n",
    "recursive-alias": "spec: &s {space: resnet48-fmnist, me: *s}\n",
    "binary": bytes(range(256)) * 4,
    "deep": "spec: " + "[" * 100 + "]" * 100 + "\n",
    "metadata-list": "metadata: [1]\nspec: {space: resnet48-fmnist, dataset: {kind: fashion-mnist}}\n",
    "name-path": "metadata: {name: ../../tmp/x}\nspec: {space: resnet48-fmnist, dataset: {kind: fashion-mnist}}\n",
    "name-list": "metadata: {name: [1, 2]}\nspec: {space: resnet48-fmnist, dataset: {kind: fashion-mnist}}\n",
    "integer-key": "spec: {space: resnet48-fmnist, dataset: {kind: fashion-mnist}, fewShot: {lrByGroups: {3: 0.1}}}\n",
    "too-many-stages": "spec: {space: resnet48-fmnist, dataset: {kind: fashion-mnist}, fewShot: {mode: partitioned, "
                       "steps: [" + ", ".join(["{dimension: width, stage: 4, parts: 4}"] * 5) + "]}}\n",
    "huge": "spec: {space: resnet48-fmnist, x: '" + "x" * (2 << 20) + "'}\n",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_files_exit_2_with_one_line_and_no_traceback(case, tmp_path, capsys):
    from stepshot import cli

    path = tmp_path / "bad.yaml"
    content = BAD_FILES[case]
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert cli.main(["render", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stepshot render: error: ") and "Traceback" not in err, err[:500]
    assert len(err) < 2000


def test_stage_count_matches_the_plan():
    from stepshot.plan import build_plan

    for few in ({"mode": "grouped", "groups": [2, 3, 4]}, {"mode": "none"},
                {"mode": "partitioned", "steps": [{"dimension": "width", "stage": 4, "parts": 2},
                                                  {"dimension": "depth", "stage": 3, "parts": 3}]}):
        s = spec.load(with_spec(fewShot=few))
        assert spec.stage_count(s.raw["spec"]) == len(build_plan(s).stages)


def test_crd_yaml_survives_go_yaml_1_1():
    """kubectl and Helm read YAML 1.1, where a bare `n:` is the boolean false: the status field
    `result.n` would be renamed and pruned."""
    import re
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[2] / "crds" / "supernettraining.yaml",):
        text = path.read_text()
        assert not re.search(r"^\s*[nNyY]:", text, re.M)
        assert re.search(r'^\s*"n":', text, re.M)
    assert spec.kube_yaml({"n": "y"}) == '"n": "y"\n'


@pytest.mark.parametrize("patch,needle", [
    ({"storage__path": "/tmp"}, "spec.storage.path"),
    ({"storage__path": "relative"}, "must be an absolute path"),
    ({"dataset__volume": {"emptyDir": {}}, "dataset__path": "/dev/shm"}, "spec.dataset.path"),
    ({"dataset__volume": {"emptyDir": {}}, "dataset__path": "/workdir"}, "must differ from spec.storage.path"),
    ({"scheduling__annotations": {f"a{i}": "x" * 4000 for i in range(80)}}, "spec: Too long"),
])
def test_specs_the_api_server_would_refuse_as_jobs_are_refused_first(patch, needle):
    errors = spec.validate(with_spec(**patch))
    assert any(needle in e for e in errors), errors


@pytest.mark.parametrize("procs,gpus,ok", [(8, 4, False), (4, 4, True), (2, 4, True), (8, 0, True)])
def test_processes_per_node_fit_the_gpus_per_node(procs, gpus, ok):
    """Ranks beyond the node's GPUs would pick devices that do not exist; on CPUs (0 GPUs) any count."""
    errors = spec.validate(with_spec(resources={"procsPerNode": procs, "gpusPerNode": gpus, "cpu": "16"}))
    assert (errors == []) == ok, errors
    assert ok or errors == [f"spec.resources.procsPerNode: Invalid value: {procs}: spec.resources.procsPerNode "
                            f"in body should be at most "
                            f"spec.resources.gpusPerNode ({gpus}): each process drives one GPU of its node"]
