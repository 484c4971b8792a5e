"""`stepshot evaluate` over a pool: shards give the unsharded predictions bit for bit, a stopped
run resumes without evaluating its finished architectures again, and a pool in the challenge's
format goes in and a submission in the same format comes out."""
import json
import shutil

import pytest
import torch
import yaml

from stepshot import cli, workdir
from stepshot.archsets import challenge_format, stratified_archs
from stepshot.space import complexity, get_space, parse_arch
from stepshot_trainer import checkpoint, evaluate
from stepshot_trainer.supernet import SuperNet
from trainer_helpers import TINY, needs_fmnist

pytestmark = needs_fmnist
SPACE = get_space("resnet48-fmnist")
POOL = 96
ARCH_ACCURACY = evaluate.arch_accuracy


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random super-net's snapshot, a 96-architecture pool in the challenge's format (51-char
    codes, as the challenge writes them) and a ground truth for a third of it."""
    root = tmp_path_factory.mktemp("pool")
    archs = stratified_archs(SPACE, POOL, seed=5)
    pool_doc = {name: {"arch": e["arch"][1:]} for name, e in challenge_format(archs).items()}
    (root / "pool.json").write_text(json.dumps(pool_doc))
    truth = {f"t{i}": {"arch": a.encode(), "acc": 80.0 + (i * 7 % 13)} for i, a in enumerate(archs[::3])}
    (root / "gt.json").write_text(json.dumps(truth))
    doc = json.loads(json.dumps(TINY))
    doc["spec"]["fewShot"] = {"mode": "none"}
    doc["spec"]["evaluation"].update({"groundTruth": "gt.json", "calibrationBatches": 1, "calibrationBatchSize": 32,
                                      "evalImages": 64, "batchSize": 64})
    (root / "t.yaml").write_text(yaml.safe_dump({"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
                                                 **doc}))
    work = root / "work"
    torch.manual_seed(0)
    ck = checkpoint.save(work / "oneshot/checkpoints", 1, {"model": SuperNet(SPACE).state_dict()}, {"groups": None})
    checkpoint.write_json(work / "oneshot/selected.json", {"epoch": 1, "file": ck.name, "kendall_tau": None})
    (work / "oneshot/DONE").write_text("")
    assert cli.main(["snapshot", str(root / "t.yaml"), "--workdir", str(work), "--stage", "oneshot"]) == 0
    return root, pool_doc


def _evaluate(root, out, *extra):
    return cli.main(["evaluate", str(root / "t.yaml"), "--workdir", str(root / "work"), "--archs",
                     str(root / "pool.json"), "--out", str(root / "work/eval" / out), "--threads", "1",
                     "--processes", "1", "--checkpoint-every", "8", *extra])


@pytest.fixture(scope="module")
def unsharded(setup):
    root, _ = setup
    assert _evaluate(root, "full.json") == 0
    return (root / "work/eval/full.json").read_bytes()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def _counting(monkeypatch, kill_after=None):
    """Count the architectures evaluated (the real evaluation runs); die after `kill_after`."""
    calls = []

    def counted(model, arch, calibration, evalset):
        if kill_after is not None and len(calls) == kill_after:
            raise Killed()
        calls.append(arch.encode())
        return ARCH_ACCURACY(model, arch, calibration, evalset)
    monkeypatch.setattr(evaluate, "arch_accuracy", counted)
    return calls


def test_two_shards_give_the_unsharded_predictions_bit_for_bit(setup, unsharded, monkeypatch, tmp_path):
    root, pool_doc = setup
    calls = _counting(monkeypatch)
    monkeypatch.setenv(workdir.TERMINATION_ENV, str(tmp_path / "term"))
    assert _evaluate(root, "sharded.json", "--shard", "0", "--shards", "2") == 0
    assert len(calls) == POOL // 2 and not (root / "work/eval/sharded.json").exists()   # parts only
    # What the operator counts: the pool's size, the slice's, and its third with a ground truth.
    message = workdir.parse_shard((tmp_path / "term").read_text())
    assert message == workdir.ShardResult(shard=0, shards=2, pool=POOL, archs=POOL // 2, scored=POOL // 6)
    assert _evaluate(root, "sharded.json", "--merge") == 2            # half the pool is not evaluated yet
    assert _evaluate(root, "sharded.json", "--shard", "1", "--shards", "2") == 0
    assert len(calls) == POOL
    assert _evaluate(root, "sharded.json", "--merge", "--submission", str(root / "submission.json"),
                     "--top", "5") == 0
    assert len(calls) == POOL                                          # merging evaluates nothing
    assert (root / "work/eval/sharded.json").read_bytes() == unsharded
    preds = json.loads(unsharded)
    # The submission: the pool's keys, order and codes as written, every entry's predicted acc.
    submission = json.loads((root / "submission.json").read_text())
    assert list(submission) == list(pool_doc)
    assert submission == {n: {"arch": e["arch"], "acc": preds[n]["acc"]} for n, e in pool_doc.items()}
    top = json.loads(workdir.top_file(root / "work/eval/sharded.json").read_text())
    accs = sorted((p["acc"] for p in preds.values()), reverse=True)[:5]
    assert top["of"] == POOL and [t["acc"] for t in top["top"]] == accs
    assert all((t["params"], t["macs"]) == complexity(parse_arch(t["arch"], SPACE)) for t in top["top"])
    # Correlation over the architectures with ground truth; the result says how many of each.
    report = json.loads((root / "work/eval/evaluations.json").read_text())
    assert report["final"]["evaluated"] == POOL and report["final"]["scored"] == report["final"]["n"] == POOL // 3
    assert report["evaluations"]["sharded"]["missing"] == {"only_in_pred": POOL - POOL // 3, "only_in_truth": 0}
    assert report["evaluations"]["sharded"]["made"][0]["threads"] == 1


def test_a_stopped_run_resumes_without_evaluating_finished_architectures(setup, unsharded, monkeypatch):
    root, _ = setup
    _counting(monkeypatch, kill_after=21)               # dies in the third part of 8
    with pytest.raises(Killed):
        _evaluate(root, "resumed.json")
    parts = workdir.prediction_parts(root / "work/eval/resumed.json", "x").parent
    (key,) = [p.name for p in parts.iterdir()]
    assert sorted(p.name for p in (parts / key).iterdir()) == ["part-0000000-0000008.json",
                                                               "part-0000008-0000016.json"]
    calls = _counting(monkeypatch)
    assert _evaluate(root, "resumed.json") == 0
    assert len(calls) == POOL - 16                      # the two finished parts are not evaluated again
    names = list(json.loads(unsharded))
    assert calls[0] == json.loads(unsharded)[names[16]]["arch"]
    assert (root / "work/eval/resumed.json").read_bytes() == unsharded


def test_a_resumed_shard_count_reuses_every_finished_part(setup, unsharded, monkeypatch):
    """Killed as one shard of 3, finished as 2 shards: only the architectures no part covers run."""
    root, _ = setup
    _counting(monkeypatch, kill_after=10)
    with pytest.raises(Killed):
        _evaluate(root, "reshard.json", "--shard", "1", "--shards", "3")      # archs 32..63, part 32..40 done
    calls = _counting(monkeypatch)
    for shard in ("0", "1"):
        assert _evaluate(root, "reshard.json", "--shard", shard, "--shards", "2") == 0
    assert len(calls) == POOL - 8
    assert _evaluate(root, "reshard.json", "--merge") == 0
    assert (root / "work/eval/reshard.json").read_bytes() == unsharded


def test_a_pool_is_ranked_with_nothing_but_a_finished_snapshot(setup, unsharded, tmp_path):
    """A new work directory holding only the snapshot (copied from the run that trained it) and
    a new pool file: `stepshot evaluate` ranks it without training anything, the same numbers."""
    root, pool_doc = setup
    work = tmp_path / "work"
    shutil.copytree(workdir.Layout(root / "work").snapshot("oneshot"), workdir.Layout(work).snapshot("oneshot"))
    new_pool = dict(list(pool_doc.items())[::12])              # 8 of the pool, in the challenge's format
    (tmp_path / "new-pool.json").write_text(json.dumps(new_pool))
    assert cli.main(["evaluate", str(root / "t.yaml"), "--workdir", str(work), "--archs", str(tmp_path / "new-pool.json"),
                     "--out", str(work / "eval/new.json"), "--threads", "1", "--processes", "1",
                     "--submission", str(tmp_path / "submission.json")]) == 0
    before = json.loads(unsharded)
    assert json.loads((work / "eval/new.json").read_text()) == {n: before[n] for n in new_pool}
    assert list(json.loads((tmp_path / "submission.json").read_text())) == list(new_pool)
