"""Bootstrap intervals for Kendall tau: the tau itself against scipy, the resampling by its properties."""
import numpy as np
import pytest
from scipy import stats

from stepshot import correlate as corr
from stepshot.uncertainty import bootstrap_taus, interval, kendall_tau_b


@pytest.mark.parametrize("seed", range(5))
def test_tau_b_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    pred, truth = rng.integers(0, 8, size=(2, 40)).astype(float)  # few values: many ties on both sides
    assert kendall_tau_b(pred, truth) == pytest.approx(stats.kendalltau(pred, truth).statistic, abs=1e-12)


def test_tau_b_broadcasts_over_rows_and_is_nan_for_a_constant_side():
    rng = np.random.default_rng(0)
    pred, truth = rng.normal(size=(6, 30)), rng.normal(size=30)
    got = kendall_tau_b(pred, truth)
    assert got.shape == (6,)
    assert got == pytest.approx([stats.kendalltau(row, truth).statistic for row in pred], abs=1e-12)
    assert np.isnan(kendall_tau_b(np.ones(30), truth))


def _world(n=64, k=3, spread=1.0, seed_noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.normal(88, spread, n)
    codes = [f"1{i:051d}" for i in range(n)]
    truth_seeds = {c: list(true[i] + rng.normal(0, seed_noise, k)) for i, c in enumerate(codes)}
    return rng, codes, true, truth_seeds


def test_point_estimate_is_scipys_tau_against_the_seed_mean():
    rng, codes, true, truth_seeds = _world()
    pred = {c: true[i] + rng.normal(0, 0.5) for i, c in enumerate(codes)}
    point, boots = bootstrap_taus({"p": pred}, truth_seeds, replicates=200)
    mean = [np.mean(truth_seeds[c]) for c in codes]
    assert point["p"] == pytest.approx(stats.kendalltau([pred[c] for c in codes], mean).statistic, abs=1e-12)
    lo, hi = interval(boots["p"])
    assert lo < point["p"] < hi


def test_noise_free_truth_and_perfect_predictor_give_a_point_interval():
    _, codes, true, _ = _world()
    truth_seeds = {c: [true[i]] * 3 for i, c in enumerate(codes)}
    _, boots = bootstrap_taus({"exact": {c: 2 * true[i] for i, c in enumerate(codes)}}, truth_seeds, replicates=100)
    assert interval(boots["exact"]) == (1.0, 1.0)


def test_differences_are_paired_and_separate_a_clearly_better_predictor():
    rng, codes, true, truth_seeds = _world()
    good = {c: true[i] + rng.normal(0, 0.2) for i, c in enumerate(codes)}
    bad = {c: true[i] + rng.normal(0, 2.0) for i, c in enumerate(codes)}
    _, boots = bootstrap_taus({"good": good, "copy": dict(good), "bad": bad}, truth_seeds, replicates=500)
    assert np.all(boots["good"] == boots["copy"])           # same resample for every predictor
    lo, _ = interval(boots["good"] - boots["bad"])
    assert lo > 0


def test_ground_truth_seeds_are_resampled_too():
    # A predictor equal to the seed mean: resampling architectures alone would give tau 1
    # in every replicate; redrawing the ground truth's seeds is what moves it.
    _, codes, _, truth_seeds = _world(seed_noise=0.5)
    pred = {c: float(np.mean(v)) for c, v in truth_seeds.items()}
    point, boots = bootstrap_taus({"mean": pred}, truth_seeds, replicates=300)
    assert point["mean"] == 1.0
    assert interval(boots["mean"])[1] < 1.0
    _, archs_only = bootstrap_taus({"mean": pred}, truth_seeds, replicates=300, resample_seeds=False)
    assert np.all(archs_only["mean"] == 1.0)
    one_seed = {c: v[:1] for c, v in truth_seeds.items()}
    _, fixed = bootstrap_taus({"first": {c: v[0] for c, v in one_seed.items()}}, one_seed, replicates=300)
    assert np.all(fixed["first"] == 1.0)


def test_deterministic_and_needs_shared_architectures():
    rng, codes, true, truth_seeds = _world(n=20)
    pred = {c: true[i] for i, c in enumerate(codes)}
    a = bootstrap_taus({"p": pred}, truth_seeds, replicates=50, seed=3)[1]["p"]
    b = bootstrap_taus({"p": pred}, truth_seeds, replicates=50, seed=3)[1]["p"]
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="at least 3 architectures"):
        bootstrap_taus({"p": {codes[0]: 1.0}}, truth_seeds)


def test_seed_accuracies_reads_per_seed_lists():
    code, other = "1" + "2" * 51, "1" + "3" * 51
    gt = {"arch1": {"arch": code, "acc": 2.0, "accs": [1, 3]}, "arch2": {"arch": other[1:], "acc": 5.0}}
    assert corr.seed_accuracies(gt) == {code: [1.0, 3.0], other: [5.0]}
    with pytest.raises(corr.FormatError, match="accs"):
        corr.seed_accuracies({"arch1": {"arch": code, "acc": 2.0, "accs": []}})


def test_seed_resampling_adds_the_spread_between_super_net_seeds():
    from stepshot.uncertainty import seed_draws, seed_resampled_mean

    rng = np.random.default_rng(3)
    base = rng.normal(0.5, 0.01, 4000)              # one arm's bootstrap replicates
    same = [base] * 8                                # 8 seeds that trained identically
    draws = seed_draws(8, 4000)
    assert np.array_equal(seed_resampled_mean(same, draws), base)
    spread = [base + offset for offset in np.linspace(-0.1, 0.1, 8)]   # seeds that differ
    wide = seed_resampled_mean(spread, draws)
    assert np.mean(wide) == pytest.approx(np.mean(base), abs=0.005)
    # the seed term's standard error: sd of the offsets / sqrt(8), on top of the replicates' own
    offsets_se = np.std(np.linspace(-0.1, 0.1, 8)) / np.sqrt(8)
    assert np.std(wide) == pytest.approx(np.hypot(0.01, offsets_se), rel=0.1)
    assert np.array_equal(seed_draws(8, 10), seed_draws(8, 10))      # paired across arms
