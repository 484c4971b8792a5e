"""Search spaces and architecture codes (spec §1). Torch-free.

The registered spaces (`resnet48`, the CVPR 2022 Track 1 space, and `resnet48-fmnist`, the same
space scaled for Fashion-MNIST on a CPU) and why they look as they do: `registry`.

Code layout (52 chars): ``[res][d1 d2 d3 d4][stem][S1: 5 pairs][S2: 5][S3: 8][S4: 5]``
with (mid, out) ratio-code pairs and "00" for slots beyond the depth. Stages are
0-based in the API and 1-based ("stage 3" = S3) in messages, as in the spec.

An `Arch` holds its `SearchSpace`; names are resolved (`get_space`) where they enter (the spec,
the command line, a file); everything inside takes the space object. The stage count, code
layout and block kind come from the space (`num_stages`, `code_len`, `block`); another space of
this block family is one `SearchSpace` and one `register_space`, and a new block kind is one
entry in `BLOCK_KINDS` plus the builders that dispatch on it (`for_block`), each of which
refuses a kind it does not know.

One module per concern, this package the public entry: `family` (`SearchSpace`, ratio codes,
block kinds), `registry` (the registered spaces, `get_space`), `codes` (`Arch`, `parse_arch`),
`sampling` (samples, sandwich ends, width groups), `complexity` (params and MACs).
"""
from __future__ import annotations

from stepshot.space.codes import Arch, ArchError, parse_arch
from stepshot.space.complexity import complexity
from stepshot.space.family import (BLOCK_KINDS, CODES, RATIOS, RatioCodes, SearchSpace, for_block,
                                   make_divisible)
from stepshot.space.registry import RESNET48, RESNET48_FMNIST, SPACES, get_space, register_space
from stepshot.space.sampling import extreme_arch, group_caps, route_caps, sample_arch, stage_ratio_codes

__all__ = ["BLOCK_KINDS", "CODES", "RATIOS", "RESNET48", "RESNET48_FMNIST", "SPACES", "Arch", "ArchError",
           "RatioCodes", "SearchSpace", "complexity", "extreme_arch", "for_block", "get_space", "group_caps",
           "make_divisible", "parse_arch", "register_space", "route_caps", "sample_arch", "stage_ratio_codes"]
