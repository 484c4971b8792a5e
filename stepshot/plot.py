"""The ranking figure: predicted vs true accuracy, and Kendall tau per stage."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from stepshot import correlate as corr


def ranking_plot(results: Sequence[Any], predictions: Path, truth: Path, out: Path) -> Path:
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
    seen: dict[int, tuple[str, float]] = {}
    for r in results:  # one point per evaluated step, labelled by its stages
        if "kendall_tau" in r.metrics:
            label, tau = seen.get(r.step, ("", r.metrics["kendall_tau"]))
            seen[r.step] = ((label + "," if label else "") + r.stage, tau)
    labels = [v[0] if len(v[0]) < 18 else v[0][:15] + "..." for v in seen.values()]
    ax2.plot(range(len(seen)), [v[1] for v in seen.values()], marker="o")
    ax2.set_xticks(range(len(seen)), labels, rotation=30, ha="right")
    ax2.set(ylabel="Kendall tau", title="ranking correlation per stage")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
