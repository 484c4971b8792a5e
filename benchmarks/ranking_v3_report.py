"""Ranking benchmark v3: the analysis (benchmarks/ranking_v3.py analyze).

Reads the seeds' work directories and benchmarks/results/zerocost-resnet48-fmnist.json and
writes <out>.json, <out>.md and <out>.png. The JSON's schema (version 3):

  ceiling    {kendall_tau, what}: the predictor ceiling of the 8-seed ground truth
  ranked     the number of ranked architectures (every figure is on these)
  baselines  {name: {kendall_tau, ci95, seeds?}}: MACs and params (deterministic) and each
             zero-cost proxy (mean over init seeds)
  methods    {name: {kendall_tau_mean, ci95, seeds, per_seed}}: the super-net's arms, and the
             prior-guided predictors (mean of the super-net's and MACs' ranks)
  primary    {a, b, seeds, seeds_planned, mean, sd, ci95_t, ci95_bootstrap, tost_margin, tost_p,
             detectable_effect_80, per_seed}: tau(A) - tau(B), paired by seed
  secondary  [{a, b, seeds, mean, ci95_t, ci95_bootstrap}]: every other comparison
  curve      {seed: {epoch: tau on the 16 reference architectures}} of the one-shot start
  protocol   what every figure was computed with

Intervals: `ci95` resamples the architectures and the super-net (or init) seeds;
`ci95_bootstrap` of a difference also resamples each architecture's ground-truth seeds
(stepshot.uncertainty, paired); `ci95_t` is the paired t-interval over seeds.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stepshot.archsets import load_codes  # noqa: E402
from stepshot.correlate import load_accuracies, load_seed_accuracies  # noqa: E402
from stepshot.uncertainty import bootstrap_taus, interval, seed_draws, seed_resampled_mean  # noqa: E402
from stepshot.workdir import Layout  # noqa: E402

GROUND_TRUTH = ROOT / "benchmarks" / "groundtruth" / "resnet48-fmnist.json"
SUMMARY = ROOT / "benchmarks" / "groundtruth" / "resnet48-fmnist.summary.json"
ZEROCOST = ROOT / "benchmarks" / "results" / "zerocost-resnet48-fmnist.json"
SEEDS_PLANNED = 19         # fixed from the 8-seed pilot's paired sd (0.0288) before seed 8 ran: benchmarks/README.md
TOST_MARGIN = 0.02
REPLICATES = 2000
PRIMARY = ("paper (grouped G=2,3)", "control (continued)")
ARM_FILES = {"one-shot start": ("start",), "paper (grouped G=2,3)": ("paper",), "control (continued)": ("control",)}


def seed_predictions(root: Path) -> dict[str, dict[int, dict[str, float]]]:
    """arm -> seed -> {code: predicted accuracy}, for every seed whose three evaluations exist."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for seed_dir in sorted(root.glob("s[0-9]*"), key=lambda p: int(p.name[1:])):
        files = {"start": seed_dir / "start-predictions.json",
                 "paper": Layout(seed_dir / "paper").predictions("step2"),
                 "control": Layout(seed_dir / "control").predictions("step2")}
        if not all(f.exists() for f in files.values()):
            continue
        seed = int(seed_dir.name[1:])
        for arm, (key,) in ARM_FILES.items():
            out.setdefault(arm, {})[seed] = load_accuracies(files[key])
    return out


def rank_mean(*scores: dict[str, float]) -> dict[str, float]:
    """The mean of the predictors' ranks (higher is better): no weight to fit, nothing to leak."""
    codes = sorted(set.intersection(*(set(s) for s in scores)))
    ranks = [stats.rankdata([s[c] for c in codes]) for s in scores]
    return dict(zip(codes, np.mean(ranks, axis=0).tolist()))


