"""Architecture sets: stratified coverage of the space and the accepted file formats."""
import collections
import json

import pytest

from stepshot.archsets import challenge_format, load_codes, stratified_archs
from stepshot.correlate import FormatError
from stepshot.space import complexity, get_space


def test_stratified_sample_balances_depths_and_widths():
    sp = get_space("resnet48-fmnist")
    archs = stratified_archs(sp, 70, seed=3)
    assert len({a.encode() for a in archs}) == 70
    for s in range(4):
        depths = collections.Counter(a.depths[s] for a in archs)
        widths = collections.Counter(a.stage_out(s) for a in archs)
        assert set(depths) == set(sp.depth_choices[s])
        assert set(widths) == set(sp.stage_widths(s))
        assert max(depths.values()) - min(depths.values()) <= 1
        assert max(widths.values()) - min(widths.values()) <= 1
    assert [a.encode() for a in archs] == [a.encode() for a in stratified_archs(sp, 70, seed=3)]


def test_joint_sample_spans_min_to_max_net_evenly():
    sp = get_space("resnet48-fmnist")
    lo, hi = complexity(sp.min_arch)[0], complexity(sp.max_arch)[0]
    params = {mode: sorted(complexity(a)[0] for a in stratified_archs(sp, 64, seed=7, mode=mode))
              for mode in ("marginal", "joint")}
    joint = params["joint"]
    assert len(set(joint)) == 64
    # Whole nets from near the min net to near the max net, wider than balancing stages alone.
    assert joint[0] < lo + 0.15 * (hi - lo) and joint[-1] > lo + 0.75 * (hi - lo)
    assert joint[-1] - joint[0] > 1.3 * (params["marginal"][-1] - params["marginal"][0])
    # Evenly: every quarter of the total-depth range holds some architectures.
    total = [sum(a.depths) for a in stratified_archs(sp, 64, seed=7, mode="joint")]
    d_lo, d_hi = sum(sp.min_arch.depths), sum(sp.max_arch.depths)
    quarters = collections.Counter(min(3, int(4 * (t - d_lo) / (d_hi - d_lo + 1e-9))) for t in total)
    assert set(quarters) == {0, 1, 2, 3} and min(quarters.values()) >= 8
    with pytest.raises(ValueError, match="mode"):
        stratified_archs(sp, 4, mode="random")


def test_load_codes_formats(tmp_path):
    codes = [a.encode() for a in stratified_archs(get_space("resnet48-fmnist"), 3)]
    files = {
        "challenge": challenge_format(stratified_archs(get_space("resnet48-fmnist"), 3)),
        "list": codes,
        "list51": [c[1:] for c in codes],
        "accs": {c: 90.0 for c in codes},
    }
    for name, obj in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(obj))
        assert list(load_codes(tmp_path / f"{name}.json").values()) == codes, name
    (tmp_path / "bad.json").write_text('{"a": {"acc": 3}}')
    with pytest.raises(FormatError, match="bad.json"):
        load_codes(tmp_path / "bad.json")


def test_committed_benchmark_set_is_reproducible_from_the_cli(capsys):
    from pathlib import Path

    from stepshot.cli import main

    assert main(["arch", "sample", "--space", "resnet48-fmnist", "-n", "64", "--seed", "2026",
                 "--stratified", "joint", "--challenge"]) == 0
    committed = Path(__file__).resolve().parents[2] / "benchmarks" / "archs" / "resnet48-fmnist-64.json"
    assert json.loads(capsys.readouterr().out) == json.loads(committed.read_text())
