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


def test_within_partition_tau_separates_ranking_from_level_offsets(tmp_path, monkeypatch):
    from stepshot.archsets import load_codes
    from stepshot.correlate import correlate
    from stepshot.partition import build_tree, route
    from stepshot.space import parse_arch

    codes = list(load_codes(ranking.ARCHS).values())
    rng = np.random.default_rng(1)
    truth = {c: float(x) for c, x in zip(codes, rng.normal(88, 1, len(codes)))}
    _write(tmp_path / "gt.json", truth)
    monkeypatch.setattr(ranking, "GROUND_TRUTH", tmp_path / "gt.json")
    steps = ranking.PRESETS["quick"]["partition_steps"][:1]
    [left, right] = build_tree("resnet48-fmnist", steps)[1]
    # After the split each sub-supernet ranks its own architectures perfectly but sits at its own level.
    offset = {left.id: +3.0, right.id: -3.0}
    shifted = {c: a + offset[route(parse_arch(c, "resnet48-fmnist"), [left, right]).id] for c, a in truth.items()}
    noisy = {c: a + rng.normal(0, 1) for c, a in truth.items()}
    points = {("partitioned", 0): [(0, "oneshot", _write(tmp_path / "start.json", noisy)),
                                   (1, "step1", _write(tmp_path / "step1.json", shifted))]}
    [row] = ranking.within_partitions(points, steps)
    assert row["within_kendall_tau"] == 1.0 and row["partitions"] == 2
    assert row["start_within_kendall_tau"] < 0.8
    assert correlate(shifted, truth)["kendall_tau"] < 0.8            # overall: the levels do not line up
    assert "| 0 | 1 | 2 | 1.000 |" in "\n".join(ranking.markdown_within([row]))
