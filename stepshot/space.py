"""Search spaces and architecture codes (spec §1). Torch-free.

Two spaces share one structure and one 52-char code format:

* ``resnet48``: the CVPR 2022 Track 1 space exactly: 7x7/2 stem + max-pool,
  bases 64 / (64, 128, 256, 512), divisor 8, 224 input (train resolutions
  128..224, min net at 128).
* ``resnet48-fmnist``: the same space scaled for 28x28 grayscale Fashion-MNIST on
  a 2-core CPU. Bases are 8 / (8, 16, 32, 64) with divisor 1 (so a width is
  ``round(base * ratio)``), and the stem is a 3x3 stride-2 conv with no max-pool,
  so stages run at 14/7/4/2 pixels. Why:
  - divisor 1 keeps the real space's collision pattern: 3/6/7/7 distinct stage
    widths (S1 {6,7,8}, S2 {11..16}, S3 {22,...,32}, S4 {45,...,64}), so the grouped
    split has the same number of groups per stage as the paper's table (§3.2);
    divisor 8 or 4 at these bases would leave 1-3 widths per stage;
  - bases 8..64 with a stride-2 stem keep the max net fast on CPU (data.md measured
    1322 img/s for this shape with 2 threads at batch 256; a stride-1 stem or
    bases 16..128 fall to ~450-500 img/s);
  - train resolutions 16/20/24/28 mirror 128..224/224 (min net at 16).

Code layout (52 chars): ``[res][d1 d2 d3 d4][stem][S1: 5 pairs][S2: 5][S3: 8][S4: 5]``
with (mid, out) ratio-code pairs and "00" for slots beyond the depth. Stages are
0-based in the API and 1-based ("stage 3" = S3) in messages, as in the spec.

An `Arch` holds its `SearchSpace`; names are resolved (`get_space`) where they enter (the spec,
the command line). The stage count and code layout come from the space (`num_stages`,
`code_len`); another space of this block family is one `SearchSpace` and one `register_space`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence, Union

from stepshot.errors import StepshotError

RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)  # ratio codes 1..7
CODES = tuple(range(1, len(RATIOS) + 1))

RatioCodes = Union[Sequence[int], Sequence[Sequence[int]]]  # one list, or one per stage


class ArchError(StepshotError, ValueError):
    """An invalid architecture code; the message names position, value and what is allowed."""


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet rounding: nearest multiple of `divisor`, never more than 10% below `v`."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class SearchSpace:
    """ResNet-like: a stem, then stages of basic blocks (two 3x3 convs), per stage a base width."""

    name: str
    in_channels: int
    num_classes: int
    resolution: int
    train_resolutions: tuple[int, ...]
    min_resolution: int
    stem_kernel: int
    stem_stride: int
    stem_maxpool: bool
    stem_base: int
    stage_bases: tuple[int, ...]
    strides: tuple[int, ...] = (1, 2, 2, 2)
    depth_choices: tuple[tuple[int, ...], ...] = (
        (2, 3, 4, 5), (2, 3, 4, 5), (2, 3, 4, 5, 6, 7, 8), (2, 3, 4, 5))
    max_depths: tuple[int, ...] = (5, 5, 8, 5)
    divisor: int = 8

    def __post_init__(self) -> None:
        per_stage = {len(self.stage_bases), len(self.strides), len(self.depth_choices), len(self.max_depths)}
        if len(per_stage) != 1 or any(max(c) > m for c, m in zip(self.depth_choices, self.max_depths)):
            raise ValueError(f"space {self.name}: per-stage fields disagree, or depths exceed max_depths")

    # Hash by name (an Arch hashes its space); equal by value (so across processes too).
    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r})"

    @property
    def num_stages(self) -> int:
        return len(self.stage_bases)

    @property
    def last_stage(self) -> int:   # 0-based: the stage the classifier heads follow
        return self.num_stages - 1

    @property
    def blocks_at(self) -> int:    # the first (mid, out) pair of a code: after resolution, depths, stem
        return 2 + self.num_stages

    @property
    def code_len(self) -> int:
        return self.blocks_at + 2 * sum(self.max_depths)

    def width(self, base: int, ratio_code: int) -> int:
        # round() first, as the 4th team does; identical values for the real space (§1.1)
        return make_divisible(round(base * RATIOS[ratio_code - 1]), self.divisor)

    @cached_property
    def _widths(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """[out, mid][stage][code - 1], cached: parsing a 45k-code pool hits these a lot."""
        outs = tuple(tuple(self.width(self.stem_base if s == 0 else b, c) for c in CODES)
                     for s, b in enumerate(self.stage_bases))
        mids = tuple(tuple(self.width(b, c) for c in CODES) for b in self.stage_bases)
        return outs, mids

    def out_width(self, stage: int, ratio_code: int) -> int:
        """Stage-out width for a code; S1's out width is the stem width."""
        return self._widths[0][stage][ratio_code - 1]

    def mid_width(self, stage: int, ratio_code: int) -> int:
        return self._widths[1][stage][ratio_code - 1]

    def stage_widths(self, stage: int) -> tuple[int, ...]:
        """Distinct out widths of a 0-based stage, ascending."""
        return tuple(sorted(set(self._widths[0][stage])))

    def stem_widths(self) -> tuple[int, ...]:
        return self.stage_widths(0)  # S1's out width is the stem width

    def max_in(self, stage: int) -> int:
        """Widest input of a stage's first block (previous stage's or the stem's max)."""
        return self.stage_widths(stage - 1)[-1] if stage else self.stem_widths()[-1]

    def has_projection(self, stage: int, block: int) -> bool:
        """Spec §1.1 rule on the max widths: 1x1 conv shortcut iff stride 2 or in != out.

        Within a stage every block shares the stage-out width, and S1's out equals
        the stem width, so the rule decided on max widths holds for every subnet too.
        """
        if block:
            return False
        return self.strides[stage] != 1 or self.max_in(stage) != self.stage_widths(stage)[-1]

    def slot(self, stage: int, block: int) -> int:
        """Position of a block's mid code in the 52-char form."""
        return self._stage_slots[stage] + 2 * block

    @cached_property
    def _stage_slots(self) -> tuple[int, ...]:
        return tuple(self.blocks_at + 2 * sum(self.max_depths[:s]) for s in range(self.num_stages))

    @cached_property
    def max_arch(self) -> "Arch":
        return extreme_arch(self, largest=True)

    @cached_property
    def min_arch(self) -> "Arch":
        return extreme_arch(self, largest=False)


