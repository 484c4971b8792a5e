"""`stepshot run`'s board: intervals, the ceiling and the free baselines beside the super-net."""
import json
from pathlib import Path

from stepshot import correlate as corr, scoreboard
from stepshot.workdir import evaluations_file

ROOT = Path(__file__).resolve().parents[2]
TRUTH = ROOT / "benchmarks" / "groundtruth" / "resnet48-fmnist.json"
SUMMARY = ROOT / "benchmarks" / "groundtruth" / "resnet48-fmnist.summary.json"


def test_ceiling_is_the_ground_truths_recorded_one():
    recorded = json.loads(SUMMARY.read_text())["predictor_ceiling_kendall_tau"]
    assert abs(scoreboard.ceiling(TRUTH) - recorded) < 1e-4


def test_interval_brackets_the_tau_and_single_seed_truth_has_no_ceiling(tmp_path):
    truth = corr.load_accuracies(TRUTH)
    noisy = {c: a + (0.3 if i % 3 == 0 else -0.2) for i, (c, a) in enumerate(sorted(truth.items()))}
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps(noisy))
    lo, hi = scoreboard.tau_interval(pred, TRUTH)
    tau = corr.correlate(noisy, truth)["kendall_tau"]
    assert lo < tau < hi and hi - lo < 0.3
    single = tmp_path / "gt1.json"
    single.write_text(json.dumps(truth))
    assert scoreboard.ceiling(single) is None


def test_board_reads_the_evaluation_report(tmp_path):
    pred = tmp_path / "step2-predictions.json"
    pred.write_text("{}")
    evaluations_file(pred).write_text(json.dumps({"evaluations": {"step2-predictions": {
        "baselines": {"macs": {"kendall_tau": 0.76}, "naswot": {"kendall_tau": None}},
        "prior_guided": {"proxy": "macs", "weight": 0.5, "kendall_tau": 0.8}}}}))
    rows = scoreboard.free_rows(pred)
    assert rows == {"baselines": {"macs": 0.76}, "prior_guided": {"proxy": "macs", "weight": 0.5, "kendall_tau": 0.8}}
    board = scoreboard.lines({"kendall_tau": 0.7, "ci95": [0.6, 0.8], **rows}, 0.825)
    assert board[0].startswith("super-net     tau 0.700  [0.600, 0.800]")
    assert any("prior-guided  tau 0.800" in line for line in board)
    assert any(line.startswith("macs") for line in board) and board[-1].startswith("ceiling       tau 0.825")
