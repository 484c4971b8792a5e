"""Drawing architectures of a space: uniform samples and the sandwich ends within per-stage
restrictions (spec §3.1), and the width groups of the grouped split (spec §3.2)."""
from __future__ import annotations

import random
from typing import Sequence

from stepshot.space.codes import Arch
from stepshot.space.family import CODES, RatioCodes, SearchSpace

def group_caps(space: SearchSpace, stage: int, groups: int) -> tuple[int, ...]:
    """Ascending caps of a 0-based stage at G = `groups` (the G largest distinct widths;
    the smallest cap also serves every narrower width: the catch-all group, spec §3.2)."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return space.stage_widths(stage)[-groups:]


def route_caps(caps: Sequence[Sequence[int]], arch: Arch) -> tuple[int, ...]:
    """Group per stage: the first (ascending) cap >= the stage-out width (spec §3.2)."""
    return tuple(next(g for g, cap in enumerate(stage_caps) if cap >= arch.stage_out(s))
                 for s, stage_caps in enumerate(caps))


def stage_ratio_codes(ratio_codes: RatioCodes, stages: int) -> tuple[tuple[int, ...], ...]:
    """Normalise one list of ratio codes (all stages) or one per stage (S1's also rules the stem)."""
    items = list(ratio_codes)
    per_stage = [tuple(c) for c in items] if items and not isinstance(items[0], int) else [tuple(items)] * stages
    if len(per_stage) != stages or any(not c or not set(c) <= set(CODES) for c in per_stage):
        raise ValueError(f"ratio codes must be codes in 1..7, one list or {stages}: {ratio_codes!r}")
    return tuple(per_stage)


def _out_codes(sp: SearchSpace, stage: int, codes: Sequence[int], widths: Sequence[int] | None) -> list[int]:
    allowed = [c for c in codes if widths is None or sp.out_width(stage, c) in widths]
    if not allowed:
        raise ValueError(f"stage {stage + 1}: no ratio code in {list(codes)} gives a width in {list(widths or ())}")
    return allowed


def sample_arch(sp: SearchSpace, rng: random.Random, *, ratio_codes: RatioCodes = CODES,
                widths: Sequence[Sequence[int] | None] | None = None,
                depths: Sequence[Sequence[int] | None] | None = None) -> Arch:
    """Uniform over depths and ratio codes (§3.1), optionally restricted per stage to
    allowed stage-out `widths` and `depths` (None = all)."""
    stages = range(sp.num_stages)
    per_stage = stage_ratio_codes(ratio_codes, sp.num_stages)
    widths = widths or (None,) * sp.num_stages
    depths = depths or (None,) * sp.num_stages
    ds = tuple(rng.choice(depths[s] or sp.depth_choices[s]) for s in stages)
    outs = [rng.choice(_out_codes(sp, s, per_stage[s], widths[s])) for s in stages]
    codes = tuple(tuple((rng.choice(per_stage[s]), outs[s]) for _ in range(ds[s])) for s in stages)
    return Arch(sp, ds, outs[0], codes)


def extreme_arch(sp: SearchSpace, *, largest: bool, ratio_codes: RatioCodes = CODES,
                 widths: Sequence[Sequence[int] | None] | None = None,
                 depths: Sequence[Sequence[int] | None] | None = None) -> Arch:
    """The sandwich ends: widest/deepest (or narrowest/shallowest) within the restrictions.

    Among codes giving the same width the max net takes the smallest code and the
    min net the largest, so the unrestricted ends are all-1 and all-7 codes (§3.1).
    """
    stages = range(sp.num_stages)
    per_stage = stage_ratio_codes(ratio_codes, sp.num_stages)
    widths = widths or (None,) * sp.num_stages
    depths = depths or (None,) * sp.num_stages
    sign = -1 if largest else 1

    def pick(codes: Sequence[int], width) -> int:
        return min(codes, key=lambda c: (sign * width(c), -sign * c))

    ds = tuple((max if largest else min)(depths[s] or sp.depth_choices[s]) for s in stages)
    outs = [pick(_out_codes(sp, s, per_stage[s], widths[s]), lambda c, s=s: sp.out_width(s, c))
            for s in stages]
    mids = [pick(per_stage[s], lambda c, s=s: sp.mid_width(s, c)) for s in stages]
    codes = tuple(((mids[s], outs[s]),) * ds[s] for s in stages)
    return Arch(sp, ds, outs[0], codes)
