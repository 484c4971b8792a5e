"""`stepshot run`: the whole plan locally, resumable, with a stage table, report and plot."""
import copy
import json
import shutil

import yaml

from stepshot import local
from stepshot.cli import main
from trainer_helpers import TINY, needs_fmnist


def write_spec(tmp_path, truth_codes=None):
    doc = copy.deepcopy(TINY)
    doc["apiVersion"], doc["kind"] = "stepshot.dev/v1alpha1", "SupernetTraining"
    doc["spec"]["oneShot"]["epochs"] = 1
    doc["spec"]["evaluation"].update(groundTruth="gt.json", everyStage=True)
    from stepshot.archsets import stratified_archs

    archs = stratified_archs("resnet48-fmnist", 4, seed=1)
    (tmp_path / "gt.json").write_text(json.dumps(
        {f"arch{i}": {"arch": a.encode(), "acc": 80.0 + i} for i, a in enumerate(archs)}))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@needs_fmnist
def test_run_resumes_and_never_reruns_finished_stages(tmp_path, capsys):
    spec_file = write_spec(tmp_path)
    work = tmp_path / "work"
    assert main(["run", str(spec_file), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "oneshot" in out and "g2" in out and "kendall" in out
    report = json.loads((work / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["done", "done"]
    assert report["final"]["n"] == 4 and -1 <= report["final"]["kendall_tau"] <= 1
    assert (work / "ranking.png").stat().st_size > 1000
    oneshot_ckpt = (work / "snapshots" / "oneshot" / "model.pt").stat().st_mtime_ns

    # A run killed during g2: its DONE marker and snapshot never got written.
    (work / "g2" / "DONE").unlink()
    shutil.rmtree(work / "snapshots" / "g2")
    shutil.rmtree(work / "eval")
    results = local.run(spec_file, work)
    assert [(r.stage, r.status) for r in results] == [("oneshot", "skipped"), ("g2", "done")]
    assert (work / "snapshots" / "oneshot" / "model.pt").stat().st_mtime_ns == oneshot_ckpt
    assert results[-1].metrics["n"] == 4


def test_bad_yaml_gets_the_api_servers_field_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
                                    "metadata": {"name": "x"},
                                    "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"},
                                             "resources": {"nodes": 0}}}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "spec.resources.nodes: Invalid value: 0" in err
