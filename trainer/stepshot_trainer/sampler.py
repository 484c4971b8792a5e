"""Sandwich sampling (spec §3.1): max, N random, min subnets per optimizer step."""
from __future__ import annotations

import random
from typing import Sequence

from stepshot.partition import Partition
from stepshot.space import CODES, Arch, SearchSpace, stage_ratio_codes


class SandwichSampler:
    """Subnets of one step as a pure function of (seed, step), so every rank agrees.

    Inside a partition the sandwich ends are the partition's own max/min subnets.
    With restricted `ratio_codes` the ends are the widest/narrowest subnets those
    codes reach (the min net is all-7 codes only when 7 is allowed).
    """

    def __init__(self, space: SearchSpace, *, partition: Partition | None = None, random_subnets: int = 2,
                 ratio_codes: Sequence[int] | Sequence[Sequence[int]] = CODES, seed: int = 0) -> None:
        self.space = space
        self.partition = partition or Partition()
        self.random_subnets = random_subnets
        self.ratio_codes = stage_ratio_codes(ratio_codes, self.space.num_stages)
        self.seed = seed
        self.max_arch = self.partition.max_arch(self.space, self.ratio_codes)
        self.min_arch = self.partition.min_arch(self.space, self.ratio_codes)

    def sample(self, step: int) -> list[tuple[str, Arch, int]]:
        """[("max", arch, resolution), ("random", ...) * N, ("min", ...)]."""
        rng = random.Random(f"{self.seed}:{step}")  # str seeds hash with sha512: stable across processes
        randoms = [("random", self.partition.sample(self.space, rng, self.ratio_codes),
                    rng.choice(self.space.train_resolutions)) for _ in range(self.random_subnets)]
        return [("max", self.max_arch, self.space.resolution), *randoms,
                ("min", self.min_arch, self.space.min_resolution)]
