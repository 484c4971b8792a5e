"""Grouped few-shot super-nets (spec §3.2-3.4): caps, routing, function-preserving splits, lr."""
import random

import pytest
import torch

from stepshot.space import get_space, parse_arch, sample_arch
from stepshot_trainer.grouped import GroupedSuperNet, build_model, group_caps, lr_factors
from stepshot_trainer.supernet import route_caps
from stepshot_trainer.supernet import SuperNet
from trainer_helpers import randomize_bn

torch.set_num_threads(1)
R48 = get_space("resnet48")
FM = get_space("resnet48-fmnist")


def test_group_caps_follow_the_spec_table():
    table = {  # spec §3.2: G -> caps of S1..S4
        1: ((64,), (128,), (256,), (512,)),
        2: ((56, 64), (120, 128), (240, 256), (488, 512)),
        3: ((48, 56, 64), (112, 120, 128), (232, 240, 256), (464, 488, 512)),
        4: ((48, 56, 64), (104, 112, 120, 128), (216, 232, 240, 256), (432, 464, 488, 512)),
    }
    for g, caps in table.items():
        assert tuple(group_caps(R48, s, g) for s in range(4)) == caps
    assert [len(group_caps(R48, s, 7)) for s in range(4)] == [3, 6, 7, 7]  # Figure 1: saturation
    assert group_caps(R48, 1, 6) == group_caps(R48, 1, 7) == (88, 96, 104, 112, 120, 128)
    assert group_caps(R48, 3, 6)[0] == 384


def route(space, arch, groups):
    return route_caps(tuple(group_caps(space, s, groups) for s in range(4)), arch)


def test_route_is_first_cap_at_least_the_width():
    arch = parse_arch("1252233313000000223212122253130000000000006515000000", R48)  # 56/120/232/408
    assert route(R48, arch, 1) == (0, 0, 0, 0)
    assert route(R48, arch, 2) == (0, 0, 0, 0)
    assert route(R48, arch, 3) == (1, 1, 0, 0)
    assert route(R48, arch, 6) == (1, 4, 3, 1)  # spec §3.2: 408 is its own group at G=6


def test_lr_factors_follow_the_code_table():
    def special(g):
        return [{caps[i]: f for i, f in enumerate(fs) if f != 1.0}
                for caps, fs in zip((group_caps(R48, s, g) for s in range(4)), lr_factors(R48, g))]
    assert special(2) == [{64: 2.0}, {128: 5.0}, {256: 6.0}, {512: 6.0}]
    assert special(3) == [{}, {112: 1 / 4}, {232: 1 / 5}, {464: 1 / 5}]
    assert special(4) == [{}, {104: 1 / 3}, {216: 1 / 4}, {432: 1 / 4}]
    assert special(5) == [{}, {96: 1 / 2}, {208: 1 / 3}, {408: 1 / 3}]
    assert special(6) == [{}, {}, {192: 1 / 2}, {384: 1 / 2}]
    assert special(7) == [{}, {}, {}, {}]


@pytest.fixture(scope="module")
def chain():
    """resnet48-fmnist one-shot net and its split chain G = 2..7 (float64, eval mode)."""
    torch.manual_seed(0)
    net = SuperNet(FM, zero_init_last_bn=False).double()
    randomize_bn(net)
    nets = [net.eval()]
    nets.append(GroupedSuperNet.from_supernet(nets[-1], 2))
    for g in range(3, 8):
        nets.append(GroupedSuperNet.from_grouped(nets[-1], g))
    return nets


def _archs(space, n, seed):
    rng = random.Random(seed)
    return [(space.max_arch, space.resolution), (space.min_arch, space.min_resolution)] + [
        (sample_arch(space, rng), rng.choice(space.train_resolutions)) for _ in range(n)]


