"""benchmarks/data.py at tiny sizes on the CPU: every phase of its GPU run (pipeline sweep, the
trainer's step fed by the pipeline vs in memory, streaming evaluation) runs and reports."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("PIL")
PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "data.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("data_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its process pool pickles functions by module name
    spec.loader.exec_module(module)
    return module


def test_synthetic_image_folder_is_built_once_per_key(bench, tmp_path):
    root, info = bench.image_folder(tmp_path, 20, 6, 3, 4)
    files = sorted(p.relative_to(root) for p in (root / "train").rglob("*.jpg"))
    assert len(files) == 20 and len({p.parent for p in files}) == 4 and len(list((root / "val").rglob("*.jpg"))) == 6
    assert info["count"] == 20 and info["distinct_jpegs"] == 3 and 300 < info["mean_width"] < 700
    stamp = (root / "info.json").stat().st_mtime_ns
    assert bench.image_folder(tmp_path, 20, 6, 3, 4) == (root, info)
    assert (root / "info.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_every_phase_runs_on_the_cpu_at_tiny_sizes(bench, tmp_path, monkeypatch):
    out = tmp_path / "data.json"
    monkeypatch.setattr(sys, "argv", [
        "data.py", "--device", "cpu", "--workers", "1", "2", "--images", "24", "--eval-images", "4",
        "--distinct", "3", "--classes", "3", "--batch-size", "2", "--seconds", "0.2", "--rounds", "3", "--warm-steps", "1",
        "--steps", "1", "--eval-archs", "1", "--calibration-batches", "1", "--cache", str(tmp_path), "--out", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    assert result["decode_limit_images_per_s_per_core"] > 0 and result["images"]["count"] == 24
    assert [p["workers"] for p in result["pipeline"]] == [1, 2] and all(p["images_per_s"] > 0 for p in result["pipeline"])
    assert all(p["decoders_at_once_images_per_s"] > 0 for p in result["pipeline"])
    for p in result["pipeline"]:            # each figure is the median of its rounds
        assert len(p["rounds"]) == 3
        for key in ("images_per_s", "decode_limit_just_before", "vs_limit_x_workers", "vs_decoders_at_once"):
            assert p[key] == sorted(r[key] for r in p["rounds"])[1]
    step = result["train_step"]
    assert step["workers"] == 2 and step["pipeline_images_per_s"] > 0 and step["in_memory_images_per_s"] > 0
    assert step["first_sight_in_memory_images_per_s"] > 0
    evaluation = result["evaluation"]
    assert evaluation["subnets"] == 1 and evaluation["eval_images"] == 4
    assert evaluation["cached_host_bytes"] == (4 + 2) * 3 * 224 * 224     # decoded once, kept on the host
    assert result["device"] == "cpu" and result["cpu_model"]
