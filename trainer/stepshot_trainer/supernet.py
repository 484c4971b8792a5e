"""The one-shot super-net (spec §1.1, §3.1) and the machinery it shares with the grouped one.

Layout: ``stem``, ``stages[s][g]`` (group g of stage s: a ModuleList of its max-depth
blocks) and ``heads[g]`` (one FC per last-stage group). The one-shot super-net is
the one-group case: every stage has one group whose cap is the stage's max width.

Decisions (spec §3.1, §7):
- first-k slicing of every conv, BN and FC weight; the first d blocks of a stage;
- the input is resized inside the model (bicubic, align_corners=True);
- BN trains on batch statistics and never updates running stats (momentum 0);
- bn2 gamma of every block zero-initialised (configurable); other layers keep
  PyTorch's default init;
- dropout before the FC only on the max net (or when `set_active(dropout=True)`);
- a block has a 1x1 conv shortcut iff the spec's rule holds on the *max* widths
  (`SearchSpace.has_projection`): stride 2 or max-in != max-out. Since all blocks of
  a stage share the out width and S1's equals the stem's, this is exactly where a
  subnet has stride 2 or in != out, and the static subnet uses the same rule.
"""
from __future__ import annotations

from typing import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from stepshot.space import CODES, Arch, SearchSpace, for_block, route_caps
from stepshot_trainer.layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, copy_prefix, decays
from stepshot_trainer.static import StaticResNet, resize

WidthCaps = tuple[tuple[int, ...], ...]  # per stage: ascending group caps (stage-out widths)


class DynamicStem(nn.Module):
    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        width = space.stem_widths()[-1]
        self.conv = DynamicConv2d(space.in_channels, width, space.stem_kernel, space.stem_stride)
        self.bn = DynamicBatchNorm2d(width)
        self.maxpool = space.stem_maxpool

    def forward(self, x: Tensor, width: int) -> Tensor:  # type: ignore[override]
        x = F.relu(self.bn(self.conv(x, width)))
        return F.max_pool2d(x, 3, 2, 1) if self.maxpool else x


class DynamicBlock(nn.Module):
    def __init__(self, cin: int, mid: int, out: int, stride: int, projection: bool) -> None:
        super().__init__()
        self.conv1 = DynamicConv2d(cin, mid, 3, stride)
        self.bn1 = DynamicBatchNorm2d(mid)
        self.conv2 = DynamicConv2d(mid, out, 3)
        self.bn2 = DynamicBatchNorm2d(out)
        self.sc_conv = DynamicConv2d(cin, out, 1, stride) if projection else None
        self.sc_bn = DynamicBatchNorm2d(out) if projection else None

    def forward(self, x: Tensor, mid: int, out: int) -> Tensor:  # type: ignore[override]
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x, mid))), out))
        shortcut = self.sc_bn(self.sc_conv(x, out)) if self.sc_conv is not None else x
        return F.relu(y + shortcut)


DYNAMIC_BLOCKS = {"basic": DynamicBlock}   # per block kind of a space (stepshot.space.BLOCK_KINDS)


def make_stage(space: SearchSpace, stage: int, cap: int) -> nn.ModuleList:
    """Max-depth blocks of one stage (group) whose out width is at most `cap`."""
    block = for_block(DYNAMIC_BLOCKS, space, "stepshot_trainer.supernet")
    mid = max(space.mid_width(stage, c) for c in CODES)
    blocks = []
    for b in range(space.max_depths[stage]):
        cin = space.max_in(stage) if b == 0 else cap
        stride = space.strides[stage] if b == 0 else 1
        blocks.append(block(cin, mid, cap, stride, space.has_projection(stage, b)))
    return nn.ModuleList(blocks)