# The registry: every space a spec or a command line may name (the schema's enum reads it).
SPACES: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> SearchSpace:
    if space.name in SPACES and SPACES[space.name] != space:
        raise ValueError(f"search space {space.name!r} is already registered, differently")
    SPACES[space.name] = space
    return space


RESNET48 = register_space(SearchSpace(
    name="resnet48", in_channels=3, num_classes=1000, resolution=224, train_resolutions=(128, 160, 192, 224),
    min_resolution=128, stem_kernel=7, stem_stride=2, stem_maxpool=True, stem_base=64,
    stage_bases=(64, 128, 256, 512), divisor=8))
RESNET48_FMNIST = register_space(SearchSpace(
    name="resnet48-fmnist", in_channels=1, num_classes=10, resolution=28, train_resolutions=(16, 20, 24, 28),
    min_resolution=16, stem_kernel=3, stem_stride=2, stem_maxpool=False, stem_base=8,
    stage_bases=(8, 16, 32, 64), divisor=1))


def get_space(name: "str | SearchSpace") -> SearchSpace:
    """The registered space of a name (where a name enters); a space passes through."""
    if isinstance(name, SearchSpace):
        return name
    try:
        return SPACES[name]
    except KeyError:
        raise KeyError(f"unknown search space {name!r}; known: {', '.join(sorted(SPACES))}") from None


