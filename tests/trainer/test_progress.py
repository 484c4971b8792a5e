"""Stage progress while it runs: the gauges, the periodic log line and their aggregation.

A fake monotonic clock drives the windows (no sleeping, no timed assertions). Equivalences:
the per-pod images/s summed over the pods of a stage is the all-ranks rate of the log line."""
from __future__ import annotations

import io
import re
import time

import pytest
import torch

from stepshot_trainer import checkpoint
from stepshot_trainer.metrics import TrainerMetrics, metric_names
from stepshot_trainer.progress import StageProgress, eta_text, log_seconds_from_env


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(m: TrainerMetrics, name: str, **labels) -> float | None:
    labels = {"stage": "oneshot", "partition": "root", **labels}
    for fam in m.registry.collect():
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def run_steps(p: StageProgress, clock: Clock, n: int, seconds: float, wait: float, first: int = 0) -> None:
    for i in range(first + 1, first + n + 1):
        clock.now += seconds
        p.step(i, 0, {"max": 2.0, "min": 2.5}, 0.1, wait)


def progress(clock, out=None, **kw) -> tuple[StageProgress, TrainerMetrics]:
    m = TrainerMetrics("oneshot", "root", port=None)
    args = dict(metrics=m, name="oneshot", planned_steps=1000, epochs=4, batch_size=32, clock=clock,
                out=out or io.StringIO(), log_seconds=60.0, metrics_seconds=10.0)
    return StageProgress(**{**args, **kw}), m


def test_gauges_follow_the_window_not_the_epoch():
    clock = Clock()
    p, m = progress(clock, local_ranks=2, world_size=2)
    assert value(m, "stepshot_trainer_planned_steps") == 1000
    run_steps(p, clock, 19, 0.5, 0.1)                  # 9.5 s: the step moves, the rates wait
    assert value(m, "stepshot_trainer_step") == 19
    assert value(m, "stepshot_trainer_images_per_second") is None
    run_steps(p, clock, 1, 0.5, 0.1, first=19)         # 10 s: 20 steps
    assert value(m, "stepshot_trainer_steps_per_second") == pytest.approx(2.0)
    assert value(m, "stepshot_trainer_images_per_second") == pytest.approx(2.0 * 32 * 2)
    assert value(m, "stepshot_trainer_data_wait_seconds") == pytest.approx(0.1)
    assert value(m, "stepshot_trainer_learning_rate") == pytest.approx(0.1)
    assert value(m, "stepshot_trainer_loss", member="min") == 2.5
    run_steps(p, clock, 40, 0.25, 0.0, first=20)       # faster: the next window says so
    assert value(m, "stepshot_trainer_steps_per_second") == pytest.approx(4.0)
    assert value(m, "stepshot_trainer_data_wait_seconds") == 0.0


def test_log_line_every_log_seconds_with_progress_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    p, _ = progress(clock, out, world_size=4)
    run_steps(p, clock, 119, 0.5, 0.02)
    assert out.getvalue() == ""
    run_steps(p, clock, 1, 0.5, 0.02, first=119)       # 60 s, 120 steps
    line = out.getvalue().strip()
    assert line.startswith("[oneshot] step 120/1000 (12.0%) epoch 1/4 lr 0.1 loss max=2.0000 min=2.5000")
    assert "256.0 img/s" in line                       # 2 steps/s x 32 x 4 ranks
    assert "data wait 20.0 ms/step" in line
    assert line.endswith(f"ETA {eta_text(880 / 2.0)}") and eta_text(440) == "0:07:20"
    run_steps(p, clock, 120, 0.5, 0.02, first=120)
    assert len(out.getvalue().splitlines()) == 2


def test_pods_rates_sum_to_the_logged_all_ranks_rate():
    """Two pods of a 2-node stage, 3 ranks each: the dashboard's sum over pods equals the rate
    the main rank logs (no pod counts the other's images)."""
    clock, out = Clock(), io.StringIO()
    pods = [progress(clock, out, local_ranks=3, world_size=6, log=i == 0, log_seconds=10.0) for i in range(2)]
    for i in range(1, 31):
        clock.now += 0.5
        for p, _ in pods:
            p.step(i, 0, {"max": 1.0}, 0.1, 0.0)
    summed = sum(value(m, "stepshot_trainer_images_per_second") for _, m in pods)
    logged = float(re.findall(r"([\d.]+) img/s", out.getvalue())[-1])
    assert summed == pytest.approx(logged) == pytest.approx(2.0 * 32 * 6)


