"""The registered search spaces: every space a spec or a command line may name, and `get_space`,
which resolves a name where it enters (the spec, the command line, a file).

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
"""
from __future__ import annotations

from stepshot.space.family import SearchSpace

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
