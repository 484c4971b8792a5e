"""stepshot.correlate against scipy.stats as the reference."""
import json
import random
import subprocess
import sys

import pytest
from scipy import stats

from stepshot import correlate as corr


def _codes(n):
    return [f"1{i:051d}" for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_with_ties(seed):
    rng = random.Random(seed)
    codes = _codes(60)
    truth = {c: round(rng.uniform(60, 90), 0) for c in codes}       # rounding makes ties
    pred = {c: round(truth[c] + rng.gauss(0, 5), 0) for c in codes}
    r = corr.correlate(pred, truth)
    p, t = [pred[c] for c in sorted(codes)], [truth[c] for c in sorted(codes)]
    assert r["n"] == 60
    assert r["kendall_tau"] == pytest.approx(stats.kendalltau(p, t).statistic, abs=1e-12)
    assert r["spearman"] == pytest.approx(stats.spearmanr(p, t).statistic, abs=1e-12)
    assert r["pearson"] == pytest.approx(stats.pearsonr(p, t).statistic, abs=1e-12)


def test_precision_at_k_and_missing_reported():
    codes = _codes(20)
    truth = {c: float(i) for i, c in enumerate(codes)}
    pred = {c: float(i) for i, c in enumerate(codes[:18])}
    pred["1" + "9" * 51] = 1.0
    r = corr.correlate(pred, truth)
    assert r["n"] == 18
    assert r["only_in_pred"] == ["1" + "9" * 51]
    assert r["only_in_truth"] == codes[18:]
    assert r["precision_at_k"]["top10%"] == 1.0          # identical ranking on the matched 18
    assert corr.precision_at_k([3, 2, 1, 0], [0, 1, 2, 3], 2) == 0.0
    assert corr.precision_at_k([3, 2, 1, 0], [3, 1, 2, 0], 2) == 0.5


def test_formats_and_51_char_codes():
    code = "1" + "2" * 51
    challenge = {"arch1": {"arch": code, "acc": 70.0}}
    assert corr.accuracies(challenge) == {code: 70.0}
    assert corr.accuracies({code[1:]: 70}) == {code: 70.0}
    assert corr.accuracies([{"arch": code, "acc": 70}]) == {code: 70.0}
    with pytest.raises(corr.FormatError):
        corr.accuracies({"arch1": {"arch": code}})


def test_cli_prints_one_json_object_and_exit_2(tmp_path):
    codes = _codes(10)
    (tmp_path / "p.json").write_text(json.dumps({f"arch{i}": {"arch": c, "acc": i} for i, c in enumerate(codes)}))
    (tmp_path / "t.json").write_text(json.dumps({c: 10 - i for i, c in enumerate(codes)}))
    (tmp_path / "bad.json").write_text("{not json")
    run = lambda *a: subprocess.run([sys.executable, "-m", "stepshot.cli", "correlate", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=tmp_path)
    ok = run("--pred", "p.json", "--truth", "t.json")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["n"] == 10 and out["kendall_tau"] == pytest.approx(-1.0)
    bad = run("--pred", "bad.json", "--truth", "t.json")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "bad.json" in bad.stderr
    missing = run("--pred", "nope.json", "--truth", "t.json")
    assert missing.returncode == 2 and "nope.json" in missing.stderr
