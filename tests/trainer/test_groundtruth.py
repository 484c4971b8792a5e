"""`stepshot groundtruth`: stand-alone training, resumable, with its noise ceiling."""
import json

import pytest
from scipy import stats

from stepshot.archsets import challenge_format, stratified_archs
from stepshot.space import get_space
from stepshot_trainer import groundtruth
from trainer_helpers import FMNIST, needs_fmnist


@needs_fmnist
def test_ground_truth_is_resumable_and_reports_the_seed_ceiling(tmp_path):
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps(challenge_format(stratified_archs(get_space("resnet48-fmnist"), 3, seed=5))))
    out = tmp_path / "gt.json"
    recipe = groundtruth.Recipe(space="resnet48-fmnist", data=str(FMNIST), epochs=1, train_limit=128,
                                eval_images=200, batch_size=64)
    # Out of time before the first run: nothing trained, no ground truth written, the summary says so.
    partial = groundtruth.run(recipe, archs, out, [0, 1], jobs=2, progress=False, time_limit=0, note="in slices")
    assert (partial["complete"], partial["runs_done"], partial["runs_total"]) == (False, 0, 6)
    assert not out.exists()
    summary = groundtruth.run(recipe, archs, out, [0, 1], jobs=2, progress=False)
    gt = json.loads(out.read_text())
    assert len(gt) == 3
    for entry in gt.values():
        assert len(entry["accs"]) == 2 and entry["acc"] == pytest.approx(sum(entry["accs"]) / 2)
        assert entry["params"] > 0 and entry["macs"] > entry["params"]
    seed0 = [e["accs"][0] for e in gt.values()]
    seed1 = [e["accs"][1] for e in gt.values()]
    expected = stats.kendalltau(seed0, seed1)[0]
    assert summary["seed_kendall_tau"] == pytest.approx(expected, nan_ok=True)

    # A killed run lost one result: only that one is trained again, the rest are reused.
    runs = sorted(out.with_suffix(".runs").glob("*.json"))
    assert len(runs) == 6
    kept = {p: p.stat().st_mtime_ns for p in runs[1:]}
    runs[0].unlink()
    groundtruth.run(recipe, archs, out, [0, 1], jobs=1, progress=False, note="in slices")
    assert runs[0].exists()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    final = json.loads((tmp_path / "gt.summary.json").read_text())
    assert (final["n"], final["complete"], final["devices"]) == (3, True, ["cpu"])
    assert final["how_it_ran"] == "in slices"       # kept by the note-less call, not repeated by the third
    assert final["wall_seconds_total"] >= summary["wall_seconds_total"] + final["wall_seconds_this_invocation"] - 0.1


def test_predictor_ceiling_matches_a_simulated_noise_free_predictor():
    import numpy as np

    rng = np.random.default_rng(0)
    truth = rng.normal(88.0, 0.5, 4000)
    accs = truth[:, None] + rng.normal(0.0, 0.4, (4000, 3))  # 3 seeds of independent noise
    est = groundtruth.predictor_ceiling(accs)
    simulated = stats.kendalltau(truth, accs.mean(1))[0]
    assert est["predictor_ceiling_kendall_tau"] == pytest.approx(simulated, abs=0.02)
    assert est["predictor_ceiling_kendall_tau"] > stats.kendalltau(accs[:, 0], accs[:, 1])[0]
    same = groundtruth.predictor_ceiling(np.repeat(truth[:50, None], 2, axis=1))
    assert same["predictor_ceiling_kendall_tau"] == pytest.approx(1.0)


@pytest.mark.parametrize("r", [0.3, 0.57, 0.8])
def test_seeds_needed_reaches_the_target_in_simulation(r):
    import numpy as np

    need = groundtruth.seeds_needed(r, target=0.8)
    rng = np.random.default_rng(1)
    n, noise = 6000, np.sqrt((1 - r) / r)  # truth sd 1: seed-to-seed Pearson r
    truth = rng.normal(0.0, 1.0, n)
    mean = lambda k: truth + rng.normal(0.0, noise, (k, n)).mean(0)  # noqa: E731

    def mean_vs_mean(k):
        return stats.kendalltau(mean(k), mean(k))[0]

    k = need["mean_vs_mean"]
    assert mean_vs_mean(k) > 0.8 - 0.01
    assert k == 1 or mean_vs_mean(k - 1) < 0.8 + 0.01
    k = need["predictor_ceiling"]
    assert stats.kendalltau(truth, mean(k))[0] > 0.8 - 0.01
    assert k == 1 or stats.kendalltau(truth, mean(k - 1))[0] < 0.8 + 0.01
    assert groundtruth.seeds_needed(0.0)["mean_vs_mean"] is None
