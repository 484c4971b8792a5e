"""The stage plan derived from a SupernetTraining spec.

One plan, three consumers: the operator (which Jobs exist and in what order),
the local runner (which processes to launch) and `stepshot render`. The plan is
a pure function of the spec, so every consumer derives the same stage names and
therefore the same deterministic Job names.

    step 0            one-shot super-net                  "oneshot"
    step 1..n         grouped: G = 2, 3, ... one stage each   "g2", "g3", ...
                      partitioned: every partition of the step  "s4w0", "s4w0-s3d1", ...
    step n+1          evaluation of the leaves            "eval"

Every training stage ends with a snapshot of its selected checkpoint; a stage's
`parent` is the stage whose snapshot initialises it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from stepshot.errors import StepshotError
from stepshot.partition import Partition, build_tree
from stepshot.spec import Spec, SpecError

ONESHOT = "oneshot"
EVAL = "eval"


@dataclass(frozen=True)
class Split:
    """How a training stage's model and subnet sampling derive from its parent (spec §3.4).

    none: the one-shot super-net (and the evaluation); grouped: the parent's weights split into
    G groups per stage; partitioned: a copy of the parent trained only inside one partition;
    continued: the parent's unsplit weights trained on (grouped's equal-budget control)."""

    mode: str = "none"
    groups: int | None = None   # grouped: G
    partition: str = "root"     # partitioned: the partition id ("s4w0.s3d1")

    def describe(self, stage: str) -> str:
        """How users read the stage in conditions and Events."""
        if self.mode == "partitioned":
            return f"partition {self.partition} (stage {stage})"
        return f"stage {stage}"


@dataclass(frozen=True)
class Stage:
    name: str
    task: str                  # what the stage's Job does: "train" | "evaluate"
    step: int
    parent: str | None = None
    split: Split = Split()
    epochs: int = 0
    lr: float = 0.0
    warmup_epochs: float = 0.0
    nodes: int = 1
    procs_per_node: int = 1

    @property
    def is_train(self) -> bool:
        return self.task == "train"

    @property
    def partition(self) -> str:
        return self.split.partition

    @property
    def groups(self) -> int | None:
        return self.split.groups


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    steps: tuple[tuple[Stage, ...], ...]
    leaves: tuple[str, ...]
    partitions: dict[str, Partition]  # stage name -> partition (partitioned mode; root otherwise)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise StepshotError(f"no stage {name!r} in the plan; stages: {[s.name for s in self.stages]}")

    @property
    def train_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.is_train)

    def children(self, name: str) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.parent == name)


def partition_stage(partition_id: str) -> str:
    """Stage name of a partition: its id with dots as dashes ("s4w0.s3d1" -> "s4w0-s3d1")."""
    return partition_id.replace(".", "-")


def _grouped_steps(spec: Spec, root: Partition, tree, common: dict) -> list[list[tuple[Stage, Partition]]]:
    """One stage per G, each split from the previous one (lr per G from lrByGroups)."""
    return _chain(spec, root, common, "grouped", "g")


def _continued_steps(spec: Spec, root: Partition, tree, common: dict) -> list[list[tuple[Stage, Partition]]]:
    """grouped's steps, epochs and lrs without the split: "c2", "c3", ... each continuing the last."""
    return _chain(spec, root, common, "continued", "c")


def _chain(spec: Spec, root: Partition, common: dict, mode: str, prefix: str) -> list[list[tuple[Stage, Partition]]]:
    few = spec.few_shot
    overrides = few.lr_by_groups.to_dict()
    steps, parent = [], ONESHOT
    for i, groups in enumerate(few.groups, start=1):
        split = Split(mode, groups=groups if mode == "grouped" else None)
        stage = Stage(f"{prefix}{groups}", "train", i, parent=parent, split=split,
                      epochs=few.epochs, lr=float(overrides.get(str(groups), few.lr)), **common)
        steps.append([(stage, root)])
        parent = stage.name
    return steps


def _partitioned_steps(spec: Spec, root: Partition, tree, common: dict) -> list[list[tuple[Stage, Partition]]]:
    """Every partition of every cut, each a child of the partition it was cut from."""
    few = spec.few_shot
    steps = []
    for i, level in enumerate(tree[1:], start=1):
        stages = []
        for part in level:
            parent_id = part.id.rsplit(".", 1)[0] if "." in part.id else None
            stage = Stage(partition_stage(part.id), "train", i,
                          parent=partition_stage(parent_id) if parent_id else ONESHOT,
                          split=Split("partitioned", partition=part.id), epochs=few.epochs, lr=few.lr, **common)
            stages.append((stage, part))
        steps.append(stages)
    return steps


# Per split mode (stepshot.split_modes.MODES): how the spec turns into the few-shot steps.
STEP_RULES = {"none": lambda spec, root, tree, common: [], "grouped": _grouped_steps,
              "partitioned": _partitioned_steps, "continued": _continued_steps}


def _step_rule(mode: str) -> Callable[..., list[list[tuple[Stage, Partition]]]]:
    """The plan's rule for a split mode; a mode in the table without one is refused loudly."""
    try:
        return STEP_RULES[mode]
    except KeyError:
        raise StepshotError(f"split mode {mode!r} has no step rule in the plan (stepshot.plan.STEP_RULES); "
                            f"rules exist for {sorted(STEP_RULES)}") from None


def build_plan(spec: Spec) -> Plan:
    res = spec.resources
    common = dict(nodes=res.nodes, procs_per_node=res.procs_per_node)
    oneshot = Stage(ONESHOT, "train", 0, epochs=spec.one_shot.epochs, lr=spec.one_shot.lr,
                    warmup_epochs=spec.one_shot.warmup_epochs, **common)
    few = spec.few_shot
    steps_of = _step_rule(few.mode)
    cuts = [s.to_dict() for s in few.steps] if few.mode == "partitioned" else []
    try:
        tree = build_tree(spec.search_space, cuts)
    except ValueError as exc:   # a cut the space cannot make: the user's spec, not our bug
        raise SpecError([f"spec.fewShot.steps: Invalid value: {exc}"]) from None
    root = tree[0][0]
    partitions: dict[str, Partition] = {ONESHOT: root}
    steps: list[tuple[Stage, ...]] = [(oneshot,)]
    for level in steps_of(spec, root, tree, common):
        partitions.update({stage.name: part for stage, part in level})
        steps.append(tuple(stage for stage, _ in level))
    leaves = tuple(s.name for s in steps[-1])
    steps.append((Stage(EVAL, "evaluate", len(steps)),))
    stages = tuple(s for step in steps for s in step)
    return Plan(stages=stages, steps=tuple(steps), leaves=leaves, partitions=partitions)
