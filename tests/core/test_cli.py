"""The one exit-code policy (stepshot/errors.py, stepshot/cli.py): the user's errors are a
message and an exit code, our bugs keep their traceback."""
import pytest

from stepshot import render
from stepshot.cli import main
from stepshot.errors import RunFailed, StepshotError


def test_bad_input_exits_2_with_the_command_and_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: stepshot.dev/v1alpha1\nkind: SupernetTraining\nmetadata: {name: x}\n"
                   "spec: {space: resnet48-fmnist, dataset: {kind: fashion-mnist}, resources: {nodes: 0}}\n")
    assert main(["render", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stepshot render: error: invalid SupernetTraining")
    assert "spec.resources.nodes: Invalid value: 0" in err and "Traceback" not in err


def test_each_error_carries_its_exit_code(monkeypatch, capsys):
    def fails(args):
        raise RunFailed("stage g2 failed (exit 1)")
    monkeypatch.setattr(render, "run", fails)
    assert main(["render", "x.yaml"]) == 1
    assert capsys.readouterr().err == "stepshot render: error: stage g2 failed (exit 1)\n"
    assert issubclass(RunFailed, StepshotError) and StepshotError.exit_code == 2


def test_a_bug_keeps_its_traceback(monkeypatch):
    def buggy(args):
        raise KeyError("not the user's fault")
    monkeypatch.setattr(render, "run", buggy)
    with pytest.raises(KeyError):
        main(["render", "x.yaml"])
