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


def _truth(tmp_path, monkeypatch, codes, true, rng, k=3):
    gt = {f"arch{i}": {"arch": c, "acc": float(np.mean(s)), "accs": list(s)}
          for i, c in enumerate(codes) for s in [true[i] + rng.normal(0, 0.3, k)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    monkeypatch.setattr(ranking, "GROUND_TRUTH", tmp_path / "gt.json")


def test_significance_resolves_a_clear_lead_and_not_a_tie(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    codes = [f"1{i:051d}" for i in range(64)]
    true = rng.normal(88, 1, 64)
    _truth(tmp_path, monkeypatch, codes, true, rng)
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
    from stepshot.space import get_space, parse_arch

    codes = list(load_codes(ranking.ARCHS).values())
    rng = np.random.default_rng(1)
    truth = {c: float(x) for c, x in zip(codes, rng.normal(88, 1, len(codes)))}
    _write(tmp_path / "gt.json", truth)
    monkeypatch.setattr(ranking, "GROUND_TRUTH", tmp_path / "gt.json")
    steps = ranking.PRESETS["quick"]["partition_steps"][:1]
    sp = get_space("resnet48-fmnist")
    [left, right] = build_tree(sp, steps)[1]
    # After the split each sub-supernet ranks its own architectures perfectly but sits at its own level.
    offset = {left.id: +3.0, right.id: -3.0}
    shifted = {c: a + offset[route(parse_arch(c, sp), [left, right]).id] for c, a in truth.items()}
    noisy = {c: a + rng.normal(0, 1) for c, a in truth.items()}
    points = {("partitioned", 0): [(0, "oneshot", _write(tmp_path / "start.json", noisy)),
                                   (1, "step1", _write(tmp_path / "step1.json", shifted))]}
    [row] = ranking.within_partitions(points, steps)
    assert row["within_kendall_tau"] == 1.0 and row["partitions"] == 2
    assert row["start_within_kendall_tau"] < 0.8
    assert correlate(shifted, truth)["kendall_tau"] < 0.8            # overall: the levels do not line up
    assert "| 0 | 1 | 2 | 1.000 |" in "\n".join(ranking.markdown_within([row]))


def test_super_net_seed_noise_widens_the_interval_of_a_difference(tmp_path, monkeypatch):
    """Arms whose seeds disagree cannot resolve what the same mean resolves when they agree."""
    rng = np.random.default_rng(5)
    codes = [f"1{i:051d}" for i in range(64)]
    true = rng.normal(88, 1, 64)
    _truth(tmp_path, monkeypatch, codes, true, rng)
    noisy = lambda s, tag: _write(tmp_path / f"{tag}.json", {c: true[i] + rng.normal(0, s) for i, c in enumerate(codes)})  # noqa: E731

    def widths(seed_noises: list[float]) -> float:
        points = {}
        for seed, s in enumerate(seed_noises):
            start = noisy(1.0, f"start{seed}-{s}")
            points[("grouped", seed)] = [(0, "oneshot", start), (1, "g", noisy(s, f"g{seed}-{s}"))]
        [d] = [d for d in ranking.significance(points, replicates=400)["differences"]
               if (d["a"], d["b"]) == ("grouped final", "one-shot start")]
        return d["ci95"][1] - d["ci95"][0]

    assert widths([0.2, 3.0, 0.2, 3.0]) > 1.5 * widths([0.9, 0.9, 0.9, 0.9])


def test_resolution_line_names_the_smallest_and_largest_resolvable_difference():
    sig = {"differences": [
        {"a": "grouped final", "b": "one-shot start", "seeds": [0, 1, 2], "resolves": 0.031},
        {"a": "grouped final", "b": "partitioned final", "seeds": [0, 1, 2], "resolves": 0.092}]}
    line = ranking.resolution_line(sig)
    assert "3 super-net seeds" in line and "0.031 (grouped final - one-shot start)" in line
    assert "0.092 (grouped final - partitioned final)" in line
    assert "nothing is resolved" in ranking.resolution_line({"differences": []})


def test_group_gains_follow_the_routing_groups(tmp_path):
    """Archs routed to S4's catch-all at G=2 gain 1 point, the rest nothing: the table says so."""
    from stepshot.archsets import load_codes
    from stepshot.space import get_space, parse_arch

    codes = list(load_codes(ranking.ARCHS).values())
    sp = get_space(ranking.SPACE)
    max_s4 = sp.stage_widths(3)[-1]
    before = {c: 88.0 for c in codes}
    after = {c: 88.0 + (0.0 if parse_arch(c, sp).stage_out(3) == max_s4 else 1.0) for c in codes}
    points = {("grouped", seed): [(0, "oneshot", _write(tmp_path / f"b{seed}.json", before)),
                                  (1, "g2", _write(tmp_path / f"a{seed}.json", after))] for seed in (0, 1)}
    rows = {(r["stage"], r["kind"]): r for r in ranking.group_gains(points, [2, 3])}
    assert rows[(4, "catch-all")]["gain_mean"] == 1.0 and rows[(4, "max")]["gain_mean"] == 0.0
    assert rows[(4, "catch-all")]["gain_seed_sd"] == 0.0
    n = sum(r["archs"] for (stage, _), r in rows.items() if stage == 4)
    assert n == len(codes)
    assert "| grouped | 1 (2) | S4 |" in "\n".join(ranking.markdown_gains(list(rows.values())))


def test_full_preset_selects_checkpoints_on_reference_archs_it_never_ranks(tmp_path):
    """The paper's checkpoint selection (spec §3.1) on a fixed reference draw from the ground
    truth's architectures; every method ranks the others, so selection and ranking are disjoint."""
    from stepshot.archsets import load_codes
    from stepshot.spec import load

    everything = load_codes(ranking.ARCHS)
    for method in ranking.METHODS:
        spec = ranking.make_spec(ranking.PRESETS["full"], method, 3, tmp_path)["spec"]
        reference = load_codes(Path(spec["selection"]["archs"]))
        ranked = load_codes(Path(spec["evaluation"]["archs"]))
        assert len(reference) == 16 and len(ranked) == 48
        assert not set(reference) & set(ranked) and {**reference, **ranked} == everything
        assert spec["selection"]["groundTruth"] == spec["evaluation"]["groundTruth"]
        # Selection scores with the evaluation's images and 16 x 256 calibration images.
        assert spec["selection"]["evalImages"] == spec["evaluation"]["evalImages"] == 10000
        assert spec["selection"]["calibrationBatches"] * spec["training"]["batchSize"] == 16 * 256
        assert load({"metadata": {"name": "x"}, "spec": spec}).selection.archs == spec["selection"]["archs"]
    assert ranking.reference_split(16) == ranking.reference_split(16)   # one draw for every run
    quick = ranking.make_spec(ranking.PRESETS["quick"], "grouped", 0)["spec"]
    assert "selection" not in quick and quick["evaluation"]["archs"] == str(ranking.ARCHS)


@pytest.mark.parametrize("sd,n", [(0.0239, 6), (0.020, 3), (0.048, 40), (0.01, 8)])
def test_detectable_effect_is_where_the_power_reaches_80_percent(sd, n):
    """ranking_v3_report's power figures agree with each other, also where scipy's noncentral t
    is NaN far in its lower tail (that once stopped the bisection at 0.19 for a 0.034 effect)."""
    import ranking_v3_report as report
    effect = report.detectable_effect(sd, n)
    assert report.power(effect, sd, n) == pytest.approx(0.8, abs=1e-6)
    assert report.power(effect * 0.95, sd, n) < 0.8 < report.power(effect * 1.05, sd, n)
    needed = report.seeds_for_power(sd, effect)
    assert needed in (n, n + 1) or (n < 3 and needed == 3)   # the same figure read the other way
