"""What `stepshot run` shows beside the super-net's Kendall tau (torch-free).

Each evaluated step's tau gets a 95% bootstrap interval over the architectures (one run: the
super-net's own seed noise is not in it); the free baselines and the prior-guided ranking come
from the evaluation's report; the predictor ceiling is estimated when the ground truth has
per-seed accuracies (stepshot.uncertainty.predictor_ceiling).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stepshot import correlate as corr
from stepshot.uncertainty import bootstrap_taus, interval, predictor_ceiling
from stepshot.workdir import evaluations_file

REPLICATES = 1000


def tau_interval(predictions: Path, truth: Path) -> tuple[float, float] | None:
    """95% interval of one predictions file's tau, resampling the architectures."""
    pred, seeds = corr.load_accuracies(predictions), corr.load_seed_accuracies(truth)
    try:
        _, boots = bootstrap_taus({"p": pred}, seeds, REPLICATES, resample_seeds=False)
    except ValueError:   # fewer than 3 shared architectures
        return None
    lo, hi = interval(boots["p"])
    return round(lo, 4), round(hi, 4)


def ceiling(truth: Path) -> float | None:
    """The predictor ceiling, where every architecture has the same number (>= 2) of seeds."""
    seeds = corr.load_seed_accuracies(truth)
    counts = {len(v) for v in seeds.values()}
    if len(counts) != 1:
        return None
    out = predictor_ceiling(np.array(list(seeds.values())))
    return round(out["predictor_ceiling_kendall_tau"], 4) if out else None


def free_rows(predictions: Path) -> dict:
    """{"baselines": {name: tau}, "prior_guided": {...}} from the evaluation's report, if any."""
    try:
        entry = json.loads(evaluations_file(predictions).read_text())["evaluations"][predictions.stem]
    except (OSError, ValueError, KeyError):
        return {}
    out = {}
    if entry.get("baselines"):
        out["baselines"] = {k: v["kendall_tau"] for k, v in entry["baselines"].items() if v.get("kendall_tau") is not None}
    if entry.get("prior_guided"):
        out["prior_guided"] = entry["prior_guided"]
    return out


def lines(final: dict, ceiling_tau: float | None) -> list[str]:
    """The board under the stage table: the final tau against what a user gets for free."""
    if final.get("kendall_tau") is None:
        return []
    ci = final.get("ci95")
    out = [f"super-net     tau {final['kendall_tau']:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")]
    guided = final.get("prior_guided")
    if guided and guided.get("kendall_tau") is not None:
        out.append(f"prior-guided  tau {guided['kendall_tau']:.3f}  ({guided['proxy']}, weight {guided['weight']:g}; "
                   "imports the prior's signal)")
    for name, tau in sorted(final.get("baselines", {}).items(), key=lambda kv: -kv[1]):
        out.append(f"{name:<13} tau {tau:.3f}  (free baseline)")
    if ceiling_tau is not None:
        out.append(f"ceiling       tau {ceiling_tau:.3f}  (a noise-free predictor against this ground truth)")
    return out
