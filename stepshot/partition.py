"""Partitions of a search space for the `partitioned` few-shot mode. Torch-free.

A step cuts every partition of the previous step into `parts` children along one
dimension of one stage: its stage-out widths (S1's = the stem width) or its depths.
The stage's remaining choices (ascending) are split into contiguous buckets, larger
buckets first. Ids are dot-joined cut paths: "s4w0" is bucket 0 of S4's widths,
"s4w0.s3d1" then bucket 1 of S3's depths inside it; the root is "root".
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Sequence

from stepshot.space import CODES, Arch, RatioCodes, SearchSpace, extreme_arch, sample_arch

ROOT = "root"
DIMENSIONS = {"width": "w", "depth": "d"}


@dataclass(frozen=True)
class Partition:
    """Per stage, the allowed stage-out widths and depths (None: all); the root restricts no
    stage and so holds none (`()`): a cut fills in the space's stages."""

    id: str = ROOT
    widths: tuple[tuple[int, ...] | None, ...] = ()  # allowed stage-out widths
    depths: tuple[tuple[int, ...] | None, ...] = ()  # allowed depths

    def contains(self, arch: Arch) -> bool:
        return all(
            (w is None or arch.stage_out(s) in w) and (d is None or arch.depths[s] in d)
            for s, (w, d) in enumerate(zip(self.widths, self.depths)))

    def max_arch(self, space: SearchSpace, ratio_codes: RatioCodes = CODES) -> Arch:
        return extreme_arch(space, largest=True, ratio_codes=ratio_codes, widths=self.widths, depths=self.depths)

    def min_arch(self, space: SearchSpace, ratio_codes: RatioCodes = CODES) -> Arch:
        return extreme_arch(space, largest=False, ratio_codes=ratio_codes, widths=self.widths, depths=self.depths)

    def sample(self, space: SearchSpace, rng: random.Random, ratio_codes: RatioCodes = CODES) -> Arch:
        return sample_arch(space, rng, ratio_codes=ratio_codes, widths=self.widths, depths=self.depths)

    def choices(self, space: SearchSpace, dimension: str, stage: int) -> tuple[int, ...]:
        """Allowed widths or depths of a 0-based stage, ascending."""
        if dimension == "width":
            return _allowed(self.widths, stage) or space.stage_widths(stage)
        return _allowed(self.depths, stage) or space.depth_choices[stage]


def _allowed(per_stage: tuple[tuple[int, ...] | None, ...], stage: int) -> tuple[int, ...] | None:
    return per_stage[stage] if stage < len(per_stage) else None


def _buckets(values: Sequence[int], parts: int) -> list[tuple[int, ...]]:
    size, extra = divmod(len(values), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (k < extra)
        out.append(tuple(values[start:end]))
        start = end
    return out


def cut(parent: Partition, sp: SearchSpace, dimension: str, stage: int, parts: int) -> list[Partition]:
    """Split `parent` into `parts` children along `dimension` of `stage` (1-based)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {sorted(DIMENSIONS)}, got {dimension!r}")
    if not 1 <= stage <= sp.num_stages:
        raise ValueError(f"stage must be 1..{sp.num_stages}, got {stage}")
    values = parent.choices(sp, dimension, stage - 1)
    if not 2 <= parts <= len(values):
        raise ValueError(f"partition {parent.id!r}: cannot cut {len(values)} {dimension} choices "
                         f"{list(values)} of stage {stage} into {parts} parts")
    field = "widths" if dimension == "width" else "depths"
    # A cut partition spells out every stage of the space (the root's `()` restricts none).
    unrestricted = (None,) * sp.num_stages
    parent = replace(parent, widths=parent.widths or unrestricted, depths=parent.depths or unrestricted)
    children = []
    for k, bucket in enumerate(_buckets(values, parts)):
        label = f"s{stage}{DIMENSIONS[dimension]}{k}"
        allowed = list(getattr(parent, field))
        allowed[stage - 1] = bucket
        children.append(replace(parent, id=label if parent.id == ROOT else f"{parent.id}.{label}",
                                **{field: tuple(allowed)}))
    return children


def build_tree(space: SearchSpace, steps: list[dict]) -> list[list[Partition]]:
    """Partitions per step; step 0 is [root], each step cuts every partition of the last."""
    levels = [[Partition()]]
    for step in steps:
        levels.append([child for part in levels[-1]
                       for child in cut(part, space, step["dimension"], step["stage"], step["parts"])])
    return levels


def route(arch: Arch, leaves: Sequence[Partition]) -> Partition:
    """The one leaf that contains `arch`."""
    hits = [p for p in leaves if p.contains(arch)]
    if len(hits) != 1:
        raise ValueError(f"{arch.encode()} lies in {len(hits)} partitions "
                         f"({[p.id for p in hits]}); expected exactly one")
    return hits[0]
