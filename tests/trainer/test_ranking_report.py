"""benchmarks/ranking.py's report: bootstrap intervals from prediction files (no training)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ranking  # noqa: E402


def _write(path: Path, accs: dict) -> str:
    path.write_text(json.dumps({f"arch{i}": {"arch": c, "acc": a} for i, (c, a) in enumerate(accs.items())}))
    return str(path)


def test_significance_resolves_a_clear_lead_and_not_a_tie(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    codes = [f"1{i:051d}" for i in range(64)]
    true = rng.normal(88, 1, 64)
    gt = {f"arch{i}": {"arch": c, "acc": float(np.mean(s)), "accs": list(s)}
          for i, c in enumerate(codes) for s in [true[i] + rng.normal(0, 0.3, 3)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    monkeypatch.setattr(ranking, "GROUND_TRUTH", tmp_path / "gt.json")
    points = {}
    for seed in (0, 1):
        good = lambda s: {c: true[i] + rng.normal(0, s) for i, c in enumerate(codes)}  # noqa: E731
        start = _write(tmp_path / f"start{seed}.json", good(0.3))
        points[("grouped", seed)] = [(0, "oneshot", start), (1, "g2", _write(tmp_path / f"g{seed}.json", good(0.3)))]
        points[("partitioned", seed)] = [(0, "oneshot", start), (1, "p", _write(tmp_path / f"p{seed}.json", good(0.3)))]
        points[("oneshot", seed)] = [(0, "oneshot (whole budget)", _write(tmp_path / f"o{seed}.json", good(3.0)))]
    sig = ranking.significance(points, replicates=400)
    diffs = {(d["a"], d["b"]): d for d in sig["differences"]}
    lead = diffs[("grouped final", "oneshot (whole budget)")]
    assert lead["ci95"][0] > 0 and lead["share_at_or_below_zero"] == 0
    tie = diffs[("grouped final", "partitioned final")]
    assert tie["ci95"][0] < 0 < tie["ci95"][1]
    assert set(sig["final"]) == {"grouped final", "partitioned final", "oneshot (whole budget)", "one-shot start"}
    for v in sig["final"].values():
        assert v["ci95"][0] <= v["kendall_tau"] <= v["ci95"][1]
    text = ranking.markdown([], {}, sig)
    assert "| grouped final - oneshot (whole budget) |" in text
    assert lead["difference"] == pytest.approx(sig["final"]["grouped final"]["kendall_tau"]
                                               - sig["final"]["oneshot (whole budget)"]["kendall_tau"], abs=2e-4)
