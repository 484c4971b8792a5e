"""The one-shot super-net: slicing, extraction equivalence, BN, dropout, resizing, sampler."""
import random

import pytest
import torch

from stepshot.partition import cut, Partition
from stepshot.space import complexity, get_space, parse_arch, sample_arch
from stepshot_trainer.sampler import SandwichSampler
from stepshot_trainer.static import build_static
from stepshot_trainer.supernet import SuperNet
from trainer_helpers import randomize_bn

torch.set_num_threads(1)
# resnet48 runs at 64 px (its 224 math is the same code path) to keep the test cheap
FM = get_space("resnet48-fmnist")
CASES = [("resnet48-fmnist", 28, (16, 20, 24, 28)), ("resnet48", 64, (40, 48, 64))]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    name, size, resolutions = request.param
    torch.manual_seed(0)
    net = SuperNet(get_space(name), zero_init_last_bn=False).double()
    randomize_bn(net)
    return net, get_space(name), size, resolutions


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_extract_equals_supernet(case, mode):
    net, space, size, resolutions = case
    net.train(mode == "train")
    rng = random.Random(1)
    x = torch.randn(2, space.in_channels, size, size, dtype=torch.double)
    archs = [space.min_arch, sample_arch(space, rng), sample_arch(space, rng)]
    if space.name == "resnet48-fmnist":  # the 34M-param resnet48 max net is slow to build in float64
        archs += [space.max_arch, sample_arch(space, rng)]
    for arch in archs:
        resolution = rng.choice(resolutions)
        net.set_active(arch, resolution)
        static = net.extract(arch, resolution)
        assert static.training == net.training
        with torch.no_grad():
            torch.testing.assert_close(static(x), net(x), atol=1e-5, rtol=0)


def test_extract_has_the_counted_parameters(case):
    net, space, _, _ = case
    arch = sample_arch(space, random.Random(2))
    static = net.extract(arch)
    assert sum(p.numel() for p in static.parameters()) == complexity(arch)[0]


def test_bn_trains_on_batch_stats_without_touching_running_stats():
    torch.manual_seed(0)
    net = SuperNet(FM).train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net(torch.randn(4, 1, 28, 28)).sum().backward()
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_gradients_reach_only_the_active_slices():
    net = SuperNet(FM, zero_init_last_bn=False).train()
    space = net.space
    arch = space.min_arch
    net.set_active(arch, space.min_resolution)
    net(torch.randn(4, 1, 28, 28)).sum().backward()
    conv1 = net.stages[1][0][0].conv1  # S2 block 1: in = stem-side max, out = mid
    mid, cin = arch.blocks[1][0][0], arch.stage_out(0)
    assert conv1.weight.grad[:mid, :cin].abs().sum() > 0
    assert conv1.weight.grad[mid:].abs().sum() == 0 and conv1.weight.grad[:, cin:].abs().sum() == 0
    assert net.stages[1][0][2].conv1.weight.grad is None  # block 3 is beyond depth 2


def test_zero_init_last_bn_is_configurable():
    zeroed, plain = SuperNet(FM), SuperNet(FM, zero_init_last_bn=False)
    assert all(not b.bn2.weight.any() for stage in zeroed.stages for b in stage[0])
    assert all(b.bn1.weight.all() for stage in zeroed.stages for b in stage[0])
    assert all(b.bn2.weight.all() for stage in plain.stages for b in stage[0])


def test_projection_shortcuts_only_where_stride_two():
    for name in ("resnet48", "resnet48-fmnist"):
        space = get_space(name)
        has = [[space.has_projection(s, b) for b in range(space.max_depths[s])] for s in range(4)]
        assert [row[0] for row in has] == [False, True, True, True]
        assert not any(any(row[1:]) for row in has)


def test_dropout_only_on_the_max_net():
    torch.manual_seed(0)
    net = SuperNet(FM, dropout=0.5, zero_init_last_bn=False).train()
    x = torch.randn(4, 1, 28, 28)
    assert not torch.equal(net(x), net(x))
    net.set_active(net.space.min_arch)
    assert torch.equal(net(x), net(x))
    net.set_active(net.space.min_arch, dropout=True)
    assert not torch.equal(net(x), net(x))


def test_input_is_resized_inside_the_model():
    torch.manual_seed(0)
    net = SuperNet(FM).eval()
    x = torch.randn(2, 1, 28, 28)
    small = torch.nn.functional.interpolate(x, size=(16, 16), mode="bicubic", align_corners=True)
    net.set_active(net.space.max_arch, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(small))
    net.set_active(net.space.max_arch)  # default: the space's resolution
    assert net.resolution == 28


def test_set_active_rejects_another_space():
    net = SuperNet(FM)
    with pytest.raises(ValueError, match="resnet48"):
        net.set_active(get_space("resnet48").max_arch)


def test_build_static_trains():
    arch = get_space("resnet48-fmnist").min_arch
    net = build_static(FM, arch, zero_init_last_bn=True)
    assert all(not b.bn2.weight.any() for stage in net.stages for b in stage)
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)


def test_sandwich_sampler_is_a_pure_function_of_seed_and_step():
    space = get_space("resnet48-fmnist")
    a, b = SandwichSampler(space, seed=7), SandwichSampler(space, seed=7)
    assert a.sample(3) == b.sample(3)
    assert a.sample(3) != a.sample(4) and a.sample(3) != SandwichSampler(space, seed=8).sample(3)
    members = a.sample(0)
    assert [m for m, _, _ in members] == ["max", "random", "random", "min"]
    assert members[0][1:] == (space.max_arch, 28) and members[-1][1:] == (space.min_arch, 16)
    assert all(r in space.train_resolutions for _, _, r in members)


def test_sandwich_sampler_in_a_partition_with_pool_ratio_codes():
    space = get_space("resnet48")
    part = cut(Partition(), space, "width", 4, 2)[1]  # S4 widths 464..512
    sampler = SandwichSampler(space, partition=part, random_subnets=3, ratio_codes=[1, 2, 3], seed=1)
    for step in range(20):
        members = sampler.sample(step)
        assert len(members) == 5
        assert all(part.contains(arch) for _, arch, _ in members)
    assert sampler.min_arch == parse_arch("1" "2222" "3" + "33" * 2 + "00" * 3 + "33" * 2 + "00" * 3
                                          + "33" * 2 + "00" * 6 + "33" * 2 + "00" * 3, space)


def test_a_block_kind_the_trainer_does_not_build_fails_loudly(monkeypatch):
    import dataclasses

    from stepshot.space import family

    monkeypatch.setattr(family, "BLOCK_KINDS", ("basic", "bottleneck"))
    bottleneck = dataclasses.replace(FM, name="fm-bottleneck", block="bottleneck")
    with pytest.raises(NotImplementedError, match="supernet has no 'bottleneck' block"):
        SuperNet(bottleneck)
    with pytest.raises(NotImplementedError, match="static has no 'bottleneck' block"):
        build_static(bottleneck, bottleneck.min_arch)
