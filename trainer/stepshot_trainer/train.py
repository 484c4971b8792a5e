"""One training stage of the plan: the sandwich rule with in-place distillation (spec §3.1, §3.4).

Determinism and resume: the data order is a function of (seed, stage, epoch), the
augmentation of (seed, stage, epoch, step, rank), the sandwich of (seed, stage,
step) and the dropout RNG is reseeded from (seed, stage, step, rank) before every
step. A checkpoint (written at epoch ends) therefore holds everything a resumed run
needs to continue bit-identically: weights, optimizer, step counter.

Preemption: SIGTERM (a node drain, a higher-priority pod, Kueue evicting the workload) sets
a flag; after the step in flight every rank agrees to stop (one tiny all_reduce per step),
rank 0 writes `preempted.pt` with the step inside the epoch, and the process exits 143. The
replacement pod resumes from it, skipping the epoch's finished batches, to the same weights
an uninterrupted run reaches. The kubelet's grace period must cover one step plus the save.

Distributed: every rank samples the same subnets (the sampler is a pure function
of the step), accumulates the sandwich's gradients locally, then the gradients are
averaged with one flat all_reduce before clipping and the optimizer step. This is
exactly what DDP computes, without DDP's unused-parameter bookkeeping across four
forward passes per step. BN uses per-rank batch statistics, as the paper (§7.11).
"""
from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from stepshot import sizing
from stepshot.correlate import correlate, load_accuracies
from stepshot.errors import Preempted, StepshotError
from stepshot.partition import Partition
from stepshot.plan import Plan, Stage
from stepshot.space import parse_arch
from stepshot.spec import Spec
from stepshot.archsets import load_codes
from stepshot.workdir import Layout
from stepshot_trainer import checkpoint, data
from stepshot_trainer.evaluate import arch_accuracy, load_stage_model
from stepshot_trainer.grouped import GroupedSuperNet
from stepshot_trainer.metrics import TrainerMetrics
from stepshot_trainer.progress import StageProgress, log_seconds_from_env
from stepshot_trainer.sampler import SandwichSampler
from stepshot_trainer.supernet import DynamicResNet, SuperNet

WARMUP_START = 0.001  # warmup starts at 0.001 x lr (spec §3.1)
PREEMPT_GRACE_SECONDS = 20.0  # after SIGTERM: finish the step and save, or exit anyway


# --------------------------------------------------------------------------- distributed

@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """torchrun env (RANK/WORLD_SIZE/LOCAL_RANK) -> process group: nccl on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        # Sandwich steps keep meeting new convolution shapes for their first ~700 steps (resnet48:
        # 1,456 distinct, benchmarks/shapes.py); benchmark mode would time every algorithm for each.
        torch.backends.cudnn.benchmark = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if rank == 0:
        backend = dist.get_backend() if dist.is_initialized() else "none (one process)"
        print(f"[stepshot] {world} process(es), rank 0 on {device}, backend {backend}", flush=True)
    return Dist(rank, world, local, device)


def average_gradients(params: list[nn.Parameter], world_size: int) -> None:
    """All-reduce (mean) of every existing gradient through one flat buffer."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_model(model: nn.Module) -> None:
    for t in model.state_dict().values():
        dist.broadcast(t, 0)


# --------------------------------------------------------------------------- schedule & RNG

def lr_factor(step: int, total: int, warmup: int) -> float:
    """Per-iteration linear warmup from WARMUP_START, then cosine to 0 at `total`."""
    if step < warmup:
        return WARMUP_START + (1 - WARMUP_START) * step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- model per stage

def _split_into_groups(parent: DynamicResNet, stage: Stage) -> DynamicResNet:
    """grouped: the parent's weights split into G groups per network stage (a grouped parent re-split)."""
    if isinstance(parent, GroupedSuperNet):
        return GroupedSuperNet.from_grouped(parent, stage.split.groups)
    return GroupedSuperNet.from_supernet(parent, stage.split.groups)


