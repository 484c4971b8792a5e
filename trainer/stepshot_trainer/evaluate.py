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

import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from stepshot.partition import Partition, route
from stepshot.space import Arch, SearchSpace, parse_arch
from stepshot.workdir import Layout
from stepshot_trainer import checkpoint
from stepshot_trainer.grouped import build_model
from stepshot_trainer.static import fold_batchnorm
from stepshot_trainer.supernet import DynamicResNet

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]   # re-iterable: one pass per architecture
Save = Callable[[range, dict, float], None]   # (pool span, its predictions, seconds): one checkpoint


def load_stage_model(workdir: Path, stage: str, space: SearchSpace, *, dropout: float = 0.0,
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
    return _timing_of(len(out), start, processes)


def _timing_of(subnets: int, start: float, processes: int = 1) -> dict:
    seconds = time.perf_counter() - start
    return {"subnets": subnets, "seconds": round(seconds, 3), "processes": processes,
            "subnets_per_second": round(subnets / seconds, 3) if seconds > 0 else None}


Progress = Callable[[int, int], None]   # (subnets done, subnets in all), after every subnet


def predict(router: Router, archs: Mapping[str, str], space: SearchSpace,
            calibration: Iterable[torch.Tensor], evalset: Batches, *, log: bool = False,
            progress: Progress | None = None) -> tuple[dict, dict]:
    """(predictions in challenge format with `acc` in percent and `stage`, timing stats).

    Each code is parsed when its turn comes: no per-architecture objects for the whole set."""
    start = time.perf_counter()
    out = {}
    for i, (name, code) in enumerate(archs.items(), 1):
        arch = parse_arch(code, space)
        stage = router.stage_for(arch)
        acc = arch_accuracy(router.models[stage], arch, calibration, evalset)
        out[name] = {"arch": arch.encode(), "acc": round(acc, 4), "stage": stage}
        if log and (i % 25 == 0 or i == len(archs)):
            _log_progress(i, len(archs), start)
        if progress is not None:
            progress(i, len(archs))
    return out, _timing(out, start)


def _span(names: list[str], archs: Mapping[str, str], span: range) -> dict[str, str]:
    return {names[i]: archs[names[i]] for i in span}


def predict_spans(evaluator: Evaluator, archs: Mapping[str, str], spans: list[range], space: SearchSpace,
                  save: Save, *, log: bool = False, progress: Progress | None = None) -> dict:
    """Evaluate the pool's `spans` (index ranges into `archs`, in order) and `save` each when it
    is done: a kill loses at most the span in progress. Timing stats of this call."""
    names, start, done = list(archs), time.perf_counter(), 0
    total = sum(len(s) for s in spans)
    for span in spans:
        begun = time.perf_counter()
        preds, _ = predict(evaluator.router, _span(names, archs, span), space, evaluator.calibration, evaluator.evalset)
        save(span, preds, time.perf_counter() - begun)
        done += len(span)
        if log:
            _log_progress(done, total, start)
        if progress is not None:
            progress(done, total)
    return _timing_of(done, start)


# One evaluator per worker process, built once by the pool's initializer.
_worker: Evaluator | None = None


def _start_worker(build: Callable[..., Evaluator], args: tuple, threads: int) -> None:
    global _worker
    torch.set_num_threads(threads)
    _worker = build(*args)


def _predict_part(archs: dict[str, str], space: SearchSpace) -> tuple[dict, float]:
    assert _worker is not None, "worker not started"
    begun = time.perf_counter()
    preds = predict(_worker.router, archs, space, _worker.calibration, _worker.evalset)[0]
    return preds, time.perf_counter() - begun


def predict_spans_in_processes(build: Callable[..., Evaluator], args: tuple, archs: Mapping[str, str],
                               spans: list[range], space: SearchSpace, save: Save, processes: int, threads: int,
                               *, log: bool = False, progress: Progress | None = None) -> dict:
    """predict_spans() with the spans spread over `processes` processes of `threads` threads.

    Each process rebuilds the evaluator with `build(*args)` (a module-level function: the
    processes are spawned, nothing is inherited) and takes spans in turn, so a slow
    architecture does not leave the others idle; at most two spans per process are queued,
    so the parent holds a few spans, not the pool. Every architecture is evaluated exactly as
    in one process, so at equal threads the predictions are the same numbers."""
    names, start, done = list(archs), time.perf_counter(), 0
    total, queue = sum(len(s) for s in spans), iter(spans)
    pending: dict[Future, range] = {}

    def submit() -> None:
        span = next(queue, None)
        if span is not None:
            pending[pool.submit(_predict_part, _span(names, archs, span), space)] = span

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(build, args, threads)) as pool:
        for _ in range(2 * processes):
            submit()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                span = pending.pop(future)
                preds, seconds = future.result()
                save(span, preds, seconds)
                done += len(span)
                submit()
            if log:
                _log_progress(done, total, start)
            if progress is not None:
                progress(done, total)
    return _timing_of(done, start, processes)
