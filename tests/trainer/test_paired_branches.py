"""The branch-paired comparison (benchmarks/ranking_v3.py): grouped vs continued from one start.

With `training.seedScope: step`, step k of a grouped and of a continued run draws the same
batches, subnets and dropout, and the grouped split preserves the parent's function, so the
two branches' first optimizer step computes exactly the same losses; with the default scope
(the stage name) it does not.
"""
import pytest
import torch

from stepshot.plan import build_plan
from stepshot_trainer import checkpoint
from stepshot_trainer.grouped import GroupedSuperNet
from stepshot_trainer.supernet import SuperNet
from stepshot_trainer.train import Dist, StageTrainer
from trainer_helpers import needs_fmnist, tiny_spec

pytestmark = needs_fmnist


def _start(tmp_path, spec):
    """A trained-looking start: random weights, snapshotted as the one-shot stage's."""
    torch.manual_seed(0)
    ck = checkpoint.save(tmp_path / "ck", 1, {"model": SuperNet(spec.search_space).state_dict()}, {"groups": None})
    checkpoint.snapshot(ck, tmp_path / "snapshots" / "oneshot")


def _first_step(spec, stage: str, workdir) -> tuple[type, dict[str, float], torch.Tensor, list[str]]:
    plan = build_plan(spec)
    trainer = StageTrainer(spec, plan.stage(stage), workdir, plan.partitions[stage], Dist())
    x, y = next(iter(trainer.loader.batches(0)))
    draws = [arch.encode() for _, arch, _ in trainer.sampler.sample(0)]
    return type(trainer.model), trainer.train_step(x, y), x, draws


@pytest.mark.parametrize("scope, paired", [("step", True), ("stage", False)])
def test_grouped_and_continued_share_a_step_only_under_step_scope(tmp_path, scope, paired):
    training = {"seedScope": scope, "randomSubnets": 2}
    grouped = tiny_spec(training=training, fewShot={"mode": "grouped", "groups": [2]})
    continued = tiny_spec(training=training, fewShot={"mode": "continued", "groups": [2]})
    _start(tmp_path, grouped)
    kind_g, loss_g, x_g, draws_g = _first_step(grouped, "g2", tmp_path)
    kind_c, loss_c, x_c, draws_c = _first_step(continued, "c2", tmp_path)
    assert kind_g is GroupedSuperNet and kind_c is SuperNet        # the split is the only difference
    assert build_plan(continued).stage("c2").lr == build_plan(grouped).stage("g2").lr
    if paired:
        assert torch.equal(x_g, x_c) and draws_g == draws_c
        assert loss_g.keys() == loss_c.keys()
        assert all(abs(loss_g[m] - loss_c[m]) < 1e-5 for m in loss_g), (loss_g, loss_c)
    else:
        assert not torch.equal(x_g, x_c) or draws_g != draws_c


def test_continued_stage_trains_the_parents_unsplit_weights(tmp_path):
    spec = tiny_spec(fewShot={"mode": "continued", "groups": [2, 3]})
    _start(tmp_path, spec)
    plan = build_plan(spec)
    assert [s.name for s in plan.train_stages] == ["oneshot", "c2", "c3"]
    assert [s.parent for s in plan.train_stages] == [None, "oneshot", "c2"]
    trainer = StageTrainer(spec, plan.stage("c2"), tmp_path, plan.partitions["c2"], Dist())
    parent = SuperNet(spec.search_space)
    parent.load_state_dict(checkpoint.load(tmp_path / "ck" / "epoch-0001.pt")[0]["model"])
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(),
                                                  parent.state_dict().values()))
