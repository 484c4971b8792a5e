"""benchmarks/shapes.py: the meta-device count of first-seen convolution shapes is the count a
real forward pass meets, and repeated steps meet nothing new."""
import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "shapes.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("shapes_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_meta_count_equals_a_real_forward(bench):
    meta = bench.new_per_step("resnet48-fmnist", 2, 4, seed=3, random_subnets=2)
    real = bench.new_per_step("resnet48-fmnist", 2, 4, seed=3, random_subnets=2, device="cpu")
    assert meta == real
    counts, calls = meta
    assert counts[0] > 0 and calls > counts[0]      # the max and min nets alone repeat no shape


def test_a_repeated_sandwich_meets_nothing_new(bench, monkeypatch):
    from stepshot_trainer.sampler import SandwichSampler
    step0 = SandwichSampler.sample
    monkeypatch.setattr(SandwichSampler, "sample", lambda self, step: step0(self, 0))   # step 0, again and again
    counts, _ = bench.new_per_step("resnet48-fmnist", 2, 3, seed=0, random_subnets=2)
    assert counts[0] > 0 and counts[1:] == [0, 0]


def test_summary_windows(bench):
    result = bench.summary([5, 0, 2, 0] + [0] * 196, [1, 4, 200, 500])
    assert result["total_distinct"] == 7
    assert [r["steps"] for r in result["by_step"]] == [1, 4, 200]   # windows past the run are left out
    assert result["by_step"][1] == {"steps": 4, "distinct_convolutions": 7, "new_per_100_steps_before": 175.0,
                                    "steps_with_new_shapes_before": 2}
    assert result["by_step"][2]["new_per_100_steps_before"] == 0.0
