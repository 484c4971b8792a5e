"""Zero-cost proxies: scores of an architecture at initialisation, from one minibatch or none.

They are the free baselines a super-net has to beat (benchmarks/ranking_v3.py, the evaluation
Job's report). Definitions follow Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS"
(ICLR 2021) and Mellor et al., "Neural Architecture Search without Training" (ICML 2021):

  synflow    sum |theta * dR/dtheta| with every weight replaced by |theta|, BN in eval mode
             (identity statistics), an all-ones input, R = sum of the output (data-free)
  snip       sum |theta * dL/dtheta| over conv and linear weights, on the minibatch
  grad_norm  sum over conv and linear weights of ||dL/dW||
  naswot     log|det K| of the kernel of binary ReLU codes over the minibatch (Hamming agreement)
  jacob_cov  -sum(log(v + k) + 1/(v + k)) of the eigenvalues v of the correlation of input
             Jacobians across the minibatch (k = 1e-5): less correlated Jacobians score higher

Each net is the stand-alone static net of the architecture, freshly initialised from `seed`
(PyTorch's default init, as the super-net and the ground truth), so a score is a pure function
of (architecture, seed, minibatch).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepshot.predictors import PROXIES
from stepshot.space import Arch, SearchSpace
from stepshot_trainer.data import ImageSource, proxy_batch
from stepshot_trainer.static import build_static

BATCH_IMAGES = 128   # the minibatch every data-dependent proxy sees
_JACOB_K = 1e-5


def _weights(net: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def synflow(net: nn.Module, shape: tuple[int, ...]) -> float:
    """Data-free: in float64, so deep products of |theta| neither overflow nor underflow."""
    net = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad()
    net(torch.ones((1, *shape[1:]), dtype=torch.float64)).sum().backward()
    with torch.no_grad():
        return float(sum((p * p.grad).abs().sum() for p in _weights(net) if p.grad is not None))


def snip_and_grad_norm(net: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """One backward of the loss gives both: |theta * g| summed, and the per-layer gradient norms."""
    net = copy.deepcopy(net).train()
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    weights = [w for w in _weights(net) if w.grad is not None]
    with torch.no_grad():
        snip = float(sum((w * w.grad).abs().sum() for w in weights))
        grad_norm = float(sum(w.grad.norm() for w in weights))
    return snip, grad_norm


def naswot(net: nn.Module, x: Tensor) -> float:
    """K[i, j] = the number of ReLUs on which samples i and j agree (both on or both off)."""
    codes: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        codes.append((output.detach().flatten(1) > 0).double())

    net = copy.deepcopy(net).train()
    relus = _with_relu_modules(net)
    handles = [m.register_forward_hook(hook) for m in relus]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(kernel)[1])


def _with_relu_modules(net: nn.Module) -> list[nn.Module]:
    """The static net applies F.relu inside its blocks: expose them as hookable modules.

    Every BasicBlock/Stem output and each block's inner activation is a ReLU output; hooking
    the BN that precedes a ReLU and thresholding at 0 is the same code as hooking the ReLU."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    blocks = [m for m in net.modules() if type(m).__name__ in ("BasicBlock", "Stem")]
    inner = [getattr(b, "bn1") for b in blocks if hasattr(b, "bn1")]
    return (blocks + inner) if blocks else bns


def jacob_cov(net: nn.Module, x: Tensor) -> float:
    net = copy.deepcopy(net).train()
    x = x.clone().requires_grad_(True)
    net(x).sum().backward()
    jac = x.grad.flatten(1).double()
    corr = torch.corrcoef(jac)
    corr = torch.nan_to_num(corr, nan=0.0)
    v = torch.linalg.eigvalsh(corr)
    return float(-torch.sum(torch.log(v.clamp_min(0) + _JACOB_K) + 1.0 / (v.clamp_min(0) + _JACOB_K)))


def minibatch(source: ImageSource, seed: int) -> tuple[Tensor, Tensor]:
    """The proxies' fixed, labelled training minibatch (stepshot_trainer.data.proxy_batch)."""
    return next(iter(proxy_batch(source, BATCH_IMAGES, seed)))


def scores(space: SearchSpace, arch: Arch, x: Tensor, y: Tensor, seed: int) -> dict[str, float]:
    """Every proxy of `arch` at initialisation (seeded), on the minibatch (x, y)."""
    torch.manual_seed(seed)
    net = build_static(space, arch)
    snip, grad_norm = snip_and_grad_norm(net, x, y)
    out = {"synflow": synflow(net, tuple(x.shape)), "snip": snip, "grad_norm": grad_norm,
           "naswot": naswot(net, x), "jacob_cov": jacob_cov(net, x)}
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
