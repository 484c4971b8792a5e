"""`stepshot groundtruth`: stand-alone training, resumable, with its noise ceiling."""
import json

import pytest
from scipy import stats

from stepshot.archsets import challenge_format, stratified_archs
from stepshot_trainer import groundtruth
from trainer_helpers import FMNIST, needs_fmnist


@needs_fmnist
def test_ground_truth_is_resumable_and_reports_the_seed_ceiling(tmp_path):
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps(challenge_format(stratified_archs("resnet48-fmnist", 3, seed=5))))
    out = tmp_path / "gt.json"
    recipe = groundtruth.Recipe(space="resnet48-fmnist", data=str(FMNIST), epochs=1, train_limit=128,
                                eval_images=200, batch_size=64)
    summary = groundtruth.run(recipe, archs, out, [0, 1], jobs=2, progress=False)
    gt = json.loads(out.read_text())
    assert len(gt) == 3
    for entry in gt.values():
        assert len(entry["accs"]) == 2 and entry["acc"] == sum(entry["accs"]) / 2
        assert entry["params"] > 0 and entry["macs"] > entry["params"]
    seed0 = [e["accs"][0] for e in gt.values()]
    seed1 = [e["accs"][1] for e in gt.values()]
    expected = stats.kendalltau(seed0, seed1)[0]
    assert summary["seed_kendall_tau"] == pytest.approx(expected, nan_ok=True)

    # A killed run lost one result: only that one is trained again, the rest are reused.
    runs = sorted(out.with_suffix(".runs").glob("*.json"))
    assert len(runs) == 6
    kept = {p: p.stat().st_mtime_ns for p in runs[1:]}
    runs[0].unlink()
    groundtruth.run(recipe, archs, out, [0, 1], jobs=1, progress=False)
    assert runs[0].exists()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert json.loads((tmp_path / "gt.summary.json").read_text())["n"] == 3
