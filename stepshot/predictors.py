"""The free baselines a super-net must beat, and the prior-guided predictor (torch-free).

Baselines score an architecture without training anything: its MACs and parameter count
(`stepshot.space.complexity`) and zero-cost proxies computed at initialisation on one
minibatch (stepshot_trainer.zerocost). The prior-guided predictor ranks by a weighted mean
of the super-net's rank and one baseline's rank: it imports the prior's signal, so reports
show it beside the pure super-net, never instead of it.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence

from stepshot.space import SearchSpace, complexity, parse_arch

COMPLEXITY = ("macs", "params")
PROXIES = ("synflow", "snip", "grad_norm", "naswot", "jacob_cov")   # stepshot_trainer.zerocost
BASELINES = COMPLEXITY + PROXIES


def complexity_scores(codes: Iterable[str], space: SearchSpace) -> dict[str, dict[str, float]]:
    """{"macs": {code: MACs}, "params": {code: params}}: larger nets rank higher."""
    out: dict[str, dict[str, float]] = {"macs": {}, "params": {}}
    for code in codes:
        params, macs = complexity(parse_arch(code, space))
        out["macs"][code], out["params"][code] = float(macs), float(params)
    return out


def rank_fractions(values: Sequence[float]) -> array:
    """Average ranks in [0, 1] (ties share their mean rank), ascending with the value; 8 bytes
    each (a whole pool's are held at once: stepshot.pool.prior_guided)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = array("d", [0.0]) * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 / max(1, len(values) - 1)
        i = j + 1
    return ranks


def check_weight(weight: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"prior weight {weight} outside [0, 1]")


def guided_score(supernet_rank: float, prior_rank: float, weight: float) -> float:
    """One architecture's prior-guided score from its two rank fractions."""
    return round((1 - weight) * supernet_rank + weight * prior_rank, 9)


def prior_guided(supernet: Mapping[str, float], prior: Mapping[str, float], weight: float) -> dict[str, float]:
    """(1 - weight) x the super-net's rank + weight x the prior's rank, on the codes both score.

    Ranks, not values: an accuracy and a MAC count share no scale, and a rank mean has no
    parameter to fit, so nothing leaks from the architectures it is scored on. (A whole pool's:
    stepshot.pool.prior_guided, streamed.)"""
    check_weight(weight)
    codes = sorted(set(supernet) & set(prior))
    a, b = rank_fractions([supernet[c] for c in codes]), rank_fractions([prior[c] for c in codes])
    return {c: guided_score(x, y, weight) for c, x, y in zip(codes, a, b)}
