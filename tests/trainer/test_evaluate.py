"""BN recalibration, routing to leaves, predictions and the evaluate/snapshot CLI."""
import copy
import json
import random

import torch
import yaml

import pytest

from stepshot import cli, predictors, workdir
from stepshot.partition import build_tree
from stepshot.space import get_space, sample_arch
from stepshot.archsets import load_codes
from stepshot_trainer import checkpoint
from stepshot_trainer.evaluate import Router, predict, recalibrate_bn
from stepshot_trainer.static import fold_batchnorm
from stepshot_trainer.supernet import SuperNet
from trainer_helpers import TINY, needs_fmnist

SPACE = get_space("resnet48-fmnist")


def _archs(n, seed=0):
    rng = random.Random(seed)
    return [sample_arch(SPACE, rng) for _ in range(n)]


def test_bn_recalibration_is_deterministic_cumulative_average():
    torch.manual_seed(0)
    net = SuperNet(SPACE).extract(_archs(1)[0])
    batches = [torch.randn(16, 1, 28, 28) for _ in range(3)]
    recalibrate_bn(net, batches)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    recalibrate_bn(net, batches)
    assert all(torch.equal(first[k], v) for k, v in net.state_dict().items())
    assert not net.training and net.stem.bn.momentum is None
    with torch.no_grad():                          # equal batches: cumulative mean == mean of batch means
        means = torch.stack([net.stem.conv(x).mean((0, 2, 3)) for x in batches]).mean(0)
    assert torch.allclose(net.stem.bn.running_mean, means, atol=1e-5)


def test_folded_batchnorm_predicts_like_the_unfolded_net():
    """Folding changes the arithmetic, not the function: logits to float rounding, every BN gone,
    projections (sc_conv/sc_bn) folded too."""
    torch.manual_seed(1)
    archs = _archs(4, seed=3)
    for arch in archs:
        net = SuperNet(SPACE).extract(arch)
        for m in net.modules():     # non-trivial affine parameters, as after training
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
        recalibrate_bn(net, [torch.randn(32, 1, 28, 28) for _ in range(2)])
        x = torch.randn(64, 1, 28, 28)
        with torch.no_grad():
            before = net(x)
            after = fold_batchnorm(copy.deepcopy(net))(x)
        assert torch.allclose(before, after, atol=1e-4 * before.abs().max().item(), rtol=1e-4)
        folded = fold_batchnorm(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(block.sc_conv is not None for a in archs for stage in SuperNet(SPACE).extract(a).stages
               for block in stage)


def test_router_sends_each_arch_to_its_partition():
    leaves = build_tree(SPACE, [{"dimension": "width", "stage": 4, "parts": 2}])[1]
    models = {p.id.replace(".", "-"): SuperNet(SPACE) for p in leaves}
    router = Router(models, {p.id.replace(".", "-"): p for p in leaves})
    for arch in _archs(20):
        assert leaves[[p.id for p in leaves].index(router.stage_for(arch))].contains(arch)
    single = Router({"g2": SuperNet(SPACE)})
    assert single.stage_for(_archs(1)[0]) == "g2"


def test_predict_challenge_format_is_repeatable():
    torch.manual_seed(0)
    router = Router({"oneshot": SuperNet(SPACE).eval()})
    archs = {f"arch{i}": a.encode() for i, a in enumerate(_archs(3), 1)}
    calib = [torch.randn(8, 1, 28, 28)]
    evalset = [(torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,)))]
    preds, timing = predict(router, archs, SPACE, calib, evalset)
    again, _ = predict(router, archs, SPACE, calib, evalset)
    assert preds == again and set(preds) == set(archs) and timing["subnets"] == 3
    assert all(0 <= p["acc"] <= 100 and p["arch"] == archs[n] for n, p in preds.items())


def test_load_archs_formats(tmp_path):
    codes = [a.encode() for a in _archs(2)]
    (tmp_path / "list.json").write_text(json.dumps(codes))
    (tmp_path / "ch.json").write_text(json.dumps({"archA": {"arch": codes[0]}, "archB": {"arch": codes[1]}}))
    assert load_codes(tmp_path / "list.json") == {"arch1": codes[0], "arch2": codes[1]}
    assert load_codes(tmp_path / "ch.json") == {"archA": codes[0], "archB": codes[1]}


