"""The preflight: every input a run reads, checked before anything starts; one line per bad
input naming the spec field and the file; `stepshot run` exits 2 with it and starts nothing."""
import copy
import gzip
import json
import os
import struct

import pytest
import yaml

from stepshot import preflight
from stepshot.archsets import challenge_format, stratified_archs
from stepshot.cli import main
from stepshot.datasets import FMNIST_FILES
from stepshot.spec import load
from stepshot.space import get_space

DOC = {"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining", "metadata": {"name": "p"},
       "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist", "path": "data"}}}


def idx(path, *dims, dtype=0x08):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, dtype, len(dims)) + struct.pack(f">{len(dims)}I", *dims))
        f.write(bytes(min(64, dims[0])))          # the header is what is checked, not the pixels


def fmnist(root, n=4, shape=(28, 28)):
    root.mkdir(parents=True, exist_ok=True)
    for images, labels in FMNIST_FILES.values():
        idx(root / images, n, *shape)
        idx(root / labels, n)
    return root


def spec(tmp_path, **patch):
    doc = copy.deepcopy(DOC)
    for section, values in patch.items():
        doc["spec"].setdefault(section, {}).update(values)
    return load(doc, tmp_path)


def errors(tmp_path, **patch):
    return preflight.input_errors(spec(tmp_path, **patch), tmp_path / "work")


def test_good_inputs_pass(tmp_path):
    fmnist(tmp_path / "data")
    codes = challenge_format(stratified_archs(get_space("resnet48-fmnist"), 3, seed=1))
    (tmp_path / "archs.json").write_text(json.dumps(codes))
    (tmp_path / "gt.json").write_text(json.dumps({k: {**v, "acc": 90.0} for k, v in codes.items()}))
    assert errors(tmp_path, evaluation={"archs": "archs.json", "groundTruth": "gt.json"},
                  selection={"archs": "archs.json", "groundTruth": "gt.json"}) == []
    assert not list((tmp_path / "work").iterdir())            # the write probe is gone


def test_missing_data_is_one_line_naming_the_field_and_the_folder(tmp_path):
    assert errors(tmp_path) == [f"spec.dataset.path: {tmp_path / 'data'}: no such directory"]
    fmnist(tmp_path / "data")
    (tmp_path / "data" / FMNIST_FILES["test"][0]).unlink()
    (tmp_path / "data" / FMNIST_FILES["test"][1]).unlink()
    [line] = errors(tmp_path)
    assert line.startswith(f"spec.dataset.path: {tmp_path / 'data'}: t10k-images-idx3-ubyte.gz, "
                           "t10k-labels-idx1-ubyte.gz not found")


def test_data_of_the_wrong_shape_or_format_is_refused(tmp_path):
    root = fmnist(tmp_path / "data", shape=(32, 32))
    assert all("expected [N, 28, 28] images and N labels" in e for e in errors(tmp_path)) and len(errors(tmp_path)) == 2
    fmnist(root)
    idx(root / FMNIST_FILES["train"][1], 5)                    # 4 images, 5 labels
    assert errors(tmp_path) == [f"spec.dataset.path: {root / FMNIST_FILES['train'][0]}: shape [4, 28, 28] with "
                                f"labels [5]: expected [N, 28, 28] images and N labels"]
    (root / FMNIST_FILES["train"][1]).write_bytes(b"not gzip")
    [line] = errors(tmp_path)
    assert line.startswith(f"spec.dataset.path: {root / FMNIST_FILES['train'][1]}: unreadable:")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_data_the_user_cannot_read_is_refused(tmp_path):
    root = fmnist(tmp_path / "data")
    (root / FMNIST_FILES["train"][0]).chmod(0)
    [line] = errors(tmp_path)
    assert "unreadable" in line and "Permission denied" in line


