"""Grouped few-shot super-nets (spec §3.2-3.4): one private stage copy per out-width group.

At G groups a stage's caps are its G largest distinct widths (the G-1 largest are
singleton groups, the G-th largest caps the catch-all of all smaller widths);
stages with fewer widths saturate. A subnet routes per stage to the first cap >=
its stage-out width. The stem is shared; there is one FC head per S4 group.

Splits are function-preserving: every new group copies, sliced to its cap, the
old group its cap routes to (§3.3). For G -> G+1 that is exactly the paper's rule
(singletons 1:1, the old catch-all into both the new singleton and the new
catch-all); from the one-shot net every group slices the single stage copy.

Per-group learning rates (§3.4, `lr_factors`), as `build_optimizer_difflr` does:
- G = 2: the singleton max group is *multiplied* by the number of distinct widths
  in the catch-all group (S1 x2, S2 x5, S3 x6, S4 x6 for resnet48);
- G >= 3: the catch-all group is *divided* by its number of distinct widths
  (G=3: S2 /4, S3 /5, S4 /5; ...; G=7: none), i.e. the code's values, not the
  poster's G=5/G=6 rows.
Quirks not reproduced: the code scales only blocks 1-4 of 5-block stages
(`range(4)`) and leaves the FC heads at base lr; here a factor applies to the whole
group and to its head, as they are sampled exactly as often. Weight decay stays on
conv/FC weights only (the code decays BN and bias too in the diff-lr stages).
"""
from __future__ import annotations

from stepshot.space import SearchSpace, group_caps
from stepshot_trainer.layers import copy_prefix
from stepshot_trainer.supernet import DynamicResNet, SuperNet


def lr_factors(sp: SearchSpace, groups: int) -> tuple[tuple[float, ...], ...]:
    """Learning-rate factor per stage and group (ascending caps) at G = `groups`."""
    out = []
    for s in range(sp.num_stages):
        caps = group_caps(sp, s, groups)
        merged = sum(w <= caps[0] for w in sp.stage_widths(s))  # distinct widths in the catch-all
        factors = [1.0] * len(caps)
        if groups == 2 and len(caps) == 2:
            factors[-1] = float(merged)
        elif groups > 2:
            factors[0] = 1.0 / merged
        out.append(tuple(factors))
    return tuple(out)


class GroupedSuperNet(DynamicResNet):
    def __init__(self, space: SearchSpace, groups: int, *, dropout: float = 0.0,
                 zero_init_last_bn: bool = True) -> None:
        if groups < 2:
            raise ValueError(f"a grouped super-net needs groups >= 2, got {groups}")
        self.groups = groups
        caps = tuple(group_caps(space, s, groups) for s in range(space.num_stages))
        super().__init__(space, caps, dropout=dropout, zero_init_last_bn=zero_init_last_bn)

    @classmethod
    def from_supernet(cls, net: SuperNet, groups: int = 2) -> "GroupedSuperNet":
        """One-shot -> G (normally 2), function-preserving (§3.3 `init_weights_from_one`)."""
        return cls._inherit(net, groups)

    @classmethod
    def from_grouped(cls, net: "GroupedSuperNet", groups: int) -> "GroupedSuperNet":
        """G -> G' > G (normally G+1), function-preserving (§3.3 `init_weights`)."""
        if groups <= net.groups:
            raise ValueError(f"cannot split a G={net.groups} super-net into {groups} groups")
        return cls._inherit(net, groups)

    @classmethod
    def _inherit(cls, src: DynamicResNet, groups: int) -> "GroupedSuperNet":
        new = cls(src.space, groups, dropout=src.dropout).to(src.stem.conv.weight)
        copy_prefix(new.stem, src.stem)
        for s, caps in enumerate(new.caps):
            for g, cap in enumerate(caps):
                # the old group a width of `cap` routes to; it holds every width this group serves
                old = next(j for j, c in enumerate(src.caps[s]) if c >= cap)
                copy_prefix(new.stages[s][g], src.stages[s][old])
                if s == new.space.last_stage:   # the heads follow the last stage's groups
                    copy_prefix(new.heads[g], src.heads[old])
        new.set_active(src.arch, src.resolution)
        return new.train(src.training)

    def lr_factors(self) -> tuple[tuple[float, ...], ...]:
        return lr_factors(self.space, self.groups)


def build_model(space: SearchSpace, groups: int | None, *, dropout: float = 0.0,
                zero_init_last_bn: bool = True) -> DynamicResNet:
    """SuperNet for None/1 groups, else GroupedSuperNet(G)."""
    if groups is None or groups == 1:
        return SuperNet(space, dropout=dropout, zero_init_last_bn=zero_init_last_bn)
    return GroupedSuperNet(space, groups, dropout=dropout, zero_init_last_bn=zero_init_last_bn)