@dataclass(frozen=True)
class Arch:
    """A decoded, validated architecture (constructing one validates it)."""

    space: SearchSpace
    depths: tuple[int, ...]
    stem_code: int
    codes: tuple[tuple[tuple[int, int], ...], ...]
    stem: int = field(init=False, compare=False, repr=False)
    blocks: tuple[tuple[tuple[int, int], ...], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.space, SearchSpace):   # names are resolved where they enter
            raise TypeError(f"Arch.space must be a SearchSpace, got {self.space!r} (use get_space)")
        sp = self.space
        _validate(self.encode(), sp)
        object.__setattr__(self, "stem", sp.out_width(0, self.stem_code))
        blocks = tuple(tuple((sp.mid_width(s, m), sp.out_width(s, o)) for m, o in stage)
                       for s, stage in enumerate(self.codes))
        object.__setattr__(self, "blocks", blocks)

    def stage_out(self, s: int) -> int:
        return self.stem if s == 0 else self.blocks[s][0][1]

    def encode(self) -> str:
        sp = self.space
        if len(self.depths) != sp.num_stages or len(self.codes) != sp.num_stages:
            raise ArchError(f"need {sp.num_stages} stages, got depths {self.depths} and {len(self.codes)} stage codes")
        parts = ["1", *map(str, self.depths), str(self.stem_code)]
        for s, stage in enumerate(self.codes):
            if len(stage) != self.depths[s] or len(stage) > sp.max_depths[s]:
                raise ArchError(f"stage {s + 1}: {len(stage)} block codes for depth {self.depths[s]} "
                                f"({sp.max_depths[s]} slots)")
            slots = [f"{m}{o}" for m, o in stage] + ["00"] * (sp.max_depths[s] - len(stage))
            parts.extend(slots)
        return "".join(parts)


def _position_name(sp: SearchSpace, pos: int) -> str:
    if pos == 0:
        return "resolution"
    if pos <= sp.num_stages:
        return f"depth of stage {pos}"
    if pos == sp.blocks_at - 1:
        return "stem code"
    for s in range(sp.num_stages):
        for b in range(sp.max_depths[s]):
            if pos in (sp.slot(s, b), sp.slot(s, b) + 1):
                kind = "mid" if pos == sp.slot(s, b) else "out"
                return f"{kind} code of stage {s + 1} block {b + 1}"
    return "beyond the code"


def _validate(code: str, sp: SearchSpace) -> None:
    """Check a 52-char code; raise ArchError naming the first bad position."""

    def fail(pos: int, allowed: str) -> None:
        raise ArchError(f"position {pos} ({_position_name(sp, pos)}): {code[pos]!r} {allowed}")

    if len(code) != sp.code_len:
        raise ArchError(f"code has {len(code)} characters; expected {sp.code_len} "
                        f"(or {sp.code_len - 1} without the leading resolution digit)")
    for pos, ch in enumerate(code):
        if ch not in "0123456789":
            fail(pos, "is not a digit")
    if code[0] != "1":
        fail(0, "must be '1' (the only resolution code)")
    for s, choices in enumerate(sp.depth_choices):
        if int(code[1 + s]) not in choices:
            fail(1 + s, f"not in {choices[0]}..{choices[-1]}")
    stem = sp.blocks_at - 1
    if int(code[stem]) not in CODES:
        fail(stem, "not in 1..7")
    for s in range(sp.num_stages):
        depth = int(code[1 + s])
        out_ref, ref_name = (stem, "the stem code (S1's out code equals the stem code)") if s == 0 else (None, "")
        for b in range(sp.max_depths[s]):
            p = sp.slot(s, b)
            if b >= depth:
                for q in (p, p + 1):
                    if code[q] != "0":
                        fail(q, f"must be '0': block {b + 1} is beyond depth {depth}")
                continue
            for q in (p, p + 1):
                if int(code[q]) not in CODES:
                    fail(q, f"not in 1..7 (block {b + 1} is within depth {depth}, so not '00')")
            if out_ref is None:
                out_ref, ref_name = p + 1, f"the out code of stage {s + 1} block 1 (one out code per stage)"
            elif code[p + 1] != code[out_ref]:
                fail(p + 1, f"differs from {code[out_ref]!r}, {ref_name}")


