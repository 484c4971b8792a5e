"""Architecture sets that cover a space: stratified over depths and widths.

A uniform random sample of a few dozen codes clusters around mid-sized nets, so
its ranking is decided by small accuracy gaps that seed noise swamps. Here each
stage's depth and stage-out width are *balanced*: every depth choice and every
distinct width appears about equally often, assigned by independent shuffles
(a Latin-hypercube design over the 8 stage-level dimensions). Mid widths stay
uniformly random. The result is written in the challenge format together with
how it was drawn, so the sample is recorded next to the ground truth.

Balancing each dimension on its own still leaves the *whole* net mid-sized on
average (deep stages pair with shallow ones), so the sample spans a narrow band
of capacity. `mode="joint"` instead gives each architecture one depth level and
one width level from a 2-D Latin hypercube and derives every stage's depth and
every block's widths from those levels (with a little per-stage jitter): the
sample runs from near the min net to near the max net, evenly in both levels.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from stepshot.space import CODES, Arch, SearchSpace


def _balanced(values: Sequence[int], n: int, rng: random.Random) -> list[int]:
    """n values covering `values` as evenly as possible, in random order."""
    out = [values[i % len(values)] for i in range(n)]
    rng.shuffle(out)
    return out


MODES = ("marginal", "joint")
JITTER = 0.1  # per-stage spread around an architecture's level, as a fraction of the range


def stratified_archs(sp: SearchSpace, n: int, seed: int = 0,
                     ratio_codes: Sequence[int] = CODES, mode: str = "marginal") -> list[Arch]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    rng = random.Random(seed)
    codes = sorted(set(ratio_codes))
    draw = _marginal if mode == "marginal" else _joint
    return _distinct(n, draw(sp, n, rng, codes))


def _distinct(n: int, draw) -> list[Arch]:
    """n distinct archs; `draw(i)` makes the i-th (redrawn on a duplicate: mids are random)."""
    archs: list[Arch] = []
    seen: set[str] = set()
    for i in range(n):
        for _ in range(100):
            arch = draw(i)
            if arch.encode() not in seen:
                break
        seen.add(arch.encode())
        archs.append(arch)
    return archs


def _marginal(sp: SearchSpace, n: int, rng: random.Random, codes: list[int]):
    depth_cols = [_balanced(sp.depth_choices[s], n, rng) for s in range(sp.num_stages)]
    width_cols = []
    for s in range(sp.num_stages):
        # One representative code per distinct width, so widths (not codes) are balanced.
        by_width: dict[int, int] = {}
        for c in codes:
            by_width.setdefault(sp.out_width(s, c), c)
        width_cols.append(_balanced([by_width[w] for w in sorted(by_width)], n, rng))

    def draw(i: int) -> Arch:
        blocks = tuple(tuple((rng.choice(codes), width_cols[s][i]) for _ in range(depth_cols[s][i]))
                       for s in range(sp.num_stages))
        return Arch(sp, tuple(col[i] for col in depth_cols), width_cols[0][i], blocks)
    return draw


def _joint(sp: SearchSpace, n: int, rng: random.Random, codes: list[int]):
    """One (depth level, width level) per arch from a 2-D Latin hypercube on [0, 1)^2."""
    levels = [list(range(n)) for _ in range(2)]
    for perm in levels:
        rng.shuffle(perm)
    by_ratio = sorted(codes, key=lambda c: -c)  # narrowest first: code 7 is ratio 0.7

    def pick(options: Sequence[int], level: float) -> int:
        x = min(max(level + rng.uniform(-JITTER, JITTER), 0.0), 1.0 - 1e-9)
        return options[int(x * len(options))]

    def draw(i: int) -> Arch:
        depth_level = (levels[0][i] + rng.random()) / n
        width_level = (levels[1][i] + rng.random()) / n
        depths = tuple(pick(sp.depth_choices[s], depth_level) for s in range(sp.num_stages))
        outs = [pick(by_ratio, width_level) for _ in range(sp.num_stages)]  # one out width per stage
        blocks = tuple(tuple((pick(by_ratio, width_level), outs[s]) for _ in range(depths[s])) for s in range(sp.num_stages))
        return Arch(sp, depths, outs[0], blocks)  # the stem feeds S1's identity shortcut
    return draw


def challenge_format(archs: Sequence[Arch]) -> dict[str, dict]:
    return {f"arch{i + 1}": {"arch": a.encode()} for i, a in enumerate(archs)}


def pool_entries(path: str | Path) -> dict[str, str]:
    """{name: code as written} from the challenge format `{"archN": {"arch": CODE, ...}}` (the
    CVPR 2022 Track 1 pool: 45,000 entries), a plain `{CODE: ACC}` map, or a JSON list of codes
    (named arch1, arch2, ...), in the file's order. The codes are as written (the challenge's
    are 51 characters): a submission echoes them; `load_codes` gives the 52-char form."""
    from stepshot.correlate import FormatError, read_json

    obj = read_json(path)
    if isinstance(obj, list) and all(isinstance(c, (str, dict)) for c in obj):
        return {f"arch{i + 1}": str(c if isinstance(c, str) else c.get("arch", "")) for i, c in enumerate(obj)}
    if isinstance(obj, dict) and all(isinstance(v, dict) and isinstance(v.get("arch"), str) for v in obj.values()):
        return {name: v["arch"] for name, v in obj.items()}
    if isinstance(obj, dict) and not any(isinstance(v, dict) for v in obj.values()):
        return {f"arch{i + 1}": code for i, code in enumerate(obj)}
    raise FormatError(f'{path}: expected {{"archN": {{"arch": CODE, ...}}}}, {{CODE: ACC}} or a JSON list of codes')


def load_codes(path: str | Path) -> dict[str, str]:
    """{name: 52-char code} of `pool_entries`."""
    from stepshot.correlate import normalize_code

    return {name: normalize_code(code) for name, code in pool_entries(path).items()}
