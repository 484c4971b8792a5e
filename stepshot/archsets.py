"""Architecture sets that cover a space: stratified over depths and widths.

A uniform random sample of a few dozen codes clusters around mid-sized nets, so
its ranking is decided by small accuracy gaps that seed noise swamps. Here each
stage's depth and stage-out width are *balanced*: every depth choice and every
distinct width appears about equally often, assigned by independent shuffles
(a Latin-hypercube design over the 8 stage-level dimensions). Mid widths stay
uniformly random. The result is written in the challenge format together with
how it was drawn, so the sample is recorded next to the ground truth.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from stepshot.space import CODES, Arch, SearchSpace, get_space


def _balanced(values: Sequence[int], n: int, rng: random.Random) -> list[int]:
    """n values covering `values` as evenly as possible, in random order."""
    out = [values[i % len(values)] for i in range(n)]
    rng.shuffle(out)
    return out


def stratified_archs(space: SearchSpace | str, n: int, seed: int = 0,
                     ratio_codes: Sequence[int] = CODES) -> list[Arch]:
    sp = get_space(space)
    rng = random.Random(seed)
    codes = sorted(set(ratio_codes))
    depth_cols = [_balanced(sp.depth_choices[s], n, rng) for s in range(4)]
    width_cols = []
    for s in range(4):
        # One representative code per distinct width, so widths (not codes) are balanced.
        by_width: dict[int, int] = {}
        for c in codes:
            by_width.setdefault(sp.out_width(s, c), c)
        width_cols.append(_balanced([by_width[w] for w in sorted(by_width)], n, rng))
    archs: list[Arch] = []
    seen: set[str] = set()
    for i in range(n):
        for _ in range(100):  # redraw mids on a duplicate
            blocks = tuple(
                tuple((rng.choice(codes), width_cols[s][i]) for _ in range(depth_cols[s][i]))
                for s in range(4))
            arch = Arch(sp.name, tuple(col[i] for col in depth_cols), width_cols[0][i], blocks)
            if arch.encode() not in seen:
                break
        seen.add(arch.encode())
        archs.append(arch)
    return archs


def challenge_format(archs: Sequence[Arch]) -> dict[str, dict]:
    return {f"arch{i + 1}": {"arch": a.encode()} for i, a in enumerate(archs)}


def load_codes(path: str | Path) -> dict[str, str]:
    """{name: 52-char code} from the challenge format `{"archN": {"arch": CODE, ...}}`,
    a plain `{CODE: ACC}` map, or a JSON list of codes (named arch1, arch2, ...)."""
    from stepshot.correlate import FormatError, normalize_code, read_json

    obj = read_json(path)
    if isinstance(obj, list) and all(isinstance(c, (str, dict)) for c in obj):
        return {f"arch{i + 1}": normalize_code(c if isinstance(c, str) else c.get("arch", ""))
                for i, c in enumerate(obj)}
    if isinstance(obj, dict) and all(isinstance(v, dict) and isinstance(v.get("arch"), str) for v in obj.values()):
        return {name: normalize_code(v["arch"]) for name, v in obj.items()}
    if isinstance(obj, dict) and not any(isinstance(v, dict) for v in obj.values()):
        return {f"arch{i + 1}": normalize_code(code) for i, code in enumerate(obj)}
    raise FormatError(f'{path}: expected {{"archN": {{"arch": CODE, ...}}}}, {{CODE: ACC}} or a JSON list of codes')