@needs_fmnist
def test_snapshot_and_evaluate_cli(tmp_path, monkeypatch):
    codes = [a.encode() for a in _archs(4)]
    truth = {f"arch{i}": {"arch": c, "acc": 80.0 + i} for i, c in enumerate(codes, 1)}
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    doc = json.loads(json.dumps(TINY))
    doc["spec"]["fewShot"] = {"mode": "none"}
    doc["spec"]["evaluation"]["groundTruth"] = "gt.json"              # relative to the YAML file
    doc["spec"]["evaluation"]["prior"] = {"proxy": "macs", "weight": 1.0}   # all prior: MACs' own ranking
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"apiVersion": "stepshot.dev/v1alpha1",
                                                     "kind": "SupernetTraining", **doc}))
    work = tmp_path / "work"
    ck = checkpoint.save(work / "oneshot/checkpoints", 1, {"model": SuperNet(SPACE).state_dict()},
                         {"groups": None})
    checkpoint.write_json(work / "oneshot/selected.json", {"epoch": 1, "file": ck.name, "kendall_tau": None})
    args = [str(tmp_path / "t.yaml"), "--workdir", str(work)]
    monkeypatch.setenv(workdir.TERMINATION_ENV, str(tmp_path / "term"))
    assert cli.main(["snapshot", *args, "--stage", "oneshot"]) == 2      # not DONE yet
    assert (tmp_path / "term").read_text().startswith("stepshot: error: stage 'oneshot' has not finished")
    (work / "oneshot/DONE").write_text("")
    assert cli.main(["snapshot", *args, "--stage", "oneshot"]) == 0
    # The operator's reading of the message: the snapshot's hash, the selected checkpoint.
    snap = workdir.parse_snapshot((tmp_path / "term").read_text())
    manifest = json.loads(workdir.Layout(work).snapshot_manifest("oneshot").read_text())
    assert (snap.stage, snap.partition, snap.epoch, snap.file) == ("oneshot", "root", 1, f"oneshot/checkpoints/{ck.name}")
    assert snap.sha256 == manifest["sha256"] and snap.kendall_tau is None
    assert cli.main(["evaluate", *args, "--threads", "0"]) == 2
    assert cli.main(["evaluate", *args, "--processes", "0"]) == 2
    # Architectures split over two processes: the same numbers as one process at equal threads.
    one = work / "eval/one.json"
    assert cli.main(["evaluate", *args, "--threads", "1", "--processes", "1", "--out", str(one)]) == 0
    assert cli.main(["evaluate", *args, "--threads", "1", "--processes", "2"]) == 0
    preds = json.loads((work / "eval/predictions.json").read_text())
    assert list(preds) == list(truth) and preds == json.loads(one.read_text())
    report = json.loads((work / "eval/evaluations.json").read_text())
    assert report["final"]["n"] == 4 and "kendall_tau" in report["final"]
    protocol = report["evaluations"]["predictions"]["protocol"]
    assert protocol["threads"] == 1 and protocol["eval_images"] == TINY["spec"]["evaluation"]["evalImages"]
    assert protocol["processes"] == 2 and report["evaluations"]["one"]["protocol"]["processes"] == 1
    assert report["evaluations"]["predictions"]["timing"]["processes"] == 2
    term = (tmp_path / "term").read_text()
    assert len(term) < 4096 and json.loads(workdir.parse_evaluation(term).message()) == report["final"]
    # Free baselines on the scored architectures; at weight 1 the prior-guided ranking is MACs'.
    final = report["final"]
    assert set(final["baselines"]) == set(predictors.BASELINES)
    assert final["prior_guided"]["proxy"] == "macs"
    assert final["prior_guided"]["kendall_tau"] == pytest.approx(final["baselines"]["macs"])
    assert (work / "eval/baseline-scores.json").exists()      # the second evaluation reused the proxies
    guided = json.loads((work / "eval/predictions-prior.json").read_text())
    macs = predictors.complexity_scores(codes, get_space(SPACE))["macs"]
    assert sorted(guided, key=guided.get) == sorted(codes, key=lambda c: (macs[c], c))
