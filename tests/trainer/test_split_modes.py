"""The trainer's side of the split modes: every mode of the one table has a model rule, and a
mode added to the table without one is refused before the parent is loaded (not trained on)."""
import pytest
from trainer_helpers import tiny_spec

from stepshot.errors import StepshotError
from stepshot.plan import Split, Stage
from stepshot.split_modes import MODES, SplitMode
from stepshot_trainer.train import MODEL_RULES, build_stage_model


def test_every_mode_with_a_parent_has_a_model_rule():
    # "none" makes no stage with a parent (its one training stage is the one-shot super-net).
    assert set(MODEL_RULES) == set(MODES) - {"none"}


def test_a_mode_added_to_the_table_without_a_model_rule_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setitem(MODES, "sliced", SplitMode("sliced", "groups", lambda few, limit: len(few["groups"])))
    stage = Stage("x2", "train", 1, parent="oneshot", split=Split("sliced"))
    # tmp_path holds no parent snapshot: the error must come before any attempt to load one.
    with pytest.raises(StepshotError, match="split mode 'sliced' has no model rule in the trainer"):
        build_stage_model(tiny_spec(), stage, tmp_path)
