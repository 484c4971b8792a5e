"""Trainer Prometheus metrics, with exactly the names of docs/design.md.

Every stage pod (training, snapshot, evaluation) declares the metrics port and local rank 0 of
each pod serves it: node ranks come from the rendezvous, and a port no process listens on would
be a down target. A series appears once its process sets it, so an evaluation pod exports only
the evaluation figures and a training pod only the training ones.

Aggregation across the pods of a multi-node stage: every pod exports the throughput of ITS OWN
processes (`images_per_second`: its local ranks' images per second), and the dashboard sums
over pods. Progress figures (step, planned steps, epoch, lr) are the same on every pod and the
dashboard takes their max. Per-pod rates were chosen over "global rank 0 exports the all-ranks
rate" because the sum stays right whichever pod the rendezvous made rank 0 (that changes on a
group restart), a pod that stops being scraped shows as a drop instead of being hidden in a
product, and a slow pod (loader-bound node) is visible in its own series.

A short-lived pod (a snapshot, a small evaluation) may end between two scrapes, so its last
figures would never reach Prometheus: a process that has been scraped before waits at exit
until one scrape has seen its last update, at most STEPSHOT_METRICS_LINGER_SECONDS (default
20 s, above the PodMonitor's 15 s interval; set explicitly, it waits even when never scraped).
Nobody scraping (a local run without Prometheus) costs no wait.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

LABELS = ("stage", "partition")
_GAUGES = {
    "stepshot_trainer_step": "Optimizer steps done in this stage",
    "stepshot_trainer_planned_steps": "Optimizer steps this stage trains in all (epochs x batches per epoch)",
    "stepshot_trainer_last_step_timestamp_seconds": "When the last optimizer step finished (Unix time)",
    "stepshot_trainer_last_progress_timestamp_seconds":
        "When this pod last made progress: started, a step, a subnet evaluated, a snapshot chunk (Unix time)",
    "stepshot_trainer_epoch": "Current epoch of this stage",
    "stepshot_trainer_learning_rate": "Base learning rate of the last step",
    "stepshot_trainer_images_per_second": "Training images per second of this pod's processes over the last report window",
    "stepshot_trainer_steps_per_second": "Optimizer steps per second over the last report window",
    "stepshot_trainer_data_wait_seconds": "Mean time a step waited for its batch (data loader) over the last report window",
    "stepshot_trainer_selection_kendall_tau": "Kendall tau of the last checkpoint-selection round",
    "stepshot_trainer_evaluation_subnets": "Subnets this evaluation ranks in all",
    "stepshot_trainer_evaluation_subnets_done": "Subnets evaluated so far",
    "stepshot_trainer_snapshot_size_bytes": "Size of the snapshot being written",
    "stepshot_trainer_snapshot_written_bytes": "Bytes of the snapshot written so far",
}
LOSS = "stepshot_trainer_loss"
LINGER_ENV = "STEPSHOT_METRICS_LINGER_SECONDS"
DEFAULT_LINGER_SECONDS = 20.0
# Setting one of these is progress: it moves stepshot_trainer_last_progress_timestamp_seconds.
_PROGRESS = {"stepshot_trainer_step", "stepshot_trainer_evaluation_subnets_done",
             "stepshot_trainer_snapshot_written_bytes"}


def metric_names() -> list[str]:
    """Every trainer metric name (the dashboard uses only these)."""
    return sorted([*_GAUGES, LOSS])


class _Scrapes:
    """When this process's figures last reached a scraper.

    A scrape counts once its response was written to the socket (the WSGI server closes the
    body only after sending it), and it counts from the moment it started reading the gauges:
    an update made while a scrape was being collected, or a response cut off because the
    process exited, is not "seen".
    """

    def __init__(self) -> None:
        self.count, self.read_at = 0, 0.0
        self.seen = threading.Condition()

    def delivered(self, read_at: float) -> None:
        with self.seen:
            self.count += 1
            self.read_at = max(self.read_at, read_at)
            self.seen.notify_all()


class _Delivered:
    """A WSGI body that reports when the server has sent it (wsgiref calls close() after)."""

    def __init__(self, body, on_sent) -> None:
        self.body, self.on_sent = body, on_sent

    def __iter__(self):
        return iter(self.body)

    def close(self) -> None:
        self.on_sent()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # a scrape every few seconds is not a log line
        pass


def _serve(port: int, registry: CollectorRegistry, scrapes: _Scrapes) -> ThreadingWSGIServer:
    """prometheus_client's metrics app on its threading server, telling `scrapes` when a
    metrics response was delivered."""
    app = make_wsgi_app(registry)

    def watched(environ: dict, start_response):
        read_at, status = time.monotonic(), []

        def started(code: str, headers: list, *exc_info):
            status.append(code)
            return start_response(code, headers, *exc_info)

        body = app(environ, started)
        metrics = environ.get("PATH_INFO") != "/favicon.ico" and status[:1] and status[0].startswith("200")
        return _Delivered(body, lambda: scrapes.delivered(read_at)) if metrics else body

    server = make_server("0.0.0.0", port, watched, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def linger_seconds(scraped: bool) -> float:
    raw = os.environ.get(LINGER_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else (DEFAULT_LINGER_SECONDS if scraped else 0.0)
    except ValueError:
        return DEFAULT_LINGER_SECONDS if scraped else 0.0


class TrainerMetrics:
    """Gauges for one stage; `port` 0/None (or a non-zero local rank) records without serving."""

    def __init__(self, stage: str, partition: str, port: int | None = None, local_rank: int = 0):
        self.registry, self._scrapes = CollectorRegistry(), _Scrapes()
        self._updated_at = time.monotonic()
        self._gauges = {name: Gauge(name, doc, LABELS, registry=self.registry) for name, doc in _GAUGES.items()}
        self._loss = Gauge(LOSS, "Last step's loss per sandwich member", (*LABELS, "member"),
                           registry=self.registry)
        self._labels = {"stage": stage, "partition": partition}
        self.progressed()   # a pod that is still loading counts from its start (the stall alert)
        self.server = None
        if port and local_rank == 0:
            try:
                self.server = _serve(port, self.registry, self._scrapes)
            except OSError as exc:  # a busy port must not kill a training run
                print(f"metrics: cannot serve on port {port}: {exc}", file=sys.stderr)

    def set(self, name: str, value: float) -> None:
        self._gauges[name].labels(**self._labels).set(value)
        self._updated_at = time.monotonic()
        if name in _PROGRESS:
            self.progressed()

    def progressed(self) -> None:
        self.set("stepshot_trainer_last_progress_timestamp_seconds", time.time())

    def loss(self, member: str, value: float) -> None:
        self._loss.labels(member=member, **self._labels).set(value)
        self._updated_at = time.monotonic()

    def linger(self) -> bool:
        """Wait until a scrape saw the last update (see the module docstring); whether one did."""
        scrapes = self._scrapes
        with scrapes.seen:
            return scrapes.seen.wait_for(lambda: scrapes.read_at > self._updated_at,
                                         timeout=linger_seconds(scrapes.count > 0))

    def close(self) -> None:
        if self.server is not None:
            self.linger()
            self.server.shutdown()
            self.server.server_close()
            self.server = None
