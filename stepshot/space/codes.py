"""Architecture codes: `Arch` (a decoded, validated architecture holding its space) and
`parse_arch`, whose errors name the position, the value and what is allowed."""
from __future__ import annotations

from dataclasses import dataclass, field

from stepshot.errors import StepshotError
from stepshot.space.family import CODES, SearchSpace

class ArchError(StepshotError, ValueError):
    """An invalid architecture code; the message names position, value and what is allowed."""



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


def parse_arch(code: str, sp: SearchSpace) -> Arch:
    """Decode a code of the space (52 chars for resnet48, or 51 without the leading resolution digit)."""
    code = code.strip()
    if len(code) == sp.code_len - 1:
        code = "1" + code
    _validate(code, sp)
    depths = tuple(int(c) for c in code[1:1 + sp.num_stages])
    codes = tuple(
        tuple((int(code[sp.slot(s, b)]), int(code[sp.slot(s, b) + 1])) for b in range(depths[s]))
        for s in range(sp.num_stages))
    return Arch(sp, depths, int(code[sp.blocks_at - 1]), codes)
