"""Progress of a training stage while it runs: gauges every few seconds, a log line every minute.

An ImageNet epoch is hours, so per-epoch figures leave `kubectl logs` silent and the dashboard
flat for that long. Every step updates the step counter; every METRICS_SECONDS the rates (steps/s,
this pod's images/s, data-loader wait per step), the loss and the lr; every `log_seconds` the main
rank prints one line with progress, rate and ETA (`STEPSHOT_LOG_SECONDS`, default 60). The
epoch line stays. Windows are measured on an injectable monotonic clock, so tests drive them
without sleeping.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from stepshot_trainer.metrics import TrainerMetrics

LOG_SECONDS_ENV = "STEPSHOT_LOG_SECONDS"
DEFAULT_LOG_SECONDS = 60.0
METRICS_SECONDS = 10.0   # below the PodMonitor's 15 s scrape interval: every scrape sees fresh rates


def log_seconds_from_env() -> float:
    raw = os.environ.get(LOG_SECONDS_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_LOG_SECONDS
    except ValueError:
        value = DEFAULT_LOG_SECONDS
    return value if value > 0 else DEFAULT_LOG_SECONDS


@dataclass
class Window:
    """Steps and data-loader wait since `start` (clock seconds)."""
    start: float
    steps: int = 0
    wait: float = 0.0

    def add(self, wait: float) -> None:
        self.steps += 1
        self.wait += wait

    def steps_per_second(self, now: float) -> float:
        return self.steps / (now - self.start) if now > self.start else 0.0

    def wait_per_step(self) -> float:
        return self.wait / self.steps if self.steps else 0.0


def eta_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class StageProgress:
    """Reports one stage's steps. `batch_size` is per rank; `local_ranks`/`world_size` turn steps
    into this pod's images (the gauge, summed over pods by the dashboard) and all ranks' images
    (the log line)."""
    metrics: TrainerMetrics
    name: str
    planned_steps: int
    epochs: int
    batch_size: int
    local_ranks: int = 1
    world_size: int = 1
    log: bool = True                       # the main rank prints
    log_seconds: float = DEFAULT_LOG_SECONDS
    metrics_seconds: float = METRICS_SECONDS
    clock: Callable[[], float] = time.monotonic
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def __post_init__(self) -> None:
        self.metrics.set("stepshot_trainer_planned_steps", self.planned_steps)
        now = self.clock()
        self._metrics_window, self._log_window = Window(now), Window(now)

    def restart_windows(self) -> None:
        """A new epoch: the pause between epochs (checkpoint, selection) is no training rate."""
        now = self.clock()
        self._metrics_window, self._log_window = Window(now), Window(now)

    def step(self, step: int, epoch: int, losses: dict[str, float], lr: float, wait: float) -> None:
        self.metrics.set("stepshot_trainer_step", step)
        self.metrics.set("stepshot_trainer_last_step_timestamp_seconds", time.time())
        self._metrics_window.add(wait)
        self._log_window.add(wait)
        now = self.clock()
        if now - self._metrics_window.start >= self.metrics_seconds:
            self._publish(self._metrics_window, now, epoch, losses, lr)
            self._metrics_window = Window(now)
        if now - self._log_window.start >= self.log_seconds:
            if self.log:
                self._print(self._log_window, now, step, epoch, losses, lr)
            self._log_window = Window(now)

    def flush(self, epoch: int, losses: dict[str, float], lr: float) -> None:
        """Publish the steps since the last update (an epoch end)."""
        if self._metrics_window.steps:
            now = self.clock()
            self._publish(self._metrics_window, now, epoch, losses, lr)
            self._metrics_window = Window(now)

    def _publish(self, window: Window, now: float, epoch: int, losses: dict[str, float], lr: float) -> None:
        steps = window.steps_per_second(now)
        for name, value in (("epoch", epoch), ("learning_rate", lr), ("steps_per_second", steps),
                            ("images_per_second", steps * self.batch_size * self.local_ranks),
                            ("data_wait_seconds", window.wait_per_step())):
            self.metrics.set(f"stepshot_trainer_{name}", value)
        for member, value in losses.items():
            self.metrics.loss(member, value)

    def _print(self, window: Window, now: float, step: int, epoch: int, losses: dict[str, float],
               lr: float) -> None:
        steps = window.steps_per_second(now)
        images = steps * self.batch_size * self.world_size
        eta = eta_text((self.planned_steps - step) / steps) if steps > 0 else "?"
        loss_text = " ".join(f"{m}={v:.4f}" for m, v in losses.items())
        percent = 100.0 * step / self.planned_steps if self.planned_steps else 100.0
        print(f"[{self.name}] step {step}/{self.planned_steps} ({percent:.1f}%) epoch {epoch + 1}/{self.epochs} "
              f"lr {lr:.5g} loss {loss_text} {images:.1f} img/s data wait {1000 * window.wait_per_step():.1f} "
              f"ms/step ETA {eta}", file=self.out, flush=True)