def baselines_of(zc: dict, codes: set[str]) -> dict[str, dict[int, dict[str, float]]]:
    """name -> init seed -> scores; MACs and params have one 'seed' (they are deterministic)."""
    comp = zc["complexity"]
    out = {"MACs": {0: {c: comp[c]["macs"] for c in codes}}, "params": {0: {c: comp[c]["params"] for c in codes}}}
    for seed, per_arch in zc["seeds"].items():
        for proxy in next(iter(per_arch.values())):
            out.setdefault(proxy, {})[int(seed)] = {c: per_arch[c][proxy] for c in codes if c in per_arch}
    return out


def _taus(preds: dict, truth: dict, resample_seeds: bool) -> tuple[dict, dict]:
    return bootstrap_taus(preds, truth, REPLICATES, resample_seeds=resample_seeds)


def arm_summary(per_seed: dict[int, dict[str, float]], truth: dict) -> dict:
    """Mean tau over seeds, with an interval resampling architectures and seeds."""
    seeds = sorted(per_seed)
    point, boots = _taus({s: per_seed[s] for s in seeds}, truth, resample_seeds=False)
    mean = statistics.fmean(point[s] for s in seeds)
    if len(seeds) > 1:
        lo, hi = interval(seed_resampled_mean([boots[s] for s in seeds], seed_draws(len(seeds), REPLICATES)))
    else:
        lo, hi = interval(boots[seeds[0]])
    return {"kendall_tau_mean": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)], "seeds": seeds,
            "per_seed": {str(s): round(point[s], 4) for s in seeds}}


def paired(a: dict[int, dict], b: dict[int, dict], truth: dict) -> dict:
    """tau(a) - tau(b) over the seeds both have: t-interval, bootstrap interval, TOST, power."""
    seeds = sorted(a.keys() & b.keys())
    preds = {**{("a", s): a[s] for s in seeds}, **{("b", s): b[s] for s in seeds}}
    point, boots = _taus(preds, truth, resample_seeds=True)
    d = np.array([point[("a", s)] - point[("b", s)] for s in seeds])
    out = {"seeds": seeds, "mean": round(float(d.mean()), 4), "per_seed": [round(float(v), 4) for v in d]}
    if len(seeds) < 2:
        return out
    n, sd = len(d), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t975 = float(stats.t.ppf(0.975, n - 1))
    draws = seed_draws(n, REPLICATES)
    diff = (seed_resampled_mean([boots[("a", s)] for s in seeds], draws)
            - seed_resampled_mean([boots[("b", s)] for s in seeds], draws))
    lo, hi = interval(diff)
    out.update({
        "sd": round(sd, 4), "ci95_t": [round(d.mean() - t975 * se, 4), round(d.mean() + t975 * se, 4)],
        "ci95_bootstrap": [round(lo, 4), round(hi, 4)], "wins": int((d > 0).sum()), "losses": int((d < 0).sum()),
        "tost_margin": TOST_MARGIN, "tost_p": round(tost_p(d, TOST_MARGIN), 4),
        "detectable_effect_80": round(detectable_effect(sd, n), 4),
        "seeds_for_80_at_margin": seeds_for_power(sd, TOST_MARGIN)})
    return out


def tost_p(d: np.ndarray, margin: float) -> float:
    """Two one-sided paired t-tests against -margin and +margin; equivalence when p < 0.05."""
    n, se = len(d), float(d.std(ddof=1)) / math.sqrt(len(d))
    if se == 0:
        return 0.0 if abs(d.mean()) < margin else 1.0
    lower = 1 - stats.t.cdf((d.mean() + margin) / se, n - 1)
    upper = stats.t.cdf((d.mean() - margin) / se, n - 1)
    return float(max(lower, upper))


