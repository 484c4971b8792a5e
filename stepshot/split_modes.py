"""The split modes of `spec.fewShot.mode`: the one table of them.

Read by the schema (its enum), the cross-field rules and `stage_count` (which list of
`fewShot` makes a mode's steps, and how many stages those steps expand to). The consumers
that act on a mode key their rules by these names and fail loudly on a name they have no
rule for: the plan's step rules (`stepshot.plan.STEP_RULES`), the trainer's model rules
(`stepshot_trainer.train.MODEL_RULES`) and the operator's failure reasons
(`stepshot_operator.reconcile.TRAIN_FAILURE_REASONS`). A new mode is one entry here plus one
rule in each of those three tables (tests/core/test_plan.py lists them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def _one_per_group(few: dict, limit: int) -> int:
    """One stage per entry of `groups`, each continuing the last."""
    return len(few.get("groups", []))


def _partition_tree(few: dict, limit: int) -> int:
    """Every step cuts every partition of the last one into `parts`; counting stops once past
    `limit` (8 steps of 8 parts would be 16.7 million)."""
    total, width = 0, 1
    for step in few.get("steps", []):
        width *= step.get("parts", 1) if isinstance(step, dict) else 1
        total += width
        if total > limit:
            break
    return total


@dataclass(frozen=True)
class SplitMode:
    name: str
    # The fewShot list each entry of which is one few-shot step (None: no few-shot steps).
    steps_field: str | None
    # Few-shot stages a (schema-valid) fewShot section expands to, counted up to past a limit.
    few_shot_stages: Callable[[dict, int], int]


MODES: dict[str, SplitMode] = {mode.name: mode for mode in (
    # One-shot only: no few-shot stage.
    SplitMode("none", None, lambda few, limit: 0),
    # The paper's grouped split: each step splits the parent's weights into G groups per stage.
    SplitMode("grouped", "groups", _one_per_group),
    # The paper's partitioned split: each step trains a copy of the parent inside each partition.
    SplitMode("partitioned", "steps", _partition_tree),
    # grouped's equal-budget control: the unsplit super-net trained on for grouped's steps and lrs.
    SplitMode("continued", "groups", _one_per_group),
)}
