"""The ranking figure: predicted vs true accuracy, and Kendall tau per stage."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from stepshot import correlate as corr


def ranking_plot(results: Sequence[Any], predictions: Path, truth: Path, out: Path,
                 baselines: dict[str, float] | None = None, ceiling: float | None = None) -> Path:
    """Left: predicted vs true accuracy. Right: tau per evaluated step with its 95% interval,
    the free baselines as dashed lines and the predictor ceiling as a band, on a fixed scale
    (at least 0.3 of tau tall), so a 0.01 change does not fill the panel."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training hosts
    import matplotlib.pyplot as plt

    pred, true = corr.load_accuracies(predictions), corr.load_accuracies(truth)
    common = sorted(set(pred) & set(true))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.scatter([true[c] for c in common], [pred[c] for c in common], s=14, alpha=0.8)
    final = corr.correlate(pred, true)
    ax1.set(xlabel="stand-alone accuracy (%)", ylabel="inherited-weight accuracy (%)",
            title=f"final: Kendall tau {final['kendall_tau']:.3f}, n={final['n']}")
    ax1.grid(alpha=0.3)
    seen: dict[int, tuple[str, float, Any]] = {}
    for r in results:  # one point per evaluated step, labelled by its stages
        if r.metrics.get("kendall_tau") is not None:
            label, tau, ci = seen.get(r.step, ("", r.metrics["kendall_tau"], r.metrics.get("ci95")))
            seen[r.step] = ((label + "," if label else "") + r.stage, tau, ci)
    labels = [v[0] if len(v[0]) < 18 else v[0][:15] + "..." for v in seen.values()]
    taus = [v[1] for v in seen.values()]
    errs = [[t - (v[2] or (t, t))[0] for t, v in zip(taus, seen.values())],
            [(v[2] or (t, t))[1] - t for t, v in zip(taus, seen.values())]]
    ax2.errorbar(range(len(seen)), taus, yerr=errs, marker="o", capsize=4, label="super-net (95%, architectures)")
    shown = list(taus)
    for i, (name, tau) in enumerate(sorted((baselines or {}).items(), key=lambda kv: -kv[1])[:4]):
        ax2.axhline(tau, linestyle="--", color=f"C{i + 1}", label=f"{name} {tau:.3f}")
        shown.append(tau)
    if ceiling is not None:
        ax2.axhspan(ceiling - 0.005, ceiling + 0.005, color="grey", alpha=0.4, label=f"ceiling {ceiling:.3f}")
        shown.append(ceiling)
    lo, hi = min(shown + [v[2][0] for v in seen.values() if v[2]]), max(shown)
    mid = (lo + hi) / 2
    half = max(0.15, (hi - lo) / 2 + 0.03)
    ax2.set_ylim(max(-1.0, mid - half), min(1.0, mid + half))
    ax2.set_xticks(range(len(seen)), labels, rotation=30, ha="right")
    ax2.set(ylabel="Kendall tau", title="ranking correlation per stage")
    ax2.legend(fontsize=7, loc="lower right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
