"""A search space's definition (`SearchSpace`): a stem, then stages of one block kind, with the
width, depth and stride choices of each stage and the ratio-code widths. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Mapping, Sequence, TypeVar, Union

if TYPE_CHECKING:
    from stepshot.space.codes import Arch

RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)  # ratio codes 1..7
CODES = tuple(range(1, len(RATIOS) + 1))

RatioCodes = Union[Sequence[int], Sequence[Sequence[int]]]  # one list, or one per stage

# The block kinds a space's stages may be built of. Every consumer of the block shape looks
# its kind up (`for_block`: `complexity` here, the static and dynamic blocks of the trainer),
# so a kind added here but not wired into one of them fails loudly there.
BLOCK_KINDS = ("basic",)   # basic: two 3x3 convs and a shortcut (ResNet-18/34)
T = TypeVar("T")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet rounding: nearest multiple of `divisor`, never more than 10% below `v`."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v




@dataclass(frozen=True)
class SearchSpace:
    """ResNet-like: a stem, then stages of `block` blocks, per stage a base width, stride and depths."""

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
    block: str = "basic"   # one of BLOCK_KINDS

    def __post_init__(self) -> None:
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"space {self.name}: block {self.block!r} is not one of {BLOCK_KINDS}")
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
        from stepshot.space.sampling import extreme_arch   # sampling builds on this module

        return extreme_arch(self, largest=True)

    @cached_property
    def min_arch(self) -> "Arch":
        from stepshot.space.sampling import extreme_arch

        return extreme_arch(self, largest=False)


def for_block(table: Mapping[str, T], space: SearchSpace, consumer: str) -> T:
    """`table`'s entry for the space's block kind; a kind the consumer does not wire is an error."""
    try:
        return table[space.block]
    except KeyError:
        raise NotImplementedError(f"{consumer} has no {space.block!r} block (space {space.name}); "
                                  f"it builds {sorted(table)}") from None
