"""Search spaces and arch codes (spec §1): widths, parsing, validation messages, sampling."""
import dataclasses
import random

import pytest

from stepshot.partition import build_tree, route
from stepshot.space import (CODES, SPACES, Arch, ArchError, SearchSpace, complexity, extreme_arch, get_space,
                            make_divisible, parse_arch, register_space, sample_arch)

R48 = get_space("resnet48")
FM = get_space("resnet48-fmnist")
EXAMPLE = "1" "2522" "3" "3313000000" "2232121222" "5313000000000000" "6515000000"  # spec §1.2


def test_resnet48_widths_match_spec_table():
    table = {  # spec §1.1, codes 1..7 -> channels
        64: (64, 64, 56, 56, 48, 48, 48),
        128: (128, 120, 112, 112, 104, 96, 88),
        256: (256, 240, 232, 216, 208, 192, 176),
        512: (512, 488, 464, 432, 408, 384, 360),
    }
    for base, widths in table.items():
        assert tuple(R48.width(base, c) for c in CODES) == widths
    assert [len(R48.stage_widths(s)) for s in range(4)] == [3, 6, 7, 7]
    assert R48.stem_widths() == R48.stage_widths(0) == (48, 56, 64)


def test_make_divisible_rule():
    assert make_divisible(60.8) == 64
    assert make_divisible(44.8) == 48
    assert make_divisible(10) == 16  # 8 would be < 0.9 * 10
    assert make_divisible(3) == 8   # min_value defaults to the divisor
    assert make_divisible(13, 1) == 13


def test_fmnist_space_keeps_distinct_widths():
    counts = [len(FM.stage_widths(s)) for s in range(4)]
    assert counts == [3, 6, 7, 7]  # same collision pattern as resnet48
    assert FM.stage_widths(3) == (45, 48, 51, 54, 58, 61, 64)
    assert FM.min_resolution == min(FM.train_resolutions) and FM.resolution == max(FM.train_resolutions)


def test_spec_example_decodes():
    arch = parse_arch(EXAMPLE, R48)
    assert arch.depths == (2, 5, 2, 2) and arch.stem == 56
    assert arch.blocks[0] == ((56, 56), (64, 56))
    assert {out for _, out in arch.blocks[1]} == {120} and len(arch.blocks[1]) == 5
    assert arch.blocks[2] == ((208, 232), (256, 232))
    # code 6 is ratio 0.75 -> 384 by the spec's own table (§1.2's prose says 360 there)
    assert arch.blocks[3] == ((384, 408), (512, 408))
    assert [arch.stage_out(s) for s in range(4)] == [56, 120, 232, 408]


def test_51_and_52_chars_round_trip():
    arch = parse_arch(EXAMPLE[1:], R48)
    assert arch == parse_arch(EXAMPLE, R48)
    assert arch.encode() == EXAMPLE
    rng = random.Random(0)
    for space in SPACES.values():
        for _ in range(200):
            a = sample_arch(space, rng)
            assert parse_arch(a.encode(), space) == a


def test_max_and_min_arch():
    assert R48.max_arch.encode() == "1" + "5585" + "1" + "11" * 23
    assert R48.min_arch.encode() == "1" + "2222" + "7" + "77" * 2 + "00" * 3 + "77" * 2 + "00" * 3 \
        + "77" * 2 + "00" * 6 + "77" * 2 + "00" * 3
    assert R48.min_arch.blocks[3] == ((360, 360), (360, 360))


def _replace(code: str, pos: int, value: str) -> str:
    return code[:pos] + value + code[pos + 1:]


@pytest.mark.parametrize("pos, value, expected", [
    (3, "9", "position 3 (depth of stage 3): '9' not in 2..8"),
    (1, "1", "position 1 (depth of stage 1): '1' not in 2..5"),
    (0, "2", "position 0 (resolution): '2' must be '1'"),
    (5, "8", "position 5 (stem code): '8' not in 1..7"),
    (20, "x", "position 20 (mid code of stage 2 block 3): 'x' is not a digit"),
    (17, "9", "position 17 (out code of stage 2 block 1): '9' not in 1..7"),
    (10, "1", "position 10 (mid code of stage 1 block 3): '1' must be '0': block 3 is beyond depth 2"),
    (8, "0", "position 8 (mid code of stage 1 block 2): '0' not in 1..7"),  # "00" inside the depth
    (9, "1", "position 9 (out code of stage 1 block 2): '1' differs from '3', the stem code"),
    (7, "2", "position 7 (out code of stage 1 block 1): '2' differs from '3', the stem code"),
    (19, "4", "position 19 (out code of stage 2 block 2): '4' differs from '2', the out code of stage 2 block 1"),
])
def test_bad_codes_name_position_value_and_allowed(pos, value, expected):
    with pytest.raises(ArchError) as err:
        parse_arch(_replace(EXAMPLE, pos, value), R48)
    assert str(err.value).startswith(expected)


def test_bad_code_positions_are_in_the_52_char_form():
    with pytest.raises(ArchError, match=r"^position 3 \(depth of stage 3\)"):
        parse_arch(_replace(EXAMPLE, 3, "9")[1:], R48)


@pytest.mark.parametrize("code", ["", "12345", EXAMPLE + "0"])
def test_wrong_length(code):
    with pytest.raises(ArchError, match="expected 52"):
        parse_arch(code, R48)


