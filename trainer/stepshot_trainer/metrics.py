"""Trainer Prometheus metrics (local rank 0 of every pod serves them), with exactly the names of
docs/design.md. Every trainer pod declares the metrics port, so every pod serves it: node ranks
come from the rendezvous, and a port no process listens on would be a down target."""
from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, Gauge, start_http_server

LABELS = ("stage", "partition")
_GAUGES = {
    "stepshot_trainer_step": "Optimizer steps done in this stage",
    "stepshot_trainer_last_step_timestamp_seconds": "When the last optimizer step finished (Unix time)",
    "stepshot_trainer_epoch": "Current epoch of this stage",
    "stepshot_trainer_learning_rate": "Base learning rate of the last step",
    "stepshot_trainer_images_per_second": "Training throughput of the last epoch (all ranks)",
    "stepshot_trainer_selection_kendall_tau": "Kendall tau of the last checkpoint-selection round",
}
LOSS = "stepshot_trainer_loss"


def metric_names() -> list[str]:
    """Every trainer metric name (the dashboard uses only these)."""
    return sorted([*_GAUGES, LOSS])


class TrainerMetrics:
    """Gauges for one stage; `port` 0/None (or a non-zero local rank) records without serving."""

    def __init__(self, stage: str, partition: str, port: int | None = None, local_rank: int = 0):
        self.registry = CollectorRegistry()
        labels = {"stage": stage, "partition": partition}
        self._gauges = {name: Gauge(name, doc, LABELS, registry=self.registry).labels(**labels)
                        for name, doc in _GAUGES.items()}
        self._loss = Gauge(LOSS, "Last step's loss per sandwich member", (*LABELS, "member"),
                           registry=self.registry)
        self._labels = labels
        self.server = None
        if port and local_rank == 0:
            try:
                self.server = start_http_server(port, registry=self.registry)
            except OSError as exc:  # a busy port must not kill a training run
                print(f"metrics: cannot serve on port {port}: {exc}", file=sys.stderr)

    def set(self, name: str, value: float) -> None:
        self._gauges[name].set(value)

    def loss(self, member: str, value: float) -> None:
        self._loss.labels(member=member, **self._labels).set(value)

    def close(self) -> None:
        if self.server is not None:
            server, _thread = self.server
            server.shutdown()
            server.server_close()
            self.server = None
