"""Checkpoints and snapshots: atomic, hash-verified, loadable with `weights_only=True`.

`<dir>/epoch-NNNN.pt` holds only tensors and primitive containers; its manifest
`<dir>/epoch-NNNN.json` records the sha256 of the .pt bytes. The .pt is written
first and the manifest last, each through temp file + fsync + os.replace, so a
checkpoint without a matching manifest is incomplete and ignored by `latest_valid`.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from stepshot.atomic import atomic_open, atomic_write
from stepshot.errors import StepshotError
from stepshot.workdir import SNAPSHOT_MANIFEST, SNAPSHOT_MODEL

CHECKPOINT_RE = re.compile(r"^epoch-(\d{4,})\.pt$")


class CheckpointError(StepshotError, RuntimeError):
    """A checkpoint or snapshot is missing, incomplete or corrupt (the message names the file)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch:04d}.pt"


def manifest_path(pt: Path) -> Path:
    return pt.with_suffix(".json")


def preempted_path(directory: Path) -> Path:
    """The mid-epoch checkpoint written on SIGTERM (never an epoch checkpoint: selection,
    pruning and snapshots do not see it)."""
    return Path(directory) / "preempted.pt"


def save(directory: Path, epoch: int, state: dict, manifest: dict) -> Path:
    """Save `state` as epoch-NNNN.pt + manifest (sha256, epoch and `created` added)."""
    return save_to(checkpoint_path(directory, epoch), epoch, state, manifest)


def save_to(pt: Path, epoch: int, state: dict, manifest: dict) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write(pt, data)
    write_json(manifest_path(pt), {**manifest, "epoch": epoch, "sha256": sha256_bytes(data),
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return pt


def read_manifest(pt: Path) -> dict:
    try:
        return json.loads(manifest_path(pt).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{pt}: missing or unreadable manifest {manifest_path(pt).name}: {exc}") from exc


def _verified_bytes(pt: Path, manifest: dict) -> bytes:
    try:
        data = Path(pt).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{pt}: cannot read: {exc}") from exc
    digest = sha256_bytes(data)
    if digest != manifest.get("sha256"):
        raise CheckpointError(f"{pt}: sha256 {digest[:12]}... does not match its manifest "
                              f"({str(manifest.get('sha256'))[:12]}...); the file is corrupt or incomplete")
    return data


def load(pt: Path, map_location: str | torch.device = "cpu", manifest: dict | None = None) -> tuple[dict, dict]:
    """(state, manifest) of a verified checkpoint; CheckpointError names the file otherwise."""
    pt = Path(pt)
    manifest = read_manifest(pt) if manifest is None else manifest
    data = _verified_bytes(pt, manifest)
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True), manifest


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every epoch-NNNN.pt, ascending (temp files never match)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def is_valid(pt: Path) -> bool:
    try:
        _verified_bytes(pt, read_manifest(pt))
    except CheckpointError:
        return False
    return True


def latest_valid(directory: Path) -> Path | None:
    """The newest checkpoint whose bytes match its manifest's sha256 (partial ones are skipped)."""
    for _, pt in reversed(list_checkpoints(directory)):
        if is_valid(pt):
            return pt
    return None


def discard_preempted(directory: Path) -> None:
    pt = preempted_path(directory)
    manifest_path(pt).unlink(missing_ok=True)
    pt.unlink(missing_ok=True)


def prune(directory: Path, keep: int, protect: Iterable[Path] = ()) -> list[Path]:
    """Delete all but the newest `keep` checkpoints, never one in `protect`; returns the deleted."""
    protected = {Path(p).resolve() for p in protect}
    old = [pt for _, pt in list_checkpoints(directory)][:-keep] if keep > 0 else []
    deleted = []
    for pt in old:
        if pt.resolve() in protected:
            continue
        manifest_path(pt).unlink(missing_ok=True)  # manifest first: a lone .pt is simply invalid
        pt.unlink(missing_ok=True)
        deleted.append(pt)
    return deleted


# --------------------------------------------------------------------------- snapshots

SNAPSHOT_CHUNK = 16 << 20   # bytes per write: progress is reported between chunks


def snapshot(src: Path, dst_dir: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Immutable copy of a checkpoint's model weights + manifest (read-only files).

    Idempotent: an existing, valid snapshot of the same source is kept as is; a
    snapshot of a different source is an error (snapshots are never overwritten).
    `progress(bytes written, size)` is called before the first chunk and after every chunk.
    """
    dst_dir = Path(dst_dir)
    state, manifest = load(src)
    source = {"source": str(Path(src).name), "source_sha256": manifest["sha256"]}
    if (dst_dir / SNAPSHOT_MANIFEST).exists():
        _, existing = load_snapshot(dst_dir)
        if existing.get("source_sha256") != manifest["sha256"]:
            raise CheckpointError(f"{dst_dir}: a snapshot of another checkpoint ({existing.get('source')}) exists")
        return dst_dir / SNAPSHOT_MODEL
    buf = io.BytesIO()
    torch.save({"model": state["model"]}, buf)
    data = buf.getvalue()
    readonly = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    with atomic_open(dst_dir / SNAPSHOT_MODEL, readonly) as f:
        for start in range(0, len(data), SNAPSHOT_CHUNK):
            if progress is not None:
                progress(start, len(data))
            f.write(memoryview(data)[start:start + SNAPSHOT_CHUNK])
    if progress is not None:
        progress(len(data), len(data))
    write_json(dst_dir / SNAPSHOT_MANIFEST, {**manifest, **source, "sha256": sha256_bytes(data)}, readonly)
    return dst_dir / SNAPSHOT_MODEL


def load_snapshot(snap_dir: Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(model state_dict, manifest) of a verified snapshot."""
    snap_dir = Path(snap_dir)
    try:
        manifest = json.loads((snap_dir / SNAPSHOT_MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{snap_dir / SNAPSHOT_MANIFEST}: missing or unreadable snapshot manifest: {exc}") from exc
    state, _ = load(snap_dir / SNAPSHOT_MODEL, map_location, manifest)
    return state["model"], manifest