def parse_arch(code: str, space: "SearchSpace | str") -> Arch:
    """Decode a code of the space (52 chars for resnet48, or 51 without the leading resolution digit)."""
    sp = get_space(space)
    code = code.strip()
    if len(code) == sp.code_len - 1:
        code = "1" + code
    _validate(code, sp)
    depths = tuple(int(c) for c in code[1:1 + sp.num_stages])
    codes = tuple(
        tuple((int(code[sp.slot(s, b)]), int(code[sp.slot(s, b) + 1])) for b in range(depths[s]))
        for s in range(sp.num_stages))
    return Arch(sp, depths, int(code[sp.blocks_at - 1]), codes)


def group_caps(space: "SearchSpace | str", stage: int, groups: int) -> tuple[int, ...]:
    """Ascending caps of a 0-based stage at G = `groups` (the G largest distinct widths;
    the smallest cap also serves every narrower width: the catch-all group, spec §3.2)."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return get_space(space).stage_widths(stage)[-groups:]


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


def sample_arch(space: "SearchSpace | str", rng: random.Random, *, ratio_codes: RatioCodes = CODES,
                widths: Sequence[Sequence[int] | None] | None = None,
                depths: Sequence[Sequence[int] | None] | None = None) -> Arch:
    """Uniform over depths and ratio codes (§3.1), optionally restricted per stage to
    allowed stage-out `widths` and `depths` (None = all)."""
    sp = get_space(space)
    stages = range(sp.num_stages)
    per_stage = stage_ratio_codes(ratio_codes, sp.num_stages)
    widths = widths or (None,) * sp.num_stages
    depths = depths or (None,) * sp.num_stages
    ds = tuple(rng.choice(depths[s] or sp.depth_choices[s]) for s in stages)
    outs = [rng.choice(_out_codes(sp, s, per_stage[s], widths[s])) for s in stages]
    codes = tuple(tuple((rng.choice(per_stage[s]), outs[s]) for _ in range(ds[s])) for s in stages)
    return Arch(sp, ds, outs[0], codes)


def extreme_arch(space: "SearchSpace | str", *, largest: bool, ratio_codes: RatioCodes = CODES,
                 widths: Sequence[Sequence[int] | None] | None = None,
                 depths: Sequence[Sequence[int] | None] | None = None) -> Arch:
    """The sandwich ends: widest/deepest (or narrowest/shallowest) within the restrictions.

    Among codes giving the same width the max net takes the smallest code and the
    min net the largest, so the unrestricted ends are all-1 and all-7 codes (§3.1).
    """
    sp = get_space(space)
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


def complexity(arch: Arch, resolution: int | None = None) -> tuple[int, int]:
    """(params, MACs) of the static subnet at `resolution`: params include BN affine
    and FC bias; MACs count conv and FC multiply-accumulates."""
    sp = arch.space
    size = resolution or sp.resolution
    params = macs = 0

    def conv(cin: int, cout: int, k: int, stride: int, size_in: int) -> int:
        nonlocal params, macs
        size_out = (size_in + 2 * (k // 2) - k) // stride + 1
        params += cin * cout * k * k + 2 * cout  # conv weight + its BN's gamma and beta
        macs += cin * cout * k * k * size_out * size_out
        return size_out

    size = conv(sp.in_channels, arch.stem, sp.stem_kernel, sp.stem_stride, size)
    if sp.stem_maxpool:
        size = (size + 2 - 3) // 2 + 1
    cin = arch.stem
    for s, blocks in enumerate(arch.blocks):
        for b, (mid, out) in enumerate(blocks):
            stride = sp.strides[s] if b == 0 else 1
            size_out = conv(cin, mid, 3, stride, size)
            conv(mid, out, 3, 1, size_out)
            if sp.has_projection(s, b):
                conv(cin, out, 1, stride, size)
            size, cin = size_out, out
    params += cin * sp.num_classes + sp.num_classes
    macs += cin * sp.num_classes
    return params, macs