def test_every_split_is_function_preserving(chain):
    x = torch.randn(3, 1, 28, 28, dtype=torch.double)
    for arch, resolution in _archs(FM, 12, seed=1):
        outs = []
        for net in chain:
            net.set_active(arch, resolution)
            with torch.no_grad():
                outs.append(net(x))
        for g, out in enumerate(outs[1:], start=2):
            torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=0, msg=f"G={g} {arch.encode()}")


def test_split_preserves_batch_stat_mode_too(chain):
    parent, child = chain[0], chain[1]
    x = torch.randn(4, 1, 28, 28, dtype=torch.double)
    try:
        for arch, resolution in _archs(FM, 5, seed=2):
            for net in (parent, child):
                net.train().set_active(arch, resolution)
            with torch.no_grad():
                torch.testing.assert_close(child(x), parent(x), atol=1e-5, rtol=0)
    finally:
        parent.eval(), child.eval()


def test_grouped_extract_equals_forward(chain):
    net = chain[3]  # G = 4
    x = torch.randn(2, 1, 28, 28, dtype=torch.double)
    for arch, resolution in _archs(FM, 8, seed=3):
        net.set_active(arch, resolution)
        with torch.no_grad():
            torch.testing.assert_close(net.extract(arch, resolution)(x), net(x), atol=1e-5, rtol=0)


def test_resnet48_split_is_function_preserving():
    torch.manual_seed(0)
    net = SuperNet(R48, zero_init_last_bn=False)
    randomize_bn(net)
    net.eval()
    grouped = GroupedSuperNet.from_supernet(net, 2).eval()
    x = torch.randn(2, 3, 64, 64)
    rng = random.Random(4)
    for arch in (R48.min_arch, sample_arch(R48, rng), sample_arch(R48, rng)):
        for m in (net, grouped):
            m.set_active(arch, 48)
        with torch.no_grad():
            torch.testing.assert_close(grouped(x), net(x), atol=1e-5, rtol=1e-5)


def test_group_shapes_and_heads(chain):
    g7 = chain[-1]
    assert [len(stage) for stage in g7.stages] == [3, 6, 7, 7] and len(g7.heads) == 7
    assert [h.in_features for h in g7.heads] == list(FM.stage_widths(3))
    s2 = g7.stages[1]
    assert [blocks[1].conv1.in_channels for blocks in s2] == list(FM.stage_widths(1))
    assert all(blocks[0].conv1.in_channels == 8 for blocks in s2)  # previous stage's max


def test_param_groups_cover_every_parameter_once_with_scaled_lr():
    net = GroupedSuperNet(FM, 3)
    groups = net.param_groups(0.002, 1e-5)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(net.parameters()))
    by_id = {id(p): g for g in groups for p in g["params"]}
    catch_all = by_id[id(net.stages[3][0][0].conv1.weight)]  # S4 catch-all 58: 45..58 -> 5 widths
    assert catch_all["lr"] == pytest.approx(0.002 / 5) and catch_all["lr_scale"] == pytest.approx(1 / 5)
    assert by_id[id(net.heads[0].weight)]["lr_scale"] == pytest.approx(1 / 5)
    assert by_id[id(net.stages[3][1][4].conv2.weight)]["lr"] == 0.002
    assert by_id[id(net.stages[3][0][0].bn1.weight)]["weight_decay"] == 0.0
    assert by_id[id(net.heads[0].bias)]["weight_decay"] == 0.0
    assert catch_all["weight_decay"] == 1e-5
    flat = net.param_groups(0.002, 1e-5, lr_scaling=False)
    assert {g["lr"] for g in flat} == {0.002}


def test_invalid_splits_and_build_model(chain):
    with pytest.raises(ValueError, match="cannot split"):
        GroupedSuperNet.from_grouped(chain[2], 3)
    with pytest.raises(ValueError, match="groups >= 2"):
        GroupedSuperNet(FM, 1)
    assert type(build_model(FM, None)) is SuperNet and type(build_model(FM, 1)) is SuperNet
    model = build_model(FM, 5)
    assert isinstance(model, GroupedSuperNet) and model.groups == 5
