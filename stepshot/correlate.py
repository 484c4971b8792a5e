"""Ranking correlation between predicted and ground-truth accuracies (torch-free).

Both inputs are matched on the architecture code. Accepted formats:
- challenge format `{"archN": {"arch": CODE, "acc": ACC, ...}}`,
- a plain map `{CODE: ACC}`,
- a list of `{"arch": CODE, "acc": ACC}` objects.

Metrics are exactly what scipy.stats computes (Kendall tau-b, Spearman rho,
Pearson r) on the matched pairs; `precision_at_k["top10%"]` is the fraction of
the true top-k (k = ceil(10% of n)) found among the predicted top-k. Codes
present on only one side are reported in `only_in_pred` / `only_in_truth`.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from stepshot.errors import StepshotError

TOP_FRACTIONS = (0.05, 0.10, 0.20, 0.50)


class FormatError(StepshotError, ValueError):
    """The file is not one of the accepted accuracy formats."""


def normalize_code(code: str) -> str:
    """The 52-char form: a 51-char official code gets the leading resolution digit '1'."""
    code = str(code).strip()
    return "1" + code if len(code) == 51 else code


def accuracies(obj: Any, source: str = "<input>") -> dict[str, float]:
    """{code: acc} from any accepted format."""
    if isinstance(obj, list):
        items = [(e.get("arch"), e.get("acc")) if isinstance(e, dict) else (None, None) for e in obj]
    elif isinstance(obj, dict):
        items = [(v.get("arch"), v.get("acc")) if isinstance(v, dict) else (k, v) for k, v in obj.items()]
    else:
        raise FormatError(f"{source}: expected a JSON object or list, got {type(obj).__name__}")
    out: dict[str, float] = {}
    for code, acc in items:
        if not isinstance(code, str) or isinstance(acc, bool) or not isinstance(acc, (int, float)):
            raise FormatError(f"{source}: every entry needs an 'arch' code and a numeric 'acc'")
        out[normalize_code(code)] = float(acc)
    return out


def seed_accuracies(obj: Any, source: str = "<input>") -> dict[str, list[float]]:
    """{code: per-seed accuracies} from a challenge-format ground truth; entries without
    `accs` count as one seed (their `acc`)."""
    if not isinstance(obj, dict):
        raise FormatError(f"{source}: expected a challenge-format JSON object")
    means = accuracies(obj, source)
    out: dict[str, list[float]] = {}
    for entry in obj.values():
        code = normalize_code(entry["arch"]) if isinstance(entry, dict) else None
        accs = entry.get("accs") if isinstance(entry, dict) else None
        if code is None or accs is None:
            continue
        if not accs or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in accs):
            raise FormatError(f"{source}: 'accs' of {code} must be a non-empty list of numbers")
        out[code] = [float(a) for a in accs]
    return {code: out.get(code, [acc]) for code, acc in means.items()}


def load_seed_accuracies(path: str | Path) -> dict[str, list[float]]:
    return seed_accuracies(read_json(path), str(path))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read JSON: {exc}") from exc


def load_accuracies(path: str | Path) -> dict[str, float]:
    return accuracies(read_json(path), str(path))


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def precision_at_k(pred: list[float], truth: list[float], k: int) -> float | None:
    """Fraction of the true top-k among the predicted top-k (ties broken by input order)."""
    if not 0 < k <= len(pred):
        return None
    top = lambda vals: set(sorted(range(len(vals)), key=lambda i: (-vals[i], i))[:k])  # noqa: E731
    return len(top(pred) & top(truth)) / k


def correlate(pred: dict[str, float], truth: dict[str, float]) -> dict:
    try:
        from scipy import stats  # lazy: keeps `stepshot --help` fast and the operator free of scipy
    except ImportError as exc:   # a core-only install (the operator image): say what is missing
        raise StepshotError("ranking correlation needs scipy: pip install 'stepshot[analysis]'") from exc

    pred = {normalize_code(k): v for k, v in pred.items()}
    truth = {normalize_code(k): v for k, v in truth.items()}
    codes = sorted(pred.keys() & truth.keys())
    p = [pred[c] for c in codes]
    t = [truth[c] for c in codes]
    n = len(codes)
    result: dict[str, Any] = {"n": n, "kendall_tau": None, "spearman": None, "pearson": None}
    if n >= 2 and len(set(p)) > 1 and len(set(t)) > 1:  # scipy returns nan (and warns) otherwise
        result["kendall_tau"] = _finite(stats.kendalltau(p, t).statistic)
        result["spearman"] = _finite(stats.spearmanr(p, t).statistic)
        result["pearson"] = _finite(stats.pearsonr(p, t).statistic)
    result["precision_at_k"] = {
        f"top{round(f * 100)}%": precision_at_k(p, t, max(1, math.ceil(f * n))) for f in TOP_FRACTIONS
    }
    result["only_in_pred"] = sorted(pred.keys() - truth.keys())
    result["only_in_truth"] = sorted(truth.keys() - pred.keys())
    return result


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="predicted accuracies (JSON)")
    parser.add_argument("--truth", required=True, type=Path, help="ground-truth accuracies (JSON)")
    parser.set_defaults(func=_cmd_correlate)


def _cmd_correlate(args: argparse.Namespace) -> int:
    pred, truth = load_accuracies(args.pred), load_accuracies(args.truth)
    print(json.dumps(correlate(pred, truth)))
    return 0
