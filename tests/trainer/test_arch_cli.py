"""`stepshot arch describe|sample`: JSON output, exit codes, params/MACs equal to the real net."""
import json
import random
import subprocess
import sys

import pytest
import torch
from torch import nn

from stepshot.cli import main
from stepshot.space import complexity, get_space, parse_arch, sample_arch
from stepshot_trainer.static import StaticResNet

torch.set_num_threads(1)
EXAMPLE = "1252233313000000223212122253130000000000006515000000"


def count_macs(net: nn.Module, resolution: int, in_channels: int) -> int:
    """Conv and FC multiply-accumulates of one image, counted with forward hooks."""
    macs = []

    def hook(module, _inputs, output):
        kernel = module.weight[0].numel()  # in/groups * kh * kw, or in-features
        macs.append(output[0].numel() * kernel)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, in_channels, resolution, resolution))
    for h in handles:
        h.remove()
    return sum(macs)


def describe(capsys, code, space):
    assert main(["arch", "describe", code, "--space", space]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def test_describe_prints_one_json_object(capsys):
    info = describe(capsys, EXAMPLE[1:], "resnet48")
    assert info["code"] == EXAMPLE and info["resolution"] == 224
    assert info["depths"] == [2, 5, 2, 2] and info["stem"] == 56
    assert info["blocks"][:2] == [[56, 56], [64, 56]] and len(info["blocks"]) == 11
    assert info["blocks"][-1] == [512, 408]
    assert (info["params"], info["macs"]) == complexity(parse_arch(EXAMPLE, get_space("resnet48")))


@pytest.mark.parametrize("space, n", [("resnet48-fmnist", 6), ("resnet48", 1)])
def test_params_and_macs_match_the_static_net(capsys, space, n):
    sp = get_space(space)
    rng = random.Random(5)
    archs = [sp.max_arch, sp.min_arch][:n] + [sample_arch(sp, rng) for _ in range(n)]
    for arch in archs:
        info = describe(capsys, arch.encode(), space)
        net = StaticResNet(sp, arch)
        assert info["params"] == sum(p.numel() for p in net.parameters())
        assert info["macs"] == count_macs(net, sp.resolution, sp.in_channels)


def test_bad_code_exits_2_with_one_line(capsys):
    bad = EXAMPLE[:3] + "9" + EXAMPLE[4:]
    assert main(["arch", "describe", bad, "--space", "resnet48"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "position 3 (depth of stage 3): '9' not in 2..8" in captured.err


def test_sample_prints_distinct_valid_codes(capsys):
    assert main(["arch", "sample", "--space", "resnet48-fmnist", "-n", "20", "--seed", "3"]) == 0
    codes = json.loads(capsys.readouterr().out)
    assert len(codes) == len(set(codes)) == 20
    assert all(parse_arch(c, get_space("resnet48-fmnist")).encode() == c for c in codes)
    assert main(["arch", "sample", "--space", "resnet48-fmnist", "-n", "20", "--seed", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == codes


def test_cli_subprocess_is_torch_free():
    script = ("import sys; from stepshot.cli import main; rc = main(sys.argv[1:]); "
              "assert 'torch' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", script, "arch", "describe", EXAMPLE, "--space", "resnet48"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["code"] == EXAMPLE
    done = subprocess.run([sys.executable, "-m", "stepshot.cli", "arch", "describe", "x", "--space", "resnet48"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "expected 52" in done.stderr