class DynamicResNet(nn.Module):
    """Weight-sharing ResNet with per-stage groups; subclasses choose the caps."""

    def __init__(self, space: SearchSpace, caps: WidthCaps, *, dropout: float = 0.0,
                 zero_init_last_bn: bool = True) -> None:
        super().__init__()
        self.space = space
        self.caps = caps
        self.dropout = dropout
        self.stem = DynamicStem(self.space)
        self.stages = nn.ModuleList(
            nn.ModuleList(make_stage(self.space, s, cap) for cap in stage_caps) for s, stage_caps in enumerate(caps))
        # One classifier head per group of the last stage (a head is sampled exactly with it).
        self.heads = nn.ModuleList(DynamicLinear(cap, self.space.num_classes) for cap in caps[self.space.last_stage])
        if zero_init_last_bn:
            for block in self.modules():
                if isinstance(block, DynamicBlock):
                    nn.init.zeros_(block.bn2.weight)
        self.set_active(self.space.max_arch)

    def set_active(self, arch: Arch, resolution: int | None = None, *, dropout: bool | None = None) -> None:
        """Select the subnet (and resolution; None = the space's). `dropout` None: only the max net."""
        if arch.space != self.space:
            raise ValueError(f"arch of space {arch.space.name!r} on a {self.space.name!r} super-net")
        self.arch = arch
        self.resolution = resolution or self.space.resolution
        self.groups_active = route_caps(self.caps, arch)
        self.dropout_active = arch == self.space.max_arch if dropout is None else dropout

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(resize(x, self.resolution), self.arch.stem)
        for s, g in enumerate(self.groups_active):
            for block, (mid, out) in zip(self.stages[s][g], self.arch.blocks[s]):
                x = block(x, mid, out)
        x = x.mean((2, 3))
        if self.dropout_active and self.dropout > 0:
            x = F.dropout(x, self.dropout, self.training)
        return self.heads[self.groups_active[self.space.last_stage]](x)

    def extract(self, arch: Arch, resolution: int | None = None) -> StaticResNet:
        """Static subnet with copied (sliced) weights and BN buffers; no dropout.
        Its outputs equal this net's for `arch` at `resolution` (None = the space's)."""
        net = StaticResNet(self.space, arch, resolution=resolution).to(self.stem.conv.weight)
        groups = route_caps(self.caps, arch)
        copy_prefix(net.stem, self.stem)
        for s, g in enumerate(groups):
            for static_block, block in zip(net.stages[s], self.stages[s][g]):
                copy_prefix(static_block, block)
        copy_prefix(net.head, self.heads[groups[self.space.last_stage]])
        return net.train(self.training)

    def lr_factors(self) -> tuple[tuple[float, ...], ...]:
        """Learning-rate factor per stage and group (1 unless a subclass scales)."""
        return tuple((1.0,) * len(stage_caps) for stage_caps in self.caps)

    def _scaled_modules(self, lr_scaling: bool) -> Iterator[tuple[nn.Module, float]]:
        factors = self.lr_factors() if lr_scaling else tuple((1.0,) * len(c) for c in self.caps)
        yield self.stem, 1.0
        for s, groups in enumerate(self.stages):
            for g, blocks in enumerate(groups):
                yield blocks, factors[s][g]
        for g, head in enumerate(self.heads):  # a head is sampled exactly with its last-stage group
            yield head, factors[self.space.last_stage][g]

    def param_groups(self, base_lr: float, weight_decay: float, *, lr_scaling: bool = True) -> list[dict]:
        """Optimizer groups: lr = base_lr * lr_scale; weight decay on conv/FC weights only.

        Each dict carries "lr_scale" so a scheduler sets ``lr = lr_t * lr_scale``.
        """
        buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for module, factor in self._scaled_modules(lr_scaling):
            for p in module.parameters():
                buckets.setdefault((factor, decays(p)), []).append(p)
        return [{"params": ps, "lr": base_lr * f, "lr_scale": f, "weight_decay": weight_decay if decay else 0.0}
                for (f, decay), ps in buckets.items()]


class SuperNet(DynamicResNet):
    """The one-shot super-net: one group per stage, capped at the stage's max width."""

    def __init__(self, space: SearchSpace, *, dropout: float = 0.0, zero_init_last_bn: bool = True) -> None:
        caps = tuple((space.stage_widths(s)[-1],) for s in range(space.num_stages))
        super().__init__(space, caps, dropout=dropout, zero_init_last_bn=zero_init_last_bn)