def power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided paired t-test power (noncentral t)."""
    df, nc = n - 1, effect / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha / 2, df)
    # scipy's nct.cdf returns NaN far in the lower tail (nc above about 10); that tail is then
    # below 1e-9, so NaN counts as 0 (a NaN here once stopped detectable_effect's bisection short).
    lower = float(np.nan_to_num(stats.nct.cdf(-crit, df, nc), nan=0.0))
    return float(stats.nct.sf(crit, df, nc)) + lower


def detectable_effect(sd: float, n: int) -> float:
    """The smallest difference a paired t-test over n seeds detects with 80% power."""
    lo, hi = 0.0, 10 * sd + 1e-9
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if power(mid, sd, n) >= 0.8 else (mid, hi)
    return hi


def seeds_for_power(sd: float, effect: float, limit: int = 1000) -> int | None:
    """Seeds a paired t-test needs for 80% power at `effect` (None beyond `limit`)."""
    return next((n for n in range(3, limit) if power(effect, sd, n) >= 0.8), None)


def start_curve(root: Path) -> dict[str, dict[str, float]]:
    """Per seed, the one-shot start's Kendall tau on the reference architectures after every
    epoch, as its checkpoint selection recorded it (the last checkpoint carries all of them)."""
    from stepshot_trainer import checkpoint   # torch: only here

    out = {}
    for seed_dir in sorted(root.glob("s[0-9]*"), key=lambda p: int(p.name[1:])):
        saved = seed_dir / "start-curve.json"     # the committed copy (benchmarks/results/ranking-v3-runs)
        listed = checkpoint.list_checkpoints(seed_dir / "paper" / "oneshot" / "checkpoints")
        if listed:
            state, _ = checkpoint.load(listed[-1][1])
            curve = {str(e): round(t, 4) for e, t in sorted(state["selection"].items()) if t is not None}
            saved.write_text(json.dumps(curve) + "\n")
        if saved.exists():
            out[seed_dir.name[1:]] = json.loads(saved.read_text())
    return out


def build(root: Path) -> dict:
    truth = load_seed_accuracies(GROUND_TRUTH)
    ranked = set(json_codes(root / "ranked-archs.json"))
    truth = {c: v for c, v in truth.items() if c in ranked}
    arms = seed_predictions(root)
    zc = json.loads(ZEROCOST.read_text())
    base = baselines_of(zc, ranked)
    macs = base["MACs"][0]
    if arms:
        for arm in ("one-shot start", "paper (grouped G=2,3)"):
            arms[f"prior-guided: {arm} + MACs (mean rank)"] = {s: rank_mean(p, macs) for s, p in arms[arm].items()}
    out = {"version": 3, "ranked": len(truth),
           "ceiling": {"kendall_tau": round(json.loads(SUMMARY.read_text())["predictor_ceiling_kendall_tau"], 4),
                       "what": "tau a predictor knowing the true accuracies reaches against the 8-seed mean (64 archs)"},
           "baselines": {}, "methods": {}, "primary": None, "secondary": [], "curve": {}}
    for name, per_seed in base.items():
        s = arm_summary(per_seed, truth)
        out["baselines"][name] = {"kendall_tau": s["kendall_tau_mean"], "ci95": s["ci95"],
                                  **({"seeds": s["seeds"]} if len(s["seeds"]) > 1 else {})}
    for name, per_seed in arms.items():
        out["methods"][name] = arm_summary(per_seed, truth)
    if arms:
        a, b = PRIMARY
        out["primary"] = {"a": a, "b": b, "seeds_planned": SEEDS_PLANNED, **paired(arms[a], arms[b], truth)}
        for a, b in ((PRIMARY[0], "one-shot start"), (PRIMARY[1], "one-shot start"),
                     (PRIMARY[0], "MACs"), ("prior-guided: paper (grouped G=2,3) + MACs (mean rank)", "MACs")):
            other = arms.get(b) or {s: macs for s in arms[a]}
            out["secondary"].append({"a": a, "b": b, **paired(arms[a], other, truth)})
        out["curve"] = start_curve(root)
    return out


def json_codes(path: Path) -> list[str]:
    return list(load_codes(path).values())


def markdown(rep: dict) -> str:
    lines = ["# Ranking benchmark v3", "",
             f"Kendall tau on the {rep['ranked']} ranked architectures against the 8-seed mean stand-alone "
             f"accuracies; predictor ceiling {rep['ceiling']['kendall_tau']:.3f}.", "",
             "| predictor | kind | tau | 95% interval | seeds |", "|---|---|---|---|---|"]
    for name, b in sorted(rep["baselines"].items(), key=lambda kv: -kv[1]["kendall_tau"]):
        lines.append(f"| {name} | free baseline | {b['kendall_tau']:.3f} | [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}] "
                     f"| {len(b.get('seeds', [0]))} |")
    for name, m in rep["methods"].items():
        kind = "prior-guided" if name.startswith("prior") else "super-net"
        lines.append(f"| {name} | {kind} | {m['kendall_tau_mean']:.3f} | [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] "
                     f"| {len(m['seeds'])} |")
    p = rep.get("primary")
    if p and "sd" in p:
        lines += ["", "## Primary: " + f"{p['a']} - {p['b']}", "",
                  f"{len(p['seeds'])} of {p['seeds_planned']} planned seeds: mean {p['mean']:+.4f}, sd {p['sd']:.4f}, "
                  f"t 95% [{p['ci95_t'][0]:+.4f}, {p['ci95_t'][1]:+.4f}], bootstrap 95% "
                  f"[{p['ci95_bootstrap'][0]:+.4f}, {p['ci95_bootstrap'][1]:+.4f}], wins/losses {p['wins']}/{p['losses']}, "
                  f"TOST at +-{p['tost_margin']} p = {p['tost_p']:.3f}, detectable with 80% power: "
                  f"{p['detectable_effect_80']:.4f}; seeds for 80% power at {p['tost_margin']}: "
                  f"{p['seeds_for_80_at_margin']}."]
    if rep["secondary"]:
        lines += ["", "## Secondary", "", "| a - b | seeds | mean | t 95% | bootstrap 95% |", "|---|---|---|---|---|"]
        for s in rep["secondary"]:
            if "sd" in s:
                lines.append(f"| {s['a']} - {s['b']} | {len(s['seeds'])} | {s['mean']:+.4f} | "
                             f"[{s['ci95_t'][0]:+.4f}, {s['ci95_t'][1]:+.4f}] | "
                             f"[{s['ci95_bootstrap'][0]:+.4f}, {s['ci95_bootstrap'][1]:+.4f}] |")
    if rep["curve"]:
        lines += ["", "## One-shot start: tau on the 16 reference architectures after each epoch", "",
                  "| seed | " + " | ".join(f"epoch {e}" for e in next(iter(rep["curve"].values()))) + " |",
                  "|---|" + "---|" * len(next(iter(rep["curve"].values())))]
        for seed, row in rep["curve"].items():
            lines.append(f"| {seed} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def plot(rep: dict, out: Path) -> None:
    """Each predictor's tau with its interval; baselines as lines, the ceiling as a band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = rep["methods"]
    fig, ax = plt.subplots(figsize=(12, 0.5 * max(4, len(methods)) + 1.5))
    names = list(methods)
    for i, name in enumerate(names):
        m = methods[name]
        ax.errorbar(m["kendall_tau_mean"], i, xerr=[[m["kendall_tau_mean"] - m["ci95"][0]],
                                                    [m["ci95"][1] - m["kendall_tau_mean"]]], fmt="o", capsize=4)
    ceiling = rep["ceiling"]["kendall_tau"]
    ax.axvspan(ceiling - 0.005, ceiling + 0.005, color="grey", alpha=0.3, label=f"ceiling {ceiling:.3f}")
    for j, (name, b) in enumerate(sorted(rep["baselines"].items(), key=lambda kv: -kv[1]["kendall_tau"])[:4]):
        ax.axvline(b["kendall_tau"], linestyle="--", color=f"C{j + 3}", label=f"{name} {b['kendall_tau']:.3f}")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"Kendall tau, {rep['ranked']} ranked architectures (95%: architectures and seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_report(root: Path, out: Path) -> dict:
    rep = build(root)
    rep["protocol"] = {"design": "benchmarks/ranking_v3.py", "threads": 1, "evaluation":
                       "10,000 test images, BN calibrated on 16 x 256 training images, folded"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rep, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rep))
    if rep["methods"]:
        plot(rep, out.with_suffix(".png"))
    print(markdown(rep))
    return rep
