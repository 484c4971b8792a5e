"""Operator tests: the shared real-API-server fixture (tests/apiserver.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared fixture modules

from apiserver import apiserver  # noqa: E402,F401  (registers the session fixture)


def pytest_terminal_summary(terminalreporter):
    from kubeplay import LATENCIES, percentile
    if LATENCIES:
        terminalreporter.write_line(
            f"reconcile latency (child Job finished -> next stage's Job created), {len(LATENCIES)} transitions: "
            f"p50 {percentile(LATENCIES, 0.5) * 1000:.0f} ms, p95 {percentile(LATENCIES, 0.95) * 1000:.0f} ms")
