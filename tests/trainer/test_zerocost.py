"""Zero-cost proxies: their definitions checked where they have a closed form."""
import math

import torch
from torch import nn

from stepshot.space import get_space
from stepshot_trainer import zerocost
from stepshot_trainer.data import open_source
from trainer_helpers import needs_fmnist, tiny_spec


def test_synflow_of_a_linear_chain_is_depth_times_its_output():
    """For a bias-free linear chain R(|W|) is homogeneous of degree 1 in each layer, so
    sum(theta * dR/dtheta) over one layer is R, and synflow is (number of layers) x R."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        r = nn.Sequential(*[nn.Linear(l.in_features, l.out_features, bias=False) for l in net]).double()
        for dst, src in zip(r, net):
            dst.weight.copy_(src.weight.abs())
        expected = 3 * float(r(torch.ones(1, 5, dtype=torch.float64)).sum())
    assert math.isclose(zerocost.synflow(net, (7, 5)), expected, rel_tol=1e-9)


def test_jacob_cov_of_identical_jacobians_matches_its_closed_form():
    """n samples with the same Jacobian: correlation all ones, eigenvalues (n, 0, ..., 0)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 1))
    x = torch.randn(1, 1, 2, 3).repeat(4, 1, 1, 1)
    k = 1e-5
    expected = -(math.log(4 + k) + 1 / (4 + k) + 3 * (math.log(k) + 1 / k))
    assert math.isclose(zerocost.jacob_cov(net, x), expected, rel_tol=1e-6)


@needs_fmnist
def test_scores_are_a_function_of_arch_seed_and_batch():
    spec = tiny_spec()
    sp = get_space(spec.space)
    x, y = zerocost.minibatch(open_source(spec, "train"), seed=3)
    x2, y2 = zerocost.minibatch(open_source(spec, "train"), seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and len(x) == min(zerocost.BATCH_IMAGES, 64)  # trainLimit 64
    arch = sp.min_arch
    a, b = zerocost.scores(sp, arch, x, y, seed=1), zerocost.scores(sp, arch, x, y, seed=1)
    assert a == b and set(a) == set(zerocost.PROXIES)
    assert zerocost.scores(sp, arch, x, y, seed=2)["snip"] != a["snip"]       # the init seed matters
    # NASWOT's kernel counts agreements over every ReLU unit: log|K| is at most n log(units).
    assert a["naswot"] > 0
