"""`stepshot arch`: describe and sample architecture codes. Torch-free.

    stepshot arch describe CODE --space S   -> one JSON object (exit 2 on a bad code)
    stepshot arch sample --space S -n N --seed K -> JSON list of N distinct codes
    stepshot arch sample ... --stratified --challenge -> balanced over depths and widths,
                                                        in the challenge format
    stepshot arch sample ... --stratified joint       -> from near the min net to near the max net
"""
from __future__ import annotations

import argparse
import json
import random

from stepshot.archsets import MODES, challenge_format, stratified_archs
from stepshot.errors import StepshotError
from stepshot.space import SPACES, ArchError, SearchSpace, complexity, get_space, parse_arch, sample_arch

MAX_TRIES_PER_CODE = 100  # guards `sample` against asking for more codes than can be drawn


def _describe(args: argparse.Namespace) -> int:
    space = get_space(args.space)
    try:
        arch = parse_arch(args.code, space)
    except ArchError as err:
        raise ArchError(f"invalid code for {space.name}: {err}") from None
    params, macs = complexity(arch)
    print(json.dumps({
        "code": arch.encode(),
        "resolution": space.resolution,
        "depths": list(arch.depths),
        "stem": arch.stem,
        "blocks": [list(block) for stage in arch.blocks for block in stage],
        "params": params,
        "macs": macs,
    }))
    return 0


def _sample(args: argparse.Namespace) -> int:
    space = get_space(args.space)   # the name resolved once, here where it enters
    if args.stratified:
        codes = [a.encode() for a in stratified_archs(space, args.n, args.seed, mode=args.stratified)]
    else:
        codes = _random_codes(args, space)
    print(json.dumps(challenge_format([parse_arch(c, space) for c in codes]) if args.challenge else codes))
    return 0


def _random_codes(args: argparse.Namespace, space: SearchSpace) -> list[str]:
    rng = random.Random(args.seed)
    codes: dict[str, None] = {}  # insertion-ordered set
    for _ in range(MAX_TRIES_PER_CODE * max(args.n, 1)):
        if len(codes) >= args.n:
            break
        codes[sample_arch(space, rng).encode()] = None
    if len(codes) < args.n:
        raise StepshotError(f"drew only {len(codes)} distinct codes")
    return list(codes)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    describe = sub.add_parser("describe", help="decode a code: widths, depths, params and MACs (JSON)")
    describe.add_argument("code", help="52-char code (or 51 without the leading resolution digit)")
    describe.add_argument("--space", choices=sorted(SPACES), default="resnet48")
    describe.set_defaults(func=_describe)
    sample = sub.add_parser("sample", help="print a JSON list of distinct random codes")
    sample.add_argument("--space", choices=sorted(SPACES), default="resnet48")
    sample.add_argument("-n", type=int, default=10, help="how many codes")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--stratified", nargs="?", const="marginal", choices=MODES, default=None,
                        help="cover the space (see archsets.py): 'marginal' (the default) balances every "
                             "stage's depths and widths; 'joint' spreads whole nets from small to large")
    sample.add_argument("--challenge", action="store_true",
                        help='print {"archN": {"arch": CODE}} instead of a list')
    sample.set_defaults(func=_sample)
