"""How often the trainer's steps meet convolution shapes they have not met before.

cuDNN builds an execution plan the first time it meets a convolution's shapes (and the
caching allocator grows), so a step whose sandwich brings new shapes costs more than one
that repeats known shapes. This counts, without running a kernel (the super-net runs on
the meta device), the distinct convolutions (input shape, weight shape, stride, padding)
the one-shot sandwich sampler's steps meet, step by step:

    python benchmarks/shapes.py --space resnet48 --batch-size 128 --steps 3000 --json

Grouped and partitioned stages slice the same widths from narrower caps, so their
convolutions have the same shapes; the one-shot count stands for all stages.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from stepshot.space import get_space
from stepshot_trainer.sampler import SandwichSampler
from stepshot_trainer.supernet import SuperNet


class ConvShapes(TorchFunctionMode):
    """Records every F.conv2d call's shapes; `new` counts first sightings since the last reset."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple] = set()
        self.new = 0
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            x, w = args[:2]
            stride = args[3] if len(args) > 3 else kwargs.get("stride", 1)
            padding = args[4] if len(args) > 4 else kwargs.get("padding", 0)
            key = (tuple(x.shape), tuple(w.shape), _pair(stride), _pair(padding))
            self.calls += 1
            if key not in self.seen:
                self.seen.add(key)
                self.new += 1
        return func(*args, **kwargs)


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def new_per_step(space: str, batch: int, steps: int, seed: int, random_subnets: int,
                 device: str = "meta") -> tuple[list[int], int]:
    """First-seen convolutions per step, and the convolutions one step runs (forward only)."""
    sp = get_space(space)
    with torch.device(device):
        model = SuperNet(sp)
        x = torch.zeros(batch, sp.in_channels, sp.resolution, sp.resolution)
    sampler = SandwichSampler(sp, random_subnets=random_subnets, seed=seed)
    counts, mode = [], ConvShapes()
    with torch.no_grad(), mode:
        for step in range(steps):
            mode.new = 0
            for _, arch, resolution in sampler.sample(step):
                model.set_active(arch, resolution)
                model(x)
            counts.append(mode.new)
    return counts, mode.calls // max(steps, 1)


def summary(counts: list[int], windows: list[int]) -> dict:
    """Cumulative distinct shapes at each window end, and new shapes per 100 steps just before it."""
    rows = []
    for end in windows:
        if end > len(counts):
            break
        recent = counts[max(0, end - 100):end]
        rows.append({"steps": end, "distinct_convolutions": sum(counts[:end]),
                     "new_per_100_steps_before": round(100 * sum(recent) / len(recent), 1),
                     "steps_with_new_shapes_before": sum(1 for c in recent if c)})
    return {"total_distinct": sum(counts), "by_step": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet48")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-subnets", type=int, default=2)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 24, 100, 300, 625, 1000, 2000, 3000])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts, calls = new_per_step(args.space, args.batch_size, args.steps, args.seed, args.random_subnets)
    result = {"space": args.space, "batch_size": args.batch_size, "random_subnets": args.random_subnets,
              "seed": args.seed, "convolutions_per_step_forward": calls, **summary(counts, args.windows)}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.space}, batch {args.batch_size}: {calls} forward convolutions per step, "
          f"{result['total_distinct']} distinct in {args.steps} steps")
    for row in result["by_step"]:
        print(f"  by step {row['steps']:>5}: {row['distinct_convolutions']:>5} distinct; "
              f"{row['new_per_100_steps_before']:>6} new per 100 steps before, "
              f"{row['steps_with_new_shapes_before']} of those steps met a new one")


if __name__ == "__main__":
    main()
