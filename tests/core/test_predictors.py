"""Free baselines and the prior-guided rank mean."""
import pytest

from stepshot import predictors
from stepshot.space import complexity, get_space


def _order(scores: dict) -> list:
    return sorted(scores, key=scores.get)


def test_prior_guided_interpolates_between_the_two_rankings():
    supernet = {"a": 90.0, "b": 91.0, "c": 89.0, "d": 92.0}
    prior = {"a": 4.0, "b": 1.0, "c": 3.0, "d": 2.0, "e": 9.0}       # e: no super-net score
    assert _order(predictors.prior_guided(supernet, prior, 0.0)) == _order(supernet)
    assert _order(predictors.prior_guided(supernet, prior, 1.0)) == ["b", "d", "c", "a"]
    mixed = predictors.prior_guided(supernet, prior, 0.5)
    assert set(mixed) == {"a", "b", "c", "d"}
    assert mixed["d"] == pytest.approx(0.5 * 1.0 + 0.5 * (1 / 3))     # top super-net, 2nd-lowest prior


def test_ties_share_their_mean_rank_and_weights_are_bounded():
    tied = predictors.prior_guided({"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 0.0, "b": 0.0, "c": 0.0}, 0.0)
    assert tied["a"] == tied["b"] == 0.25 and tied["c"] == 1.0
    with pytest.raises(ValueError):
        predictors.prior_guided({"a": 1.0}, {"a": 1.0}, 1.5)


def test_complexity_scores_are_the_space_complexity():
    sp = get_space("resnet48-fmnist")
    code = sp.max_arch.encode()
    out = predictors.complexity_scores([code], sp)
    assert (out["params"][code], out["macs"][code]) == complexity(sp.max_arch)
    assert predictors.BASELINES[:2] == ("macs", "params")
