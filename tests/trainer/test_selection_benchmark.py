"""benchmarks/selection.py's analysis: selection on reference architectures, scored on the rest."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import selection  # noqa: E402


def _codes(n):
    return [f"1{i:051d}" for i in range(n)]


def test_selection_finds_the_better_epoch_and_the_interval_says_so():
    """Epoch 2 ranks like the truth, epoch 3 (the last) is noise: the reference architectures
    pick epoch 2 almost always, and the held-out gain is positive with an interval above 0."""
    rng = np.random.default_rng(0)
    codes = _codes(64)
    truth = {c: float(x) for c, x in zip(codes, rng.normal(88, 1, 64))}
    per_seed = {seed: {2: {c: truth[c] + rng.normal(0, 0.2) for c in codes},
                       3: {c: float(rng.normal(88, 1)) for c in codes}} for seed in range(4)}
    out = selection.analyse(per_seed, truth, truth, codes[:16], np.random.default_rng(1))
    fixed = out["8-seed mean, fixed draw"]
    assert fixed["draws"] == 1 and fixed["last_epoch_selected_share"] == 0
    assert fixed["selected_minus_last"] > 0.5 and fixed["ci95"][0] > 0.5
    drawn = out["8-seed mean, random draws"]
    assert drawn["draws"] == selection.DRAWS and drawn["last_epoch_selected_share"] < 0.01
    assert drawn["hindsight_best_minus_last"] >= drawn["selected_minus_last"]


def test_equal_epochs_leave_the_last_one_selected():
    """Identical predictions tie on every reference set: ties go to the later epoch, no change."""
    rng = np.random.default_rng(2)
    codes = _codes(64)
    truth = {c: float(x) for c, x in zip(codes, rng.normal(88, 1, 64))}
    same = {c: truth[c] + rng.normal(0, 0.5) for c in codes}
    out = selection.analyse({0: {1: same, 2: same}, 1: {1: same, 2: same}}, truth, truth, codes[:16],
                            np.random.default_rng(3))
    for row in out.values():
        assert row["last_epoch_selected_share"] == 1 and row["selected_minus_last"] == 0