def test_flush_publishes_an_epoch_shorter_than_the_window():
    clock = Clock()
    p, m = progress(clock)
    run_steps(p, clock, 4, 0.5, 0.0)
    assert value(m, "stepshot_trainer_images_per_second") is None
    p.flush(0, {"max": 1.0}, 0.1)
    assert value(m, "stepshot_trainer_images_per_second") == pytest.approx(2.0 * 32)
    p.flush(0, {"max": 1.0}, 0.1)                      # nothing new: the last figure stays
    assert value(m, "stepshot_trainer_images_per_second") == pytest.approx(2.0 * 32)


def test_progress_timestamp_moves_on_every_kind_of_progress(monkeypatch):
    import stepshot_trainer.metrics as metrics_mod

    now = [100.0]
    monkeypatch.setattr(metrics_mod.time, "time", lambda: now[0])
    m = TrainerMetrics("eval", "", port=None)
    assert value(m, "stepshot_trainer_last_progress_timestamp_seconds", stage="eval", partition="") == 100.0
    for name in ("stepshot_trainer_evaluation_subnets_done", "stepshot_trainer_snapshot_written_bytes",
                 "stepshot_trainer_step"):
        now[0] += 5
        m.set(name, 1)
        assert value(m, "stepshot_trainer_last_progress_timestamp_seconds", stage="eval", partition="") == now[0]
    now[0] += 5
    m.set("stepshot_trainer_evaluation_subnets", 64)   # a total is no progress
    assert value(m, "stepshot_trainer_last_progress_timestamp_seconds", stage="eval", partition="") == now[0] - 5


def test_a_pod_exports_only_what_its_role_sets():
    m = TrainerMetrics("eval", "", port=None)
    m.set("stepshot_trainer_evaluation_subnets", 64)
    names = {s.name for fam in m.registry.collect() for s in fam.samples}
    assert names == {"stepshot_trainer_evaluation_subnets", "stepshot_trainer_last_progress_timestamp_seconds"}
    assert set(names) <= set(metric_names())


def test_snapshot_reports_bytes_written_chunk_by_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "SNAPSHOT_CHUNK", 4096)
    state = {"model": {"w": torch.arange(10_000, dtype=torch.float32)}}
    pt = checkpoint.save(tmp_path / "ck", 1, state, {"stage": "oneshot"})
    calls: list[tuple[int, int]] = []
    dst = checkpoint.snapshot(pt, tmp_path / "snap", progress=lambda done, size: calls.append((done, size)))
    size = dst.stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size) and len(calls) > size // 4096
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert checkpoint.load_snapshot(tmp_path / "snap")[0]["w"].equal(state["model"]["w"])


@pytest.mark.parametrize("raw,want", [("", 60.0), ("5", 5.0), ("0", 60.0), ("x", 60.0)])
def test_log_seconds_from_env(monkeypatch, raw, want):
    monkeypatch.setenv("STEPSHOT_LOG_SECONDS", raw)
    assert log_seconds_from_env() == want


def _scrape(port: int) -> str:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_a_scraped_process_waits_at_exit_until_its_last_update_was_scraped(monkeypatch):
    """The final figures of a short-lived pod reach Prometheus: close() returns only after a
    scrape that saw the last update (here from another thread, as Prometheus would)."""
    import threading
    from apiserver import free_port

    monkeypatch.setenv("STEPSHOT_METRICS_LINGER_SECONDS", "30")
    port = free_port()
    m = TrainerMetrics("s", "root", port=port)
    assert m.server is not None
    m.set("stepshot_trainer_snapshot_written_bytes", 10)
    seen: list[str] = []
    scraper = threading.Timer(0.2, lambda: seen.append(_scrape(port)))
    scraper.start()
    m.close()                                          # blocks until the scrape above happened
    scraper.join()
    assert 'stepshot_trainer_snapshot_written_bytes{partition="root",stage="s"} 10.0' in seen[0]


def test_an_unscraped_process_does_not_wait(monkeypatch):
    monkeypatch.delenv("STEPSHOT_METRICS_LINGER_SECONDS", raising=False)
    from apiserver import free_port

    m = TrainerMetrics("s", "root", port=free_port())
    m.set("stepshot_trainer_step", 1)
    assert m.linger() is False                         # nobody scraped: timeout 0, no wait
    m.close()


def test_only_a_delivered_metrics_response_that_read_the_last_update_counts_as_seen(monkeypatch):
    """A favicon request is no scrape, and a scrape that read the gauges before the last update
    (the update raced the collection) has not seen it: the process keeps waiting."""
    import urllib.request
    from apiserver import free_port

    monkeypatch.setenv("STEPSHOT_METRICS_LINGER_SECONDS", "0.3")
    port = free_port()
    m = TrainerMetrics("s", "root", port=port)
    try:
        read_before = time.monotonic()
        m.set("stepshot_trainer_step", 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/favicon.ico", timeout=5) as r:
            assert r.read() == b""
        m._scrapes.delivered(read_before)
        assert m.linger() is False
        _scrape(port)
        assert m.linger() is True
    finally:
        m.close()
