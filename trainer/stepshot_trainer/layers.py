"""Dynamic layers: a subnet uses the first-k channels of every weight (spec §3.1, §7.2).

Each layer subclasses its torch counterpart, so parameter names, shapes and init
match the static layers, and `copy_prefix` can move weights between the two by
slicing every tensor to the destination's shape. Slices are views (no per-step
weight copies), and an uncut weight is used as is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def decays(p: Tensor) -> bool:
    """Weight decay on conv and FC weights only, not on BN parameters or biases (spec §3.1)."""
    return p.ndim > 1


def prefix(t: Tensor, *sizes: int) -> Tensor:
    """The leading `sizes` slice of `t`; `t` itself when nothing is cut (no autograd slice op)."""
    if tuple(t.shape[: len(sizes)]) == sizes:
        return t
    return t[tuple(slice(0, n) for n in sizes)]


class DynamicConv2d(nn.Conv2d):
    """Conv without bias, 'same' padding; in-channels follow the input, out-channels are asked for."""

    def __init__(self, in_max: int, out_max: int, kernel: int, stride: int = 1) -> None:
        super().__init__(in_max, out_max, kernel, stride, padding=kernel // 2, bias=False)

    def forward(self, x: Tensor, out: int) -> Tensor:  # type: ignore[override]
        return F.conv2d(x, prefix(self.weight, out, x.shape[1]), None, self.stride, self.padding)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BN over the first C features.

    Training mode normalises with batch statistics and leaves the running buffers
    untouched: the spec's BN momentum 0, without the cost of a no-op update. Eval
    mode uses the (sliced) running buffers, which are only meaningful after a
    recalibration, normally done on the extracted static subnet.
    """

    def __init__(self, max_features: int) -> None:
        super().__init__(max_features, momentum=0.0)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        c = x.shape[1]
        weight, bias = prefix(self.weight, c), prefix(self.bias, c)
        if self.training:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        return F.batch_norm(x, prefix(self.running_mean, c), prefix(self.running_var, c),
                            weight, bias, False, 0.0, self.eps)


class DynamicLinear(nn.Linear):
    """Linear over the first in-features; all outputs (classes) are kept."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.linear(x, prefix(self.weight, self.out_features, x.shape[1]), self.bias)


@torch.no_grad()
def copy_prefix(dst: nn.Module, src: nn.Module) -> None:
    """Copy every parameter and buffer of `dst` from the leading slice of `src`'s.

    This one rule serves extraction (dynamic -> static) and function-preserving
    splits (group -> smaller group): first-k slicing everywhere (spec §7.2).
    """
    source = src.state_dict()
    for name, tensor in dst.state_dict().items():
        tensor.copy_(prefix(source[name], *tensor.shape))
