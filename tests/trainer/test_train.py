"""One training stage: determinism, kill-and-resume equivalence, 2-rank gloo, stage wiring."""
import json
import os
import signal

import pytest
import torch
import torch.multiprocessing as mp

from stepshot.errors import Preempted
from stepshot.plan import build_plan
from stepshot_trainer import checkpoint
from stepshot_trainer.grouped import GroupedSuperNet
from stepshot_trainer.supernet import SuperNet
from stepshot_trainer.train import Dist, StageTrainer, build_stage_model, lr_factor, select_epoch
from trainer_helpers import free_port, jpeg_folder, needs_fmnist, tiny_spec

pytestmark = needs_fmnist


def _trainer(spec, workdir, name="oneshot", d=None):
    plan = build_plan(spec)
    return StageTrainer(spec, plan.stage(name), workdir, plan.partitions[name], d or Dist())


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_uninterrupted_run_and_seed_determinism(tmp_path):
    spec = tiny_spec()
    straight = _trainer(spec, tmp_path / "a")
    selected = straight.run()
    assert selected == {"epoch": 2, "file": "epoch-0002.pt", "kendall_tau": None}
    assert json.loads((tmp_path / "a/oneshot/selected.json").read_text()) == selected
    assert (tmp_path / "a/oneshot/DONE").exists()

    killed = _trainer(spec, tmp_path / "b")
    assert killed.run(stop_after=1) is None and not (tmp_path / "b/oneshot/DONE").exists()
    first_a, _ = checkpoint.load(tmp_path / "a/oneshot/checkpoints/epoch-0001.pt")
    first_b, _ = checkpoint.load(tmp_path / "b/oneshot/checkpoints/epoch-0001.pt")
    assert _same(first_a["model"], first_b["model"])               # same seed => same weights

    resumed = _trainer(spec, tmp_path / "b")                        # a fresh instance resumes
    resumed.run()
    assert resumed.step == straight.step == 4
    assert _same(straight.model.state_dict(), resumed.model.state_dict())
    mom = lambda t: [s["momentum_buffer"] for s in t.optimizer.state_dict()["state"].values()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(mom(straight), mom(resumed)))


@pytest.mark.parametrize("stop_at", [1, 2, 3])   # mid-epoch 1, its last step, mid-epoch 2 (2 x 2 steps)
def test_sigterm_checkpoints_mid_epoch_and_resumes_to_the_uninterrupted_weights(tmp_path, stop_at):
    spec = tiny_spec()
    straight = _trainer(spec, tmp_path / "a")
    straight.run()

    victim = _trainer(spec, tmp_path / "b")
    step = victim.train_step

    def step_then_sigterm(x, y):                   # the kubelet's SIGTERM arrives during a step
        out = step(x, y)
        if victim.step == stop_at:
            signal.raise_signal(signal.SIGTERM)
        return out
    victim.train_step = step_then_sigterm
    with pytest.raises(Preempted) as stopped:
        victim.run()
    assert stopped.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    preempted = tmp_path / "b/oneshot/checkpoints/preempted.pt"
    assert checkpoint.read_manifest(preempted)["step"] == stop_at and checkpoint.is_valid(preempted)

    resumed = _trainer(spec, tmp_path / "b")
    assert resumed.run() == {"epoch": 2, "file": "epoch-0002.pt", "kendall_tau": None}
    assert resumed.step == straight.step == 4 and not preempted.exists()
    assert _same(straight.model.state_dict(), resumed.model.state_dict())
    mom = lambda t: [s["momentum_buffer"] for s in t.optimizer.state_dict()["state"].values()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(mom(straight), mom(resumed)))