def test_constructing_an_invalid_arch_raises():
    with pytest.raises(ArchError, match="^position 7 .*'2' differs from '1', the stem code"):
        Arch(R48, (2, 2, 2, 2), 1, (((1, 2),) * 2, ((1, 1),) * 2, ((1, 1),) * 2, ((1, 1),) * 2))
    with pytest.raises(ArchError, match="stage 1: 9 block codes for depth 9"):
        Arch(R48, (9, 2, 2, 2), 1, (((1, 1),) * 9, ((1, 1),) * 2, ((1, 1),) * 2, ((1, 1),) * 2))
    with pytest.raises(ArchError, match="stage 2: 1 block codes for depth 2"):
        Arch(R48, (2, 2, 2, 2), 1, (((1, 1),) * 2, ((1, 1),), ((1, 1),) * 2, ((1, 1),) * 2))


def test_sample_arch_per_stage_ratio_codes():
    rng = random.Random(1)
    ranges = ((1, 2, 3), (1, 2, 3), (1, 2, 3, 4, 5), CODES)  # the pool's ranges (§1.3)
    for _ in range(100):
        arch = sample_arch(R48, rng, ratio_codes=ranges)
        assert arch.stem_code in ranges[0]
        for s, stage in enumerate(arch.codes):
            assert all(m in ranges[s] and o in ranges[s] for m, o in stage)
    assert all(m == o == 7 for stage in sample_arch(FM, rng, ratio_codes=[7]).codes for m, o in stage)


def test_sample_arch_covers_depths_and_widths():
    rng = random.Random(2)
    archs = [sample_arch(FM, rng) for _ in range(400)]
    assert {a.depths[2] for a in archs} == set(range(2, 9))
    assert {a.stage_out(3) for a in archs} == set(FM.stage_widths(3))


def test_get_space_lists_known_names():
    with pytest.raises(KeyError, match="resnet48-fmnist"):
        get_space("nope")


def test_complexity_of_resnet48_max_matches_spec():
    params, macs = complexity(R48.max_arch)
    assert abs(params - 34.0e6) < 0.1e6 and abs(macs - 5.28e9) < 0.01e9  # spec §1.3


def test_an_arch_holds_its_space_object_and_names_resolve_only_through_the_registry():
    arch = parse_arch(EXAMPLE, get_space("resnet48"))
    assert arch.space is R48 and SPACES["resnet48"] is R48
    assert parse_arch(EXAMPLE, R48) == arch and hash(parse_arch(EXAMPLE, R48)) == hash(arch)
    with pytest.raises(TypeError, match="must be a SearchSpace"):
        Arch("resnet48", arch.depths, arch.stem_code, arch.codes)
    assert register_space(R48) is R48     # registering the same space again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_space(dataclasses.replace(R48, num_classes=10))


def test_the_stage_count_and_code_layout_come_from_the_space():
    """A three-stage space (unregistered): codes, sampling, the sandwich ends and partitions
    follow its shape, no four-stage assumption anywhere in the core."""
    three = SearchSpace(name="three", in_channels=1, num_classes=10, resolution=28, train_resolutions=(28,),
                        min_resolution=28, stem_kernel=3, stem_stride=2, stem_maxpool=False, stem_base=8,
                        stage_bases=(8, 16, 32), strides=(1, 2, 2), depth_choices=((1, 2), (1, 2, 3), (2,)),
                        max_depths=(2, 3, 2), divisor=1)
    assert three.num_stages == 3 and three.code_len == 1 + 3 + 1 + 2 * 7
    rng = random.Random(0)
    for _ in range(50):
        arch = sample_arch(three, rng)
        assert len(arch.depths) == 3 and parse_arch(arch.encode(), three) == arch
    top, bottom = extreme_arch(three, largest=True), extreme_arch(three, largest=False)
    assert top.depths == (2, 3, 2) and bottom.depths == (1, 1, 2)
    assert complexity(top)[0] > complexity(bottom)[0]
    leaves = build_tree(three, [{"dimension": "width", "stage": 3, "parts": 2},
                                {"dimension": "depth", "stage": 2, "parts": 3}])[-1]
    assert len(leaves) == 6 and all(len(p.widths) == len(p.depths) == 3 for p in leaves)
    assert route(top, leaves).contains(top)
    with pytest.raises(ValueError, match="stage must be 1..3"):
        build_tree(three, [{"dimension": "width", "stage": 4, "parts": 2}])
    with pytest.raises(ArchError, match="expected 19"):
        parse_arch(EXAMPLE, three)


def test_the_block_kind_comes_from_the_space_and_an_unwired_kind_fails_loudly(monkeypatch):
    """A space names its block kind; a kind no registry knows is refused, and a kind added to
    BLOCK_KINDS without wiring its builders fails where the block shape is needed."""
    from stepshot.space import family

    assert R48.block == FM.block == "basic"
    with pytest.raises(ValueError, match="block 'bottleneck' is not one of"):
        dataclasses.replace(FM, name="fm-bottleneck", block="bottleneck")
    monkeypatch.setattr(family, "BLOCK_KINDS", ("basic", "bottleneck"))
    bottleneck = dataclasses.replace(FM, name="fm-bottleneck", block="bottleneck")
    with pytest.raises(NotImplementedError, match="complexity has no 'bottleneck' block"):
        complexity(bottleneck.max_arch)
