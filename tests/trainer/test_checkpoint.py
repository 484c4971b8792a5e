"""Atomic, hash-verified checkpoints and immutable snapshots."""
import json
import os
import stat

import pytest
import torch

from stepshot_trainer import checkpoint as ck


def _state(v=1.0):
    return {"model": {"w": torch.full((3,), v)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "epoch": 1, "rng": {"python": (3, tuple(range(5)), None)}}


def test_save_load_roundtrip_weights_only(tmp_path):
    pt = ck.save(tmp_path, 3, _state(), {"stage": "oneshot"})
    assert pt.name == "epoch-0003.pt"
    manifest = json.loads((tmp_path / "epoch-0003.json").read_text())
    assert manifest["epoch"] == 3 and manifest["stage"] == "oneshot" and len(manifest["sha256"]) == 64
    torch.load(pt, weights_only=True)          # only tensors and primitive containers
    state, m = ck.load(pt)
    assert torch.equal(state["model"]["w"], torch.ones(3)) and m == manifest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_hash_mismatch_is_refused_naming_the_file(tmp_path):
    pt = ck.save(tmp_path, 1, _state(), {})
    data = bytearray(pt.read_bytes())
    data[-10] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match="epoch-0001.pt"):
        ck.load(pt)


def test_latest_valid_skips_partial_and_temp_files(tmp_path):
    ck.save(tmp_path, 1, _state(1), {})
    ck.save(tmp_path, 2, _state(2), {})
    (tmp_path / "epoch-0003.pt").write_bytes(b"half a checkpoint")    # killed before its manifest
    (tmp_path / ".epoch-0004.pt.abc.tmp").write_bytes(b"temp")
    ck.checkpoint_path(tmp_path, 2).write_bytes(b"truncated")          # and a corrupt one
    assert ck.latest_valid(tmp_path).name == "epoch-0001.pt"
    assert ck.latest_valid(tmp_path / "missing") is None


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f"
    ck.atomic_write(target, b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        ck.atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


def test_prune_keeps_last_n_and_the_protected(tmp_path):
    for e in range(1, 6):
        ck.save(tmp_path, e, _state(e), {})
    ck.prune(tmp_path, 2, protect=[ck.checkpoint_path(tmp_path, 1)])
    assert [e for e, _ in ck.list_checkpoints(tmp_path)] == [1, 4, 5]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["epoch-0001.json", "epoch-0004.json", "epoch-0005.json"]


def test_snapshot_is_read_only_weights_only_and_verified(tmp_path):
    pt = ck.save(tmp_path / "ck", 2, _state(5), {"stage": "g2", "groups": 2})
    dst = ck.snapshot(pt, tmp_path / "snap")
    assert stat.S_IMODE(dst.stat().st_mode) == 0o444
    assert set(torch.load(dst, weights_only=True)) == {"model"}
    model, manifest = ck.load_snapshot(tmp_path / "snap")
    assert torch.equal(model["w"], torch.full((3,), 5.0)) and manifest["groups"] == 2
    assert manifest["source"] == "epoch-0002.pt"
    assert ck.snapshot(pt, tmp_path / "snap") == dst                  # idempotent
    other = ck.save(tmp_path / "ck", 3, _state(6), {})
    with pytest.raises(ck.CheckpointError, match="another checkpoint"):
        ck.snapshot(other, tmp_path / "snap")