def _rank_main(rank: int, port: int, workdir: str) -> None:
    from stepshot_trainer.train import init_distributed

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    d = init_distributed()
    trainer = _trainer(tiny_spec(oneShot={"epochs": 1}), workdir, d=d)
    trainer.run()
    torch.save(trainer.model.state_dict(), f"{workdir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_keep_identical_weights(tmp_path):
    # fork: the children skip re-importing torch (spawn costs seconds per rank on 2 busy cores)
    mp.start_processes(_rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert _same(r0, r1)
    saved, manifest = checkpoint.load(tmp_path / "oneshot/checkpoints/epoch-0001.pt")
    assert _same(saved["model"], r0) and manifest["step"] == 1      # 64 images / (32 x 2 ranks)


def test_stage_models_follow_the_plan(tmp_path):
    spec = tiny_spec(fewShot={"mode": "grouped", "groups": [2, 3]})
    plan = build_plan(spec)
    parent = build_stage_model(spec, plan.stage("oneshot"), tmp_path)
    assert isinstance(parent, SuperNet)
    ck = checkpoint.save(tmp_path / "ck", 1, {"model": parent.state_dict()}, {"groups": None})
    checkpoint.snapshot(ck, tmp_path / "snapshots" / "oneshot")
    g2 = build_stage_model(spec, plan.stage("g2"), tmp_path)
    assert isinstance(g2, GroupedSuperNet) and g2.groups == 2
    x = torch.randn(4, 1, 28, 28)
    parent.eval(), g2.eval()
    assert torch.allclose(parent(x), g2(x), atol=1e-5)                # function-preserving split


def test_partitioned_stage_samples_inside_its_partition(tmp_path):
    spec = tiny_spec(fewShot={"mode": "partitioned", "steps": [{"dimension": "width", "stage": 4, "parts": 2}]})
    plan = build_plan(spec)
    ck = checkpoint.save(tmp_path / "ck", 1, {"model": SuperNet(spec.search_space).state_dict()}, {"groups": None})
    checkpoint.snapshot(ck, tmp_path / "snapshots" / "oneshot")
    stage = plan.steps[1][0]
    trainer = StageTrainer(spec, stage, tmp_path, plan.partitions[stage.name], Dist())
    part = plan.partitions[stage.name]
    assert all(part.contains(arch) for step in range(5) for _, arch, _ in trainer.sampler.sample(step))


def test_schedule_and_selection_rules():
    assert lr_factor(0, 100, 10) == pytest.approx(0.001)
    assert lr_factor(10, 100, 10) == 1.0 and lr_factor(100, 100, 10) == pytest.approx(0.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(0, 10, 0) == 1.0                                 # few-shot: no warmup
    assert select_epoch({1: 0.5, 2: 0.7, 3: 0.7, 4: 0.6}, 4) == (3, 0.7)   # ties -> later
    assert select_epoch({}, 5) == (5, None)


def test_selection_scores_reference_archs(tmp_path):
    import random

    from stepshot.space import get_space, sample_arch
    from stepshot_trainer.train import Selection

    rng = random.Random(0)
    codes = [sample_arch(get_space("resnet48-fmnist"), rng).encode() for _ in range(4)]
    (tmp_path / "archs.json").write_text(json.dumps(codes))
    (tmp_path / "gt.json").write_text(json.dumps({c: 80.0 + i for i, c in enumerate(codes)}))
    spec = tiny_spec(selection={"archs": str(tmp_path / "archs.json"), "groundTruth": str(tmp_path / "gt.json"),
                                "evalImages": 64, "calibrationBatches": 1})
    assert Selection.enabled(spec) and not Selection.enabled(tiny_spec())
    tau = Selection(spec, torch.device("cpu")).score(SuperNet(spec.search_space))
    assert tau is None or -1.0 <= tau <= 1.0


def test_metric_names_match_the_design():
    from stepshot_trainer.metrics import TrainerMetrics, metric_names

    assert metric_names() == sorted([
        "stepshot_trainer_step", "stepshot_trainer_planned_steps", "stepshot_trainer_last_step_timestamp_seconds",
        "stepshot_trainer_last_progress_timestamp_seconds", "stepshot_trainer_epoch", "stepshot_trainer_loss",
        "stepshot_trainer_learning_rate", "stepshot_trainer_images_per_second", "stepshot_trainer_steps_per_second",
        "stepshot_trainer_data_wait_seconds", "stepshot_trainer_selection_kendall_tau",
        "stepshot_trainer_evaluation_subnets", "stepshot_trainer_evaluation_subnets_done",
        "stepshot_trainer_snapshot_size_bytes", "stepshot_trainer_snapshot_written_bytes"])
    m = TrainerMetrics("g2", "root", port=None)
    for name in metric_names():
        if name != "stepshot_trainer_loss":
            m.set(name, 1.0)
    m.loss("max", 1.0)
    names = {s.name for fam in m.registry.collect() for s in fam.samples}
    assert names == set(metric_names())


@pytest.mark.slow
def test_imagefolder_preempted_and_resumed_through_worker_processes_equals_the_uninterrupted_run(tmp_path):
    pytest.importorskip("PIL")
    from stepshot import spec as specmod

    jpeg_folder(tmp_path / "data" / "train", 2, 2)
    jpeg_folder(tmp_path / "data" / "val", 2, 1)
    spec = specmod.load({"metadata": {"name": "inet"}, "spec": {
        "space": "resnet48", "dataset": {"kind": "imagefolder", "path": str(tmp_path / "data")},
        "resources": {"cpu": "3"}, "training": {"batchSize": 2, "randomSubnets": 0},   # 2 workers by default
        "oneShot": {"epochs": 2, "lr": 0.1, "warmupEpochs": 0}, "fewShot": {"mode": "none"}, "metricsPort": 0}})
    straight = _trainer(spec, tmp_path / "a")
    straight.run()
    assert straight.loader.workers == 2 and straight.loader._loader is not None   # through DataLoader workers

    victim = _trainer(spec, tmp_path / "b")
    step = victim.train_step

    def step_then_sigterm(x, y):
        out = step(x, y)
        if victim.step == 1:                       # mid-epoch 1: workers hold batches ahead
            signal.raise_signal(signal.SIGTERM)
        return out
    victim.train_step = step_then_sigterm
    with pytest.raises(Preempted):
        victim.run()
    resumed = _trainer(spec, tmp_path / "b")
    resumed.run()
    assert resumed.step == straight.step == 4
    assert _same(straight.model.state_dict(), resumed.model.state_dict())