def test_imagefolder_trees_need_images_and_the_same_classes(tmp_path):
    def tree(split, classes, image=True):
        for c in classes:
            (tmp_path / "in" / split / c).mkdir(parents=True)
            if image:
                (tmp_path / "in" / split / c / "0.jpg").write_bytes(b"\xff\xd8")
    tree("train", ["a", "b"])
    tree("val", ["a"])
    patch = {"dataset": {"kind": "imagefolder", "path": "in"}}
    doc = dict(space="resnet48")
    s = lambda: preflight.input_errors(load({**DOC, "spec": {**DOC["spec"], **doc, **patch}}, tmp_path),  # noqa
                                       tmp_path / "work")
    assert s() == [f"spec.dataset.path: {tmp_path / 'in' / 'val'}: 1 classes, {tmp_path / 'in' / 'train'} has 2: "
                   "the class folders must be the same"]
    tree("val", ["b"], image=False)
    assert s() == []
    (tmp_path / "in" / "val" / "a" / "0.jpg").unlink()
    assert s()[0].startswith(f"spec.dataset.path: {tmp_path / 'in' / 'val'}: no class folder holds an image")


def test_architecture_files_must_parse_and_belong_to_the_space(tmp_path):
    fmnist(tmp_path / "data")
    assert errors(tmp_path, evaluation={"archs": "nope.json"}) == [
        f"spec.evaluation.archs: {tmp_path / 'nope.json'}: not found"]
    (tmp_path / "bad.json").write_text("{not json")
    [line] = errors(tmp_path, selection={"archs": "bad.json", "groundTruth": "bad.json"})[:1]
    assert line.startswith(f"spec.selection.archs: {tmp_path / 'bad.json'}: cannot read JSON")
    good = stratified_archs(get_space("resnet48-fmnist"), 1, seed=1)[0].encode()
    alien = "9" + good[1:]                                     # no such resolution choice
    (tmp_path / "alien.json").write_text(json.dumps([good, alien]))
    [line] = errors(tmp_path, evaluation={"archs": "alien.json"})
    assert line.startswith(f"spec.evaluation.archs: {tmp_path / 'alien.json'}: '{alien}' is no resnet48-fmnist "
                           "architecture")


def test_a_ground_truth_to_come_is_fine_beside_archs_but_not_as_their_source(tmp_path):
    fmnist(tmp_path / "data")
    (tmp_path / "archs.json").write_text(json.dumps([stratified_archs(get_space("resnet48-fmnist"), 1)[0].encode()]))
    assert errors(tmp_path, evaluation={"archs": "archs.json", "groundTruth": "later.json"}) == []
    assert errors(tmp_path, evaluation={"groundTruth": "later.json"}) == [
        f"spec.evaluation.groundTruth: {tmp_path / 'later.json'}: not found"]


def test_a_work_directory_that_cannot_be_written_is_refused(tmp_path):
    fmnist(tmp_path / "data")
    (tmp_path / "file").write_text("")
    [line] = preflight.input_errors(spec(tmp_path), tmp_path / "file" / "work", "--workdir")
    assert line.startswith(f"--workdir: {tmp_path / 'file' / 'work'}: not writable")


def test_stepshot_run_with_missing_data_prints_one_line_exits_2_and_starts_nothing(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(DOC))
    assert main(["run", str(path), "--workdir", str(tmp_path / "work")]) == 2
    out = capsys.readouterr()
    assert out.err == f"stepshot run: error: spec.dataset.path: {tmp_path / 'data'}: no such directory\n"
    assert out.out == "" and list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("code,said", [(2, ""), (1, "stepshot run: error: stage oneshot failed (exit 1); "
                                                   "rerun the same command to resume\n")])
def test_a_stage_that_refuses_its_input_is_not_worth_a_rerun(code, said, tmp_path, capsys, monkeypatch):
    """A stage process's exit 2 (its one line is already on stderr) ends `stepshot run` with 2 and
    nothing more; any other failure suggests the resuming rerun."""
    from stepshot import local

    fmnist(tmp_path / "data")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(DOC))
    started = []
    monkeypatch.setattr(local, "_run", lambda cmd, threads: started.append(cmd) or code)
    assert main(["run", str(path), "--workdir", str(tmp_path / "work")]) == code
    assert capsys.readouterr().err == said
    assert len(started) == 1 and started[0][2] == "stepshot_trainer.launch"