def _parent_as_is(parent: DynamicResNet, stage: Stage) -> DynamicResNet:
    """partitioned (its sampler keeps to its partition) and continued: the parent's weights as they are."""
    return parent


# The starting model of a stage with a parent, per split mode (stepshot.split_modes.MODES).
# "none" has no rule: its only training stage is the one-shot super-net, which has no parent.
MODEL_RULES: dict[str, Callable[[DynamicResNet, Stage], DynamicResNet]] = {
    "grouped": _split_into_groups, "partitioned": _parent_as_is, "continued": _parent_as_is}


def build_stage_model(spec: Spec, stage: Stage, workdir: Path) -> DynamicResNet:
    """oneshot: a fresh SuperNet; every other stage: its split mode's rule applied to the parent snapshot."""
    tr = spec.training
    if stage.parent is None:
        torch.manual_seed(data.derive_seed("init", tr.seed))
        return SuperNet(spec.search_space, dropout=tr.dropout, zero_init_last_bn=tr.zero_init_last_bn)
    rule = MODEL_RULES.get(stage.split.mode)
    if rule is None:   # before loading the parent: a mode nobody wired here must not train the parent on
        raise StepshotError(f"stage {stage.name}: split mode {stage.split.mode!r} has no model rule in the "
                            f"trainer (stepshot_trainer.train.MODEL_RULES: {sorted(MODEL_RULES)})")
    parent, _ = load_stage_model(workdir, stage.parent, spec.search_space, dropout=tr.dropout)
    return rule(parent, stage)


def stream_key(spec: Spec, stage: Stage) -> str:
    """What a stage's data order, subnet draws and dropout derive from besides the seed: its name,
    or (training.seedScope: step) its step, shared by the branches of a paired comparison."""
    return f"step{stage.step}" if spec.training.seed_scope == "step" else stage.name


# --------------------------------------------------------------------------- checkpoint selection

class Selection:
    """Kendall tau of BN-recalibrated accuracies of reference archs vs their ground truth (spec §3.1)."""

    def __init__(self, spec: Spec, device: torch.device):
        sel = spec.selection
        self.truth = load_accuracies(spec.resolve(sel.ground_truth))
        codes = load_codes(spec.resolve(sel.archs)).values()
        self.archs = [parse_arch(code, spec.search_space) for code in codes]
        bs = spec.training.batch_size
        budget = sizing.selection_cache_bytes(spec)
        stream = {"device": device, "workers": sizing.training_workers(spec)}
        self.calibration = data.calibration_batches(data.open_source(spec, "train"), sel.calibration_batches, bs,
                                                    seed=0, cache_bytes=budget, **stream)
        self.evalset = data.eval_subset(data.open_source(spec, "eval"), sel.eval_images, bs, seed=0,
                                        cache_bytes=budget - self.calibration.cached_bytes, **stream)

    @staticmethod
    def enabled(spec: Spec) -> bool:
        return bool(spec.selection.get("archs") and spec.selection.get("ground_truth"))

    def score(self, model: DynamicResNet) -> float | None:
        pred = {a.encode(): arch_accuracy(model, a, self.calibration, self.evalset) for a in self.archs}
        model.train()
        return correlate(pred, self.truth)["kendall_tau"]


def select_epoch(taus: dict[int, float | None], last: int) -> tuple[int, float | None]:
    """Best tau, ties -> the later epoch; the last epoch when nothing was scored."""
    scored = [(tau, epoch) for epoch, tau in taus.items() if tau is not None]
    if not scored:
        return last, taus.get(last)
    tau, epoch = max(scored)
    return epoch, tau


# --------------------------------------------------------------------------- the stage

def _progress_enabled(d: Dist) -> bool:
    return d.main and sys.stderr.isatty() and not os.environ.get("STEPSHOT_NO_PROGRESS")


