"""Rank architectures with inherited weights (spec §3.5, pitfall 8).

Per architecture: route to its leaf super-net (a partition's stage; a grouped net
routes stages to groups itself), extract the static subnet, reset BN statistics
to a cumulative average (momentum=None), forward a fixed set of calibration
batches in train mode, fold BN into the convolutions (the statistics are fixed now),
then measure top-1 on a fixed subset in eval mode. The calibration and eval batches
are the same for every architecture, so the ranking sees no data noise; they stream
to the device one batch at a time (data.FixedBatches keeps them decoded on the host
when they fit), so the work per subnet is forward passes.
"""
from __future__ import annotations

import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from stepshot.partition import Partition, route
from stepshot.space import Arch, SearchSpace, get_space, parse_arch
from stepshot.workdir import Layout
from stepshot_trainer import checkpoint
from stepshot_trainer.split import build_model
from stepshot_trainer.static import fold_batchnorm
from stepshot_trainer.supernet import DynamicResNet

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]   # re-iterable: one pass per architecture


def load_stage_model(workdir: Path, stage: str, space: SearchSpace | str, *, dropout: float = 0.0,
                     device: str | torch.device = "cpu") -> tuple[DynamicResNet, dict]:
    """The super-net of a stage's snapshot (SuperNet or GroupedSuperNet(G) per its manifest)."""
    state, manifest = checkpoint.load_snapshot(Layout(Path(workdir)).snapshot(stage), device)
    model = build_model(space, manifest.get("groups"), dropout=dropout)
    model.load_state_dict(state)
    return model.to(device), manifest


def recalibrate_bn(net: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Reset BN running stats and re-estimate them as a cumulative average over `batches`."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for x in batches:
            net(x)
    net.eval()


@torch.inference_mode()
def top1(net: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy in percent."""
    net.eval()
    correct = total = 0
    for x, y in batches:
        correct += (net(x).argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / max(total, 1)


def arch_accuracy(model: DynamicResNet, arch: Arch, calibration: Iterable[torch.Tensor], evalset: Batches) -> float:
    net = model.extract(arch)
    recalibrate_bn(net, calibration)
    return top1(fold_batchnorm(net), evalset)


class Router:
    """Maps an arch to the super-net that serves it: the leaf partition containing it."""

    def __init__(self, models: Mapping[str, DynamicResNet], partitions: Mapping[str, Partition] | None = None):
        self.models = dict(models)
        self.partitions = {name: partitions[name] for name in self.models} if partitions else {}
        self._stage_of = {p.id: name for name, p in self.partitions.items()}
        if len(self.models) > 1 and len(self._stage_of) != len(self.models):
            raise ValueError(f"stages {sorted(self.models)} are not distinct partitions; cannot route")

    def stage_for(self, arch: Arch) -> str:
        if len(self.models) == 1:
            return next(iter(self.models))
        return self._stage_of[route(arch, list(self.partitions.values())).id]


@dataclass(frozen=True)
class Evaluator:
    """What evaluating needs besides the architectures: the routed super-nets and the fixed batches."""
    router: Router
    calibration: Iterable[torch.Tensor]
    evalset: Batches


def _log_progress(done: int, total: int, start: float) -> None:
    rate = done / (time.perf_counter() - start)
    print(f"evaluated {done}/{total} subnets ({rate:.2f}/s)", file=sys.stderr, flush=True)


def _timing(out: dict, start: float, processes: int = 1) -> dict:
    seconds = time.perf_counter() - start
    return {"subnets": len(out), "seconds": round(seconds, 3), "processes": processes,
            "subnets_per_second": round(len(out) / seconds, 3) if seconds > 0 else None}


def predict(router: Router, archs: Mapping[str, str], space: SearchSpace | str,
            calibration: Iterable[torch.Tensor], evalset: Batches, *, log: bool = False) -> tuple[dict, dict]:
    """(predictions in challenge format with `acc` in percent and `stage`, timing stats)."""
    sp = get_space(space)
    parsed = {name: parse_arch(code, sp) for name, code in archs.items()}
    start = time.perf_counter()
    out = {}
    for i, (name, arch) in enumerate(parsed.items(), 1):
        stage = router.stage_for(arch)
        acc = arch_accuracy(router.models[stage], arch, calibration, evalset)
        out[name] = {"arch": arch.encode(), "acc": round(acc, 4), "stage": stage}
        if log and (i % 25 == 0 or i == len(parsed)):
            _log_progress(i, len(parsed), start)
    return out, _timing(out, start)


# One evaluator per worker process, built once by the pool's initializer.
_worker: Evaluator | None = None


def _start_worker(build: Callable[..., Evaluator], args: tuple, threads: int) -> None:
    global _worker
    torch.set_num_threads(threads)
    _worker = build(*args)


def _predict_part(archs: dict[str, str], space: str) -> dict:
    assert _worker is not None, "worker not started"
    return predict(_worker.router, archs, space, _worker.calibration, _worker.evalset)[0]


def predict_in_processes(build: Callable[..., Evaluator], args: tuple, archs: Mapping[str, str], space: str,
                         processes: int, threads: int, *, log: bool = False) -> tuple[dict, dict]:
    """predict() with the architectures split over `processes` processes of `threads` threads.

    Each process rebuilds the evaluator with `build(*args)` (a module-level function: the
    processes are spawned, nothing is inherited) and takes small parts in turn, so a slow
    architecture does not leave the others idle. Every architecture is evaluated exactly as
    in one process, so at equal threads the predictions are the same numbers."""
    names = list(archs)
    size = max(1, math.ceil(len(names) / (4 * processes)))
    parts = [{n: archs[n] for n in names[i:i + size]} for i in range(0, len(names), size)]
    start, done = time.perf_counter(), {}
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(build, args, threads)) as pool:
        for future in as_completed([pool.submit(_predict_part, part, space) for part in parts]):
            done.update(future.result())
            if log:
                _log_progress(len(done), len(names), start)
    out = {name: done[name] for name in names}   # the caller's order, whichever part finished first
    return out, _timing(out, start, processes)
