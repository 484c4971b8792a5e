"""The evaluation's free baselines and prior-guided ranking (spec.evaluation.baselines / prior).

Scored on the architectures that have ground truth, against the same truth as the super-net,
so a user sees on their own reference architectures whether the super-net beats counting MACs
or a zero-cost proxy. The prior-guided predictions cover every evaluated architecture: they
are a ranking a user can act on, reported beside the pure super-net's.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from stepshot import predictors
from stepshot.correlate import correlate
from stepshot.space import parse_arch
from stepshot.spec import Spec
from stepshot_trainer import checkpoint, zerocost
from stepshot_trainer.data import open_source


def scores(spec: Spec, codes: Iterable[str], names: Iterable[str], cache: Path | None = None) -> dict[str, dict[str, float]]:
    """{baseline: {code: score}} for the requested baselines (proxies: one minibatch, init seed =
    training.seed, the evaluation's device being irrelevant: one small net at a time on the CPU).

    `cache`: a JSON file of proxy scores already computed for the same space, seed and data, so
    evaluating after every stage computes each architecture's proxies once."""
    codes, names = sorted(set(codes)), list(dict.fromkeys(names))
    sp = spec.search_space
    out = {k: v for k, v in predictors.complexity_scores(codes, sp).items() if k in names}
    wanted = [n for n in names if n in predictors.PROXIES]
    if wanted and codes:
        known = _cached(cache, spec)
        missing = [c for c in codes if c not in known]
        if missing:
            x, y = zerocost.minibatch(open_source(spec, "train"), spec.training.seed)
            known.update({c: zerocost.scores(sp, parse_arch(c, sp), x, y, spec.training.seed) for c in missing})
            if cache is not None:
                checkpoint.write_json(cache, {"key": _cache_key(spec), "scores": known})
        out.update({n: {c: known[c][n] for c in codes} for n in wanted})
    return out


def _cache_key(spec: Spec) -> dict:
    dataset = {k: v for k, v in spec.dataset.to_dict().items() if k != "path"}
    return {"space": spec.space, "seed": spec.training.seed, "dataset": dataset,
            "batch_images": zerocost.BATCH_IMAGES}


def _cached(cache: Path | None, spec: Spec) -> dict[str, dict[str, float]]:
    """The cache's scores when it was made for this spec's space, seed and data; else none."""
    try:
        doc = json.loads(cache.read_text()) if cache is not None else {}
    except (OSError, ValueError):
        return {}
    return dict(doc.get("scores", {})) if doc.get("key") == json.loads(json.dumps(_cache_key(spec))) else {}


def scored(baseline_scores: Mapping[str, Mapping[str, float]], truth: Mapping[str, float]) -> dict[str, dict]:
    """Each baseline's Kendall tau / Spearman / Pearson against the truth (the super-net's metrics)."""
    out = {}
    for name, s in baseline_scores.items():
        m = correlate(dict(s), dict(truth))
        out[name] = {k: m[k] for k in ("kendall_tau", "spearman", "pearson", "n")}
    return out
