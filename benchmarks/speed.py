"""Training-step speed of the super-net path vs the extracted static subnet.

For the max net (at the space's resolution) and the min net (at its min
resolution), time forward + backward + SGD step on the same batch, once through
the super-net (`set_active`) and once through `extract`'s static ResNet (steps
interleaved, so a shared machine's load hits both alike):

    python benchmarks/speed.py --space resnet48-fmnist --json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from stepshot.space import Arch, get_space
from stepshot_trainer.supernet import SuperNet


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)  # time the kernels, not their launch


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    _sync(x)
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    _sync(x)
    return time.perf_counter() - start


def compare(net: SuperNet, arch: Arch, resolution: int, x: torch.Tensor, y: torch.Tensor,
            steps: int, warmup: int) -> dict:
    """Median step time of both paths, steps interleaved so both see the same machine load."""
    net.set_active(arch, resolution)
    models = (net.train(), net.extract(arch, resolution).train())
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True) for m in models]
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(warmup + steps):
        for model, opt, spent in zip(models, opts, times):
            t = train_step(model, opt, x, y)
            if i >= warmup:
                spent.append(t)
    supernet_ips, static_ips = (x.shape[0] / statistics.median(t) for t in times)
    return {"supernet_images_per_s": round(supernet_ips, 1), "static_images_per_s": round(static_ips, 1),
            "ratio": round(supernet_ips / static_ips, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet48-fmnist")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = get_space(args.space)
    device = torch.device(args.device)
    net = SuperNet(space).to(device)
    x = torch.randn(args.batch, space.in_channels, space.resolution, space.resolution, device=device)
    y = torch.randint(0, space.num_classes, (args.batch,), device=device)
    result = {"space": space.name, "batch": args.batch, "threads": args.threads, "steps": args.steps,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    for member, arch, resolution in (("max", space.max_arch, space.resolution),
                                     ("min", space.min_arch, space.min_resolution)):
        result[member] = compare(net, arch, resolution, x, y, args.steps, args.warmup)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)  # a busy shared CPU skews absolute speeds
    if args.json:
        print(json.dumps(result))
    else:
        for member in ("max", "min"):
            r = result[member]
            print(f"{member}: super-net {r['supernet_images_per_s']} img/s, static {r['static_images_per_s']} img/s, "
                  f"ratio {r['ratio']}")


if __name__ == "__main__":
    main()
