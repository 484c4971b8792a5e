"""Partitions for the `partitioned` few-shot mode: cuts, ids, routing, sandwich ends."""
import random

import pytest

from stepshot.partition import Partition, build_tree, cut, route
from stepshot.space import get_space, sample_arch

R48 = get_space("resnet48")
FM = get_space("resnet48-fmnist")


def test_width_cut_makes_contiguous_ascending_buckets():
    a, b = cut(Partition(), R48, "width", 4, 2)
    assert (a.id, b.id) == ("s4w0", "s4w1")
    assert a.widths[3] == (360, 384, 408, 432) and b.widths[3] == (464, 488, 512)
    assert a.widths[:3] == (None,) * 3 and a.depths == (None,) * 4


def test_depth_cut_of_a_child_extends_the_path():
    child = cut(Partition(), R48, "width", 4, 2)[0]
    parts = cut(child, R48, "depth", 3, 3)
    assert [p.id for p in parts] == ["s4w0.s3d0", "s4w0.s3d1", "s4w0.s3d2"]
    assert [p.depths[2] for p in parts] == [(2, 3, 4), (5, 6), (7, 8)]
    assert all(p.widths == child.widths for p in parts)


def test_build_tree_cuts_every_partition_of_each_step():
    levels = build_tree(FM, [{"dimension": "width", "stage": 4, "parts": 2},
                             {"dimension": "depth", "stage": 3, "parts": 2}])
    assert [len(level) for level in levels] == [1, 2, 4]
    assert levels[0][0].id == "root"
    assert "s4w0.s3d1" in [p.id for p in levels[2]]


def test_every_arch_routes_to_exactly_one_leaf():
    leaves = build_tree(FM, [{"dimension": "width", "stage": 1, "parts": 3},
                             {"dimension": "depth", "stage": 4, "parts": 2},
                             {"dimension": "width", "stage": 2, "parts": 3}])[-1]
    rng = random.Random(0)
    hits = set()
    for _ in range(500):
        arch = sample_arch(FM, rng)
        leaf = route(arch, leaves)
        assert leaf.contains(arch)
        hits.add(leaf.id)
    assert len(hits) == len(leaves) == 18


def test_s1_width_cut_constrains_the_stem():
    small, large = cut(Partition(), R48, "width", 1, 2)
    rng = random.Random(3)
    for _ in range(50):
        arch = small.sample(R48, rng)
        assert arch.stem in small.widths[0] == (48, 56)
    assert large.max_arch(R48).stem == 64 and large.min_arch(R48).stem == 64


def test_sandwich_ends_are_inside_and_extremal():
    part = build_tree(R48, [{"dimension": "width", "stage": 4, "parts": 2},
                            {"dimension": "depth", "stage": 3, "parts": 2}])[-1][1]  # s4w0.s3d1
    big, small = part.max_arch(R48), part.min_arch(R48)
    assert part.contains(big) and part.contains(small)
    assert big.depths == (5, 5, 8, 5) and big.stage_out(3) == 432
    assert small.depths == (2, 2, 6, 2) and small.stage_out(3) == 360
    assert big.blocks[3][0][0] == 512 and small.blocks[3][0][0] == 360  # max / min mid widths
    rng = random.Random(4)
    assert all(part.contains(part.sample(R48, rng)) for _ in range(100))


def test_sandwich_ends_with_restricted_ratio_codes():
    part = Partition()
    assert part.min_arch(R48, [1, 2, 3]).stage_out(3) == 464
    assert part.max_arch(R48, [5, 6, 7]).stem == 48


def test_bad_cuts_raise():
    with pytest.raises(ValueError, match="cannot cut 3 width choices"):
        cut(Partition(), R48, "width", 1, 4)
    with pytest.raises(ValueError, match="dimension"):
        cut(Partition(), R48, "height", 1, 2)
    with pytest.raises(ValueError, match="stage must be 1..4"):
        cut(Partition(), R48, "depth", 0, 2)


def test_route_rejects_no_or_several_leaves():
    arch = R48.max_arch
    small = cut(Partition(), R48, "width", 4, 2)[0]
    with pytest.raises(ValueError, match="0 partitions"):
        route(arch, [small])
    with pytest.raises(ValueError, match="2 partitions"):
        route(arch, [Partition(), Partition(id="x")])
