"""Every shipped example is a valid SupernetTraining and renders to Kubernetes objects (or, a
`stepshot run` example without a work claim, is refused as the operator refuses it)."""
from pathlib import Path

import pytest
import yaml

from stepshot.cli import main
from stepshot.plan import build_plan
from stepshot.spec import load_file

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
# The administrator's settings the examples are written for: the local node's chart values.
_VALUES = yaml.safe_load((EXAMPLES[0].parent / "local-cluster" / "values.yaml").read_text())["trainer"]
LOCAL_NODE_ADMIN = ["--extra-volume-types", ",".join(_VALUES.get("extraVolumeTypes") or [])]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_renders(path, capsys):
    spec = load_file(path)
    plan = build_plan(spec)
    assert plan.stages[0].name == "oneshot" and plan.stages[-1].name == "eval"
    for name in ("archs", "ground_truth"):
        ref = spec.resolve(spec.evaluation.get(name))
        if ref is not None and not str(ref).startswith("/data") and "datasets" not in str(ref):
            assert ref.exists(), ref
    if not spec.storage.get("claim_name"):     # a `stepshot run` example: the operator refuses it
        assert main(["render", str(path)]) == 2
        assert "spec.storage.claimName: Required value" in capsys.readouterr().err
        assert "kubectl apply" not in path.read_text().split("apiVersion:")[0]   # nor does its header offer it
        return
    assert main(["render", str(path), *LOCAL_NODE_ADMIN]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    jobs = {d["metadata"]["name"] for d in docs if d["kind"] == "Job"}
    for stage in plan.stages:
        assert any(name.startswith(f"{spec.name}-{stage.name}") for name in jobs), stage.name


def test_quick_example_is_the_v3_benchmarks_branch_a(tmp_path):
    import sys

    sys.path.insert(0, str(EXAMPLES[0].parents[1] / "benchmarks"))
    import ranking_v3

    quick = load_file(EXAMPLES[0].parent / "fmnist-quick.yaml")
    bench = ranking_v3.make_spec("paper", 0, tmp_path)["spec"]
    assert quick.dataset.train_limit == bench["dataset"]["trainLimit"] == 0
    assert quick.one_shot.epochs == bench["oneShot"]["epochs"]
    assert quick.few_shot.mode == bench["fewShot"]["mode"] == "grouped"
    assert list(quick.few_shot.groups) == bench["fewShot"]["groups"]
    assert quick.few_shot.epochs == bench["fewShot"]["epochs"]
    assert quick.evaluation.calibration_batches == bench["evaluation"]["calibrationBatches"]
    assert quick.evaluation.eval_images == bench["evaluation"]["evalImages"]
    assert quick.few_shot.lr == bench["fewShot"]["lr"]
    assert quick.few_shot.lr_by_groups.to_dict() == bench["fewShot"]["lrByGroups"]


def test_the_gpu_example_in_the_docs_is_valid_and_matches_the_example_file():
    import re
    from pathlib import Path

    import yaml

    from stepshot import spec

    root = Path(__file__).resolve().parents[2]
    example = yaml.safe_load((root / "examples" / "imagenet-resnet48.yaml").read_text())
    for doc in ((root / "docs" / "crd-reference.md").read_text(), (root / "docs" / "cluster.md").read_text()):
        snippet = yaml.safe_load(re.search(r"```yaml\n(spec:\n  image: registry.*?)```", doc, re.S).group(1))["spec"]
        assert snippet["image"] == example["spec"]["image"]
        for key, value in snippet["scheduling"].items():
            if key == "training":
                assert value.items() <= example["spec"]["scheduling"]["training"].items()
            else:
                assert example["spec"]["scheduling"][key] == value
        assert snippet["evaluation"]["resources"] == example["spec"]["evaluation"]["resources"]
    assert spec.validate(example) == []
