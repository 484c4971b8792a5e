"""A plain ResNet for one architecture: what `extract` returns and what ground truth trains."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepshot.space import Arch, SearchSpace, for_block


def resize(x: Tensor, resolution: int) -> Tensor:
    """The model-side resolution change of the spec (§3.1): bicubic, align_corners=True.

    Every model input passes here, so it also forces standard strides: a 1-channel batch can
    carry channels-last strides while `is_contiguous()` is True, and that sends oneDNN (torch
    2.13 CPU) down a path that corrupts the heap in the conv backward.
    """
    x = x.contiguous(memory_format=torch.contiguous_format)
    if x.stride() != _standard_strides(x.shape):
        x = x.clone(memory_format=torch.contiguous_format)
    if x.shape[-2:] == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=True)


def _standard_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class Stem(nn.Module):
    def __init__(self, space: SearchSpace, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(space.in_channels, width, space.stem_kernel, space.stem_stride,
                              padding=space.stem_kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.MaxPool2d(3, 2, 1) if space.stem_maxpool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, mid: int, out: int, stride: int, projection: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        # same rule as the super-net (SearchSpace.has_projection), so extraction is exact
        self.sc_conv = nn.Conv2d(cin, out, 1, stride, bias=False) if projection else None
        self.sc_bn = nn.BatchNorm2d(out) if projection else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = self.sc_bn(self.sc_conv(x)) if self.sc_conv is not None else x
        return F.relu(y + shortcut)


STATIC_BLOCKS = {"basic": BasicBlock}   # per block kind of a space (stepshot.space.BLOCK_KINDS)


class StaticResNet(nn.Module):
    """ResNet of one `Arch`; resizes its input to `resolution` (default: the space's)."""

    def __init__(self, sp: SearchSpace, arch: Arch, *, resolution: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        self.resolution = resolution or sp.resolution
        self.stem = Stem(sp, arch.stem)
        block = for_block(STATIC_BLOCKS, sp, "stepshot_trainer.static")
        stages, cin = [], arch.stem
        for s, blocks in enumerate(arch.blocks):
            layers = []
            for b, (mid, out) in enumerate(blocks):
                stride = sp.strides[s] if b == 0 else 1
                layers.append(block(cin, mid, out, stride, sp.has_projection(s, b)))
                cin = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, sp.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(resize(x, self.resolution))
        for stage in self.stages:
            x = stage(x)
        return self.head(self.dropout(x.mean((2, 3))))


# (conv, bn) attribute pairs of the modules above; a missing pair (no projection) is skipped
_CONV_BN = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("sc_conv", "sc_bn"))


@torch.no_grad()
def fold_batchnorm(net: StaticResNet) -> StaticResNet:
    """Fold every eval-mode BN into the convolution before it, in place (inference only).

    After BN recalibration the statistics are fixed, so conv+BN is one affine conv: the
    test forward does one pass over each feature map instead of two (12-23% of its time on
    the CPU). The outputs agree with the unfolded net to float rounding."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net.eval()
    for module in net.modules():
        for conv_name, bn_name in _CONV_BN:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return net


def build_static(space: SearchSpace, arch: Arch, *, dropout: float = 0.0,
                 zero_init_last_bn: bool = False) -> StaticResNet:
    """A freshly initialised stand-alone net (PyTorch default init, as the super-net)."""
    net = StaticResNet(space, arch, dropout=dropout)
    if zero_init_last_bn:
        for stage in net.stages:
            for block in stage:
                nn.init.zeros_(block.bn2.weight)
    return net