class StageTrainer:
    def __init__(self, spec: Spec, stage: Stage, workdir: Path, partition: Partition | None = None, d: Dist | None = None):
        self.spec, self.stage, self.d = spec, stage, d or Dist()
        self.tr = spec.training
        self.layout = Layout(Path(workdir))
        self.ckpt_dir = self.layout.checkpoints(stage.name)
        seed = self.tr.seed
        self.stream = stream_key(spec, stage)
        self.model = build_stage_model(spec, stage, Path(workdir)).to(self.d.device).train()
        if self.d.world_size > 1:
            broadcast_model(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.loader = data.TrainLoader(data.open_source(spec, "train"), self.tr.batch_size,
                                       seed=data.derive_seed("data", seed, self.stream),
                                       rank=self.d.rank, world_size=self.d.world_size,
                                       workers=sizing.training_workers(spec), device=self.d.device)
        self.sampler = SandwichSampler(spec.search_space, partition=partition if stage.split.mode == "partitioned" else None,
                                       random_subnets=self.tr.random_subnets, ratio_codes=self.tr.ratio_codes,
                                       seed=data.derive_seed("sandwich", seed, self.stream))
        lr_scaling = bool(spec.few_shot.lr_scaling)
        self.optimizer = torch.optim.SGD(
            self.model.param_groups(stage.lr, self.tr.weight_decay, lr_scaling=lr_scaling),
            lr=stage.lr, momentum=self.tr.momentum, nesterov=self.tr.nesterov and self.tr.momentum > 0)
        self.total_steps = stage.epochs * len(self.loader)
        self.warmup_steps = round(stage.warmup_epochs * len(self.loader))
        self.step = self.epoch = 0
        self.stop_requested = False     # set by SIGTERM
        self._grace: threading.Timer | None = None   # forced exit if the stop never comes
        self.taus: dict[int, float | None] = {}
        self.selection = Selection(spec, self.d.device) if self.d.main and Selection.enabled(spec) else None
        self.metrics = TrainerMetrics(stage.name, stage.partition, spec.get("metrics_port"), self.d.local_rank)
        self.progress = StageProgress(self.metrics, stage.name, self.total_steps, stage.epochs, self.tr.batch_size,
                                      local_ranks=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                                      world_size=self.d.world_size,
                                      log=self.d.main and not _progress_enabled(self.d),  # a tty has the bar
                                      log_seconds=log_seconds_from_env())

    # ---- one optimizer step
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        torch.manual_seed(data.derive_seed("dropout", self.tr.seed, self.stream, self.step, self.d.rank))
        self.optimizer.zero_grad(set_to_none=True)
        losses: dict[str, list[float]] = {}
        teacher = None
        for member, arch, resolution in self.sampler.sample(self.step):
            self.model.set_active(arch, resolution, dropout=member == "max")
            logits = self.model(x)
            if teacher is None:  # the max net comes first: hard labels, then it teaches
                loss = F.cross_entropy(logits, y, label_smoothing=self.tr.label_smoothing)
                teacher = logits.detach().softmax(-1)
            else:  # in-place distillation, soft CE at T=1
                loss = -(teacher * F.log_softmax(logits, -1)).sum(-1).mean()
            loss.backward()
            losses.setdefault(member, []).append(loss.item())
        if self.d.world_size > 1:
            average_gradients(self.params, self.d.world_size)
        if self.tr.grad_clip > 0:
            nn.utils.clip_grad_value_(self.params, self.tr.grad_clip)
        factor = lr_factor(self.step, self.total_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = self.stage.lr * group.get("lr_scale", 1.0) * factor
        self.optimizer.step()
        self.step += 1
        return {m: sum(v) / len(v) for m, v in losses.items()}

    # ---- epochs
    def run_epoch(self) -> None:
        """The rest of the current epoch (all of it, unless resumed from a preemption)."""
        start, losses, lr = time.perf_counter(), {}, 0.0
        first = self.step - self.epoch * len(self.loader)
        bar = tqdm(total=len(self.loader), initial=first, leave=False, disable=not _progress_enabled(self.d),
                   desc=f"{self.stage.name} {self.epoch + 1}/{self.stage.epochs}")
        self.progress.restart_windows()
        waited = time.perf_counter()
        for x, y in self.loader.batches(self.epoch, start=first):
            wait = time.perf_counter() - waited   # the data loader's share of this step
            losses = self.train_step(x.to(self.d.device, non_blocking=True), y.to(self.d.device, non_blocking=True))
            lr = self.stage.lr * lr_factor(self.step - 1, self.total_steps, self.warmup_steps)
            self.progress.step(self.step, self.epoch, losses, lr, wait)
            bar.update()
            bar.set_postfix({m: f"{v:.3f}" for m, v in losses.items()})
            if self._stop_agreed():
                bar.close()
                self.save_preempted()
                raise Preempted(f"[{self.stage.name}] SIGTERM: checkpoint at step {self.step} written; "
                                f"a new run resumes from it")
            waited = time.perf_counter()
        bar.close()
        self.progress.flush(self.epoch, losses, lr)   # an epoch shorter than the window still reports
        self.epoch += 1
        rate = (len(self.loader) - first) * self.tr.batch_size * self.d.world_size / (time.perf_counter() - start)
        self._report(losses, rate, time.perf_counter() - start)

    def _stop_agreed(self) -> bool:
        """Whether any rank got SIGTERM: all ranks stop after the same step."""
        if self.d.world_size == 1:
            return self.stop_requested
        flag = torch.tensor([1.0 if self.stop_requested else 0.0], device=self.d.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _report(self, losses: dict[str, float], rate: float, seconds: float) -> None:
        lr = self.stage.lr * lr_factor(self.step - 1, self.total_steps, self.warmup_steps)
        # images/s stays the progress window's per-pod figure (the dashboard sums pods); this
        # epoch line reports all ranks' rate
        for name, value in (("step", self.step), ("epoch", self.epoch), ("learning_rate", lr)):
            self.metrics.set(f"stepshot_trainer_{name}", value)
        for member, value in losses.items():
            self.metrics.loss(member, value)
        if self.d.main:
            loss_text = " ".join(f"{m}={v:.4f}" for m, v in losses.items())
            print(f"[{self.stage.name}] epoch {self.epoch}/{self.stage.epochs} step {self.step} "
                  f"lr {lr:.5g} loss {loss_text} {rate:.0f} img/s {seconds:.1f}s", flush=True)

    # ---- checkpoints
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "step": self.step, "rng": rng_state(),
                "selection": dict(self.taus)}

    def _manifest(self) -> dict:
        return {"space": self.spec.space, "stage": self.stage.name, "partition": self.stage.partition,
                "step": self.step, "spec_hash": self.spec.spec_hash, "groups": self.stage.groups,
                "kendall_tau": self.taus.get(self.epoch)}

    def save(self) -> Path:
        pt = checkpoint.save(self.ckpt_dir, self.epoch, self.state(), self._manifest())
        checkpoint.discard_preempted(self.ckpt_dir)  # superseded by this epoch's checkpoint
        keep = {checkpoint.checkpoint_path(self.ckpt_dir, select_epoch(self.taus, self.epoch)[0])}
        checkpoint.prune(self.ckpt_dir, self.tr.keep_checkpoints, protect=keep)
        return pt

    def save_preempted(self) -> None:
        if self.d.main:
            checkpoint.save_to(checkpoint.preempted_path(self.ckpt_dir), self.epoch, self.state(), self._manifest())
        self.barrier()

    def _resume_point(self) -> Path | None:
        """The newest valid checkpoint: the preemption one when it is ahead of the last epoch's."""
        pt = checkpoint.latest_valid(self.ckpt_dir)
        preempted = checkpoint.preempted_path(self.ckpt_dir)
        if checkpoint.is_valid(preempted):
            step = checkpoint.read_manifest(preempted).get("step", -1)
            if pt is None or step > checkpoint.read_manifest(pt).get("step", -1):
                return preempted
        return pt

    def resume(self) -> bool:
        pt = self._resume_point()
        if pt is None:
            return False
        state, manifest = checkpoint.load(pt, self.d.device)
        if manifest.get("spec_hash") != self.spec.spec_hash and self.d.main:
            print(f"[{self.stage.name}] warning: {pt.name} was written by another spec "
                  f"({manifest.get('spec_hash')}); resuming anyway", file=sys.stderr)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.taus = dict(state["selection"])
        set_rng_state(state["rng"])
        if self.d.main:
            print(f"[{self.stage.name}] resumed from {pt.name} (epoch {self.epoch}, step {self.step})", flush=True)
        return True

    def _checkpoint_due(self) -> bool:
        return self.epoch % self.tr.checkpoint_every == 0 or self.epoch == self.stage.epochs

    def end_of_epoch(self) -> None:
        if not self._checkpoint_due():
            return
        if self.selection is not None:
            tau = self.selection.score(self.model)
            self.taus[self.epoch] = tau
            self.metrics.set("stepshot_trainer_selection_kendall_tau", float("nan") if tau is None else tau)
            print(f"[{self.stage.name}] selection: kendall tau {tau} at epoch {self.epoch}", flush=True)
        if self.d.main:
            self.save()
        self.barrier()

    def finish(self) -> dict:
        epoch, tau = select_epoch(self.taus, self.epoch)
        selected = {"epoch": epoch, "file": checkpoint.checkpoint_path(self.ckpt_dir, epoch).name, "kendall_tau": tau}
        if self.d.main:
            checkpoint.write_json(self.layout.selected(self.stage.name), selected)
            checkpoint.atomic_write(self.layout.done(self.stage.name), b"")
        self.barrier()
        return selected

    def barrier(self) -> None:
        if self.d.world_size > 1:
            dist.barrier()

    def run(self, stop_after: int | None = None) -> dict | None:
        """Train to the end (or until `stop_after` epochs are done: a simulated kill, returns None).
        SIGTERM raises Preempted after a mid-epoch checkpoint."""
        self.resume()
        previous = self._on_sigterm()
        try:
            while self.epoch < self.stage.epochs:
                self.run_epoch()
                self.end_of_epoch()
                if stop_after is not None and self.epoch >= stop_after:
                    return None
            return self.finish()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self._grace is not None:   # it stopped in time: no forced exit
                self._grace.cancel()
            self.metrics.close()

    def _on_sigterm(self):
        """Install the SIGTERM flag (main thread only); returns the handler it replaced.

        A process that cannot reach a step boundary (blocked in a collective whose peer died,
        as when torchrun's agent stops the survivors to restart the group) must still go: it
        exits PREEMPT_GRACE_SECONDS after the signal, before the agent's and the kubelet's 30 s."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def request_stop(signum, frame) -> None:
            if self._grace is None:
                self._grace = threading.Timer(PREEMPT_GRACE_SECONDS, os._exit, (143,))
                self._grace.daemon = True
                self._grace.start()
            self.stop_requested = True
        return signal.signal(signal.SIGTERM, request_stop)


def train_stage(spec: Spec, plan: Plan, stage: Stage, workdir: Path, d: Dist | None = None) -> dict:
    """Run one train stage (skipped when <workdir>/<stage>/DONE exists); returns selected.json."""
    layout = Layout(Path(workdir))
    if layout.done(stage.name).exists():
        return layout.read_selected(stage.name)
    partition = plan.partitions.get(stage.name) if plan is not None else None
    return StageTrainer(spec, stage, Path(workdir), partition, d or init_distributed()).run()
