"""(params, MACs) of an architecture's static subnet, per block kind."""
from __future__ import annotations

from stepshot.space.codes import Arch
from stepshot.space.family import for_block


def complexity(arch: Arch, resolution: int | None = None) -> tuple[int, int]:
    """(params, MACs) of the static subnet at `resolution`: params include BN affine
    and FC bias; MACs count conv and FC multiply-accumulates."""
    sp = arch.space
    size = resolution or sp.resolution
    params = macs = 0

    def conv(cin: int, cout: int, k: int, stride: int, size_in: int) -> int:
        nonlocal params, macs
        size_out = (size_in + 2 * (k // 2) - k) // stride + 1
        params += cin * cout * k * k + 2 * cout  # conv weight + its BN's gamma and beta
        macs += cin * cout * k * k * size_out * size_out
        return size_out

    block = for_block(_BLOCK_CONVS, sp, "stepshot.space.complexity")
    size = conv(sp.in_channels, arch.stem, sp.stem_kernel, sp.stem_stride, size)
    if sp.stem_maxpool:
        size = (size + 2 - 3) // 2 + 1
    cin = arch.stem
    for s, blocks in enumerate(arch.blocks):
        for b, (mid, out) in enumerate(blocks):
            stride = sp.strides[s] if b == 0 else 1
            size_out = block(conv, cin, mid, out, stride, size)
            if sp.has_projection(s, b):
                conv(cin, out, 1, stride, size)
            size, cin = size_out, out
    params += cin * sp.num_classes + sp.num_classes
    macs += cin * sp.num_classes
    return params, macs


def _basic_convs(conv, cin: int, mid: int, out: int, stride: int, size: int) -> int:
    """A basic block's convolutions (3x3 at `stride`, then 3x3); the output size."""
    size_out = conv(cin, mid, 3, stride, size)
    conv(mid, out, 3, 1, size_out)
    return size_out


_BLOCK_CONVS = {"basic": _basic_convs}   # per block kind (BLOCK_KINDS): its main path's convolutions
