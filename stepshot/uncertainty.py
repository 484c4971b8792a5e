"""How sure a ranking figure is: bootstrap intervals for Kendall tau (torch-free).

A tau measured on 64 architectures against a ground truth with seed noise moves with
both: which architectures were sampled, and which training seeds the ground truth
happened to get. `bootstrap_taus` resamples both at once, architectures with
replacement and, per architecture, its ground-truth seeds, and scores every predictor
on the *same* resample, so differences between predictors are paired. What it cannot
see is the predictor's own training noise (a super-net seed): that shows as the spread
between benchmark seeds.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np


def kendall_tau_b(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Kendall tau-b along the last axis (scipy.stats.kendalltau's default), broadcast over
    the leading ones; nan where one side is constant. Exact, O(n^2) per row."""
    pred, truth = np.broadcast_arrays(np.asarray(pred, float), np.asarray(truth, float))
    n = pred.shape[-1]
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    sp = np.sign(pred[..., :, None] - pred[..., None, :])[..., upper]
    st = np.sign(truth[..., :, None] - truth[..., None, :])[..., upper]
    denom = np.sqrt((sp * sp).sum(-1) * (st * st).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (sp * st).sum(-1) / np.where(denom > 0, denom, 1), np.nan)


def bootstrap_taus(preds: Mapping[Hashable, Mapping[str, float]], truth_seeds: Mapping[str, Sequence[float]],
                   replicates: int = 2000, seed: int = 0, resample_seeds: bool = True,
                   ) -> tuple[dict[Hashable, float], dict[Hashable, np.ndarray]]:
    """Kendall tau of each predictor against the ground-truth seed mean: the point estimate,
    and one value per bootstrap replicate (the same resample for every predictor; the same
    architecture draws for a given `seed` whether or not `resample_seeds`).

    Redrawing seeds makes each replicate's truth noisier than the observed mean, so taus
    come out lower than the point estimate: use it for *differences* between predictors
    (both sides shrink alike, the interval errs towards 0), and `resample_seeds=False` for
    an interval around one tau. Only architectures every predictor and the truth share are used."""
    codes = sorted(set(truth_seeds).intersection(*preds.values()))
    if len(codes) < 3:
        raise ValueError(f"need at least 3 architectures shared by all predictions and the truth, got {len(codes)}")
    k = max(len(truth_seeds[c]) for c in codes)
    # Pad ragged seed lists by cycling, so a resampled seed index is always valid.
    seeds = np.array([[truth_seeds[c][i % len(truth_seeds[c])] for i in range(k)] for c in codes])
    truth_mean = np.round([np.mean(truth_seeds[c]) for c in codes], 9)
    rng = np.random.default_rng(seed)
    n = len(codes)
    arch = rng.integers(0, n, size=(replicates, n))
    pick = rng.integers(0, k, size=(replicates, n, k))  # seeds of each drawn architecture, with replacement
    # Rounded so that equal means tie exactly, whatever the order of summation.
    boot_truth = np.round(seeds[arch[..., None], pick].mean(-1) if resample_seeds else truth_mean[arch], 9)
    point, boots = {}, {}
    for name, pred in preds.items():
        p = np.array([pred[c] for c in codes])
        point[name] = float(kendall_tau_b(p, truth_mean))
        boots[name] = kendall_tau_b(p[arch], boot_truth)
    return point, boots


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values."""
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def seed_draws(seeds: int, replicates: int, seed: int = 0) -> np.ndarray:
    """Super-net seeds drawn with replacement, one row of `seeds` indices per replicate. The
    same (seeds, replicates, seed) give the same draws, so two arms with the same seeds are
    paired."""
    return np.random.default_rng([seed, seeds]).integers(0, seeds, size=(replicates, seeds))


def seed_resampled_mean(per_seed: Sequence[np.ndarray], draws: np.ndarray) -> np.ndarray:
    """Per replicate r, the mean over the drawn super-net seeds of their replicate-r values.

    `per_seed[i]` holds one value per bootstrap replicate for seed i (e.g. bootstrap_taus's);
    `draws` comes from `seed_draws`. Resampling the seeds adds the spread between super-net
    trainings to the architectures' and the ground truth's resampling."""
    stacked = np.stack(per_seed)                        # [seeds, replicates]
    return stacked[draws, np.arange(draws.shape[0])[:, None]].mean(1)


def predictor_ceiling(accs: np.ndarray) -> dict:
    """How well a *noise-free* predictor can rank against the mean over the seeds
    (`accs`: architectures x seeds).

    The seed-to-seed tau compares two noisy re-runs; a predictor is scored against the
    k-seed mean, which is less noisy. Under a Gaussian model (true accuracy + independent
    seed noise), the mean pairwise Pearson r between seeds gives the mean's reliability
    r_k = k r / (1 + (k - 1) r) (Spearman-Brown); a predictor that knew the true accuracies
    would correlate sqrt(r_k) with the mean, i.e. Kendall tau (2/pi) arcsin(sqrt(r_k)).
    An estimate, not a bound: a predictor may land above it by chance. {} when the
    ground truth has fewer than 2 seeds or 3 architectures."""
    accs = np.asarray(accs, float)
    k = accs.shape[1] if accs.ndim == 2 else 0
    if k < 2 or len(accs) < 3:
        return {}
    corr = np.corrcoef(accs.T)
    r = float(np.clip(corr[np.triu_indices(k, 1)].mean(), 0.0, 1.0))
    r_k = k * r / (1 + (k - 1) * r) if r > 0 else 0.0
    return {"seed_pearson": r, "mean_reliability": r_k,
            "predictor_ceiling_kendall_tau": float(2 / np.pi * np.arcsin(np.sqrt(r_k)))}
