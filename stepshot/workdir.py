"""The work directory's layout and the result messages that leave a stage pod (torch-free).

One definition for every reader and writer: the trainer writes the layout and the messages,
`stepshot run` and the benchmarks read the layout, the operator reads the messages from pod
termination messages, and the tests' fake kubelet builds its messages here too, so none of
them can drift from the real commands.

Layout of a work directory (the PersistentVolumeClaim in a cluster):

    <stage>/checkpoints/epoch-NNNN.{pt,json}   training checkpoints (+ sha256 manifests)
    <stage>/selected.json                      the epoch the stage selected (see `Selected`)
    <stage>/DONE                               written last: the stage finished
    snapshots/<stage>/{model.pt,manifest.json} immutable copy of the selected checkpoint
    eval/<tag>-predictions.json                predictions of `stepshot evaluate` (challenge format)
    eval/evaluations.json                      per predictions file: metrics, timing, protocol
    eval/<stem>.parts/<pool key>/part-S-E.json checkpointed predictions of pool entries [S, E) (see
                                               stepshot.pool): shards write them, the merge reads them
    eval/<stem>-top.json                       the best architectures with params and MACs (--top)
    report.json                                `stepshot run`'s stage table as JSON

Messages travel in the container's termination message (kubelet: at most 4096 bytes), so
pods need no API rights. A message is untrusted input to the operator: `parse_*` accept only
the documented keys with the documented types and finite numbers, and raise MessageError
otherwise.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from stepshot.errors import StepshotError
from stepshot.names import camel
from stepshot.predictors import BASELINES

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_ENV = "STEPSHOT_TERMINATION_LOG"   # where a command writes its message (set in pods)
MESSAGE_LIMIT = 4096                            # the kubelet truncates termination messages here
SNAPSHOT_MODEL, SNAPSHOT_MANIFEST = "model.pt", "manifest.json"
EVALUATIONS = "evaluations.json"


def evaluations_file(predictions: Path) -> Path:
    """The evaluation report beside a predictions file (one entry per predictions file)."""
    return predictions.parent / EVALUATIONS


PART_RE = re.compile(r"^part-(\d{7,})-(\d{7,})\.json$")


def prediction_parts(predictions: Path, key: str) -> Path:
    """The parts of a pool's predictions file, per pool key (stepshot.pool)."""
    return predictions.parent / f"{predictions.stem}.parts" / key


def part_file(parts: Path, start: int, end: int) -> Path:
    return parts / f"part-{start:07d}-{end:07d}.json"


def part_span(name: str) -> tuple[int, int] | None:
    """(start, end) of a part file's name; None for anything else (temp files)."""
    m = PART_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m and int(m.group(1)) < int(m.group(2)) else None


def top_file(predictions: Path) -> Path:
    """The top-k ranking beside a predictions file."""
    return predictions.parent / f"{predictions.stem}-top.json"


@dataclass(frozen=True)
class Layout:
    root: Path

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def checkpoints(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoints"

    def selected(self, stage: str) -> Path:
        return self.stage_dir(stage) / "selected.json"

    def done(self, stage: str) -> Path:
        return self.stage_dir(stage) / "DONE"

    def snapshot(self, stage: str) -> Path:
        return self.root / "snapshots" / stage

    def snapshot_manifest(self, stage: str) -> Path:
        return self.snapshot(stage) / SNAPSHOT_MANIFEST

    def eval_dir(self) -> Path:
        return self.root / "eval"

    def predictions(self, tag: str) -> Path:
        return self.eval_dir() / f"{tag}-predictions.json"

    def prediction_parts(self, tag: str, key: str) -> Path:
        return prediction_parts(self.predictions(tag), key)

    def run_report(self) -> Path:
        return self.root / "report.json"

    def stage_finished(self, stage: str) -> bool:
        """Trained and snapshotted: `stepshot run` never reruns such a stage."""
        return self.done(stage).exists() and self.snapshot_manifest(stage).exists()

    def read_selected(self, stage: str) -> dict:
        return json.loads(self.selected(stage).read_text())


class MessageError(StepshotError, ValueError):
    """A result message that is not what the writing command produces."""


def _number(value: Any, key: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MessageError(f"{key}: expected a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, key: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MessageError(f"{key}: expected an integer >= {low}, got {value!r}")
    return value


def _text(value: Any, key: str, limit: int = 512) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MessageError(f"{key}: expected a non-empty string of at most {limit} characters")
    return value


def _object(text: str, allowed: set[str]) -> dict:
    if len(text.encode()) > MESSAGE_LIMIT:
        raise MessageError(f"message larger than {MESSAGE_LIMIT} bytes")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MessageError("not a JSON object")
    unknown = set(doc) - allowed
    if unknown:
        raise MessageError(f"unknown keys {sorted(unknown)}")
    return doc


@dataclass(frozen=True)
class SnapshotResult:
    """`stepshot snapshot`: the stage's selected checkpoint, frozen (the status's `checkpoint`)."""

    stage: str
    partition: str
    epoch: int
    file: str                  # the selected checkpoint, relative to the work directory
    sha256: str                # of the snapshot's model file (its manifest records the same)
    kendall_tau: float | None = None   # checkpoint selection's score of that epoch, if any

    def message(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)

    def status(self) -> dict:
        return _status_form(self)


@dataclass(frozen=True)
class EvaluationResult:
    """`stepshot evaluate`: the ranking correlation of the inherited-weight accuracies."""

    n: int                             # architectures scored (with ground truth), else evaluated
    kendall_tau: float | None = None   # None when no ground truth is configured
    spearman: float | None = None
    pearson: float | None = None
    evaluated: int | None = None       # architectures predicted (the pool)
    scored: int | None = None          # of those, the ones with a ground truth (None: no ground truth)
    baselines: dict[str, float] | None = None   # free baseline -> Kendall tau on the scored ones
    prior_guided: dict | None = None   # {"proxy", "weight", "kendall_tau"}: spec.evaluation.prior

    def message(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)

    def status(self) -> dict:
        out = _status_form(self)
        if self.baselines is not None:    # names as the spec spells them (grad_norm), not camelCase
            out["baselines"] = {k: round(v, STATUS_DECIMALS) for k, v in self.baselines.items()}
        return out


@dataclass(frozen=True)
class ShardResult:
    """`stepshot evaluate --shard I --shards S`: the slice this shard finished, so the operator
    can count architectures (done of the pool) without reading the claim. The slice itself is
    `stepshot.pool.shard_range(pool, shard, shards)`: the message only has to carry `pool`."""

    shard: int
    shards: int
    pool: int                   # architectures in the whole pool
    archs: int                  # architectures in this shard's slice, all evaluated
    scored: int | None = None   # of those, the ones with a ground truth (None: no ground truth)

    def message(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)


STATUS_DECIMALS = 4   # kubectl prints a number column as stored: 0.5383, not 0.5382611189082496


def _status_form(result: Any) -> dict:
    """The result as the resource's status shows it: camelCase keys (kendallTau), no nulls,
    correlations to STATUS_DECIMALS places (the work directory's files keep every digit)."""
    def form(value: Any) -> Any:
        if isinstance(value, dict):
            return {camel(k): form(v) for k, v in value.items() if v is not None}
        return round(value, STATUS_DECIMALS) if isinstance(value, float) else value
    return {camel(k): form(v) for k, v in asdict(result).items() if v is not None}


def parse_snapshot(text: str) -> SnapshotResult:
    doc = _object(text, {f.name for f in fields(SnapshotResult)})
    sha = _text(doc.get("sha256"), "sha256", 64)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise MessageError("sha256: expected 64 lowercase hex digits")
    return SnapshotResult(stage=_text(doc.get("stage"), "stage", 253),
                          partition=_text(doc.get("partition"), "partition", 253),
                          epoch=_integer(doc.get("epoch"), "epoch"),
                          file=_text(doc.get("file"), "file"), sha256=sha,
                          kendall_tau=_number(doc.get("kendall_tau"), "kendall_tau", optional=True))


def parse_evaluation(text: str) -> EvaluationResult:
    doc = _object(text, {f.name for f in fields(EvaluationResult)})
    return EvaluationResult(n=_integer(doc.get("n"), "n"),
                            **{k: _number(doc.get(k), k, optional=True)
                               for k in ("kendall_tau", "spearman", "pearson")},
                            **{k: None if doc.get(k) is None else _integer(doc.get(k), k)
                               for k in ("evaluated", "scored")},
                            baselines=_baselines(doc.get("baselines")), prior_guided=_prior(doc.get("prior_guided")))


def parse_shard(text: str) -> ShardResult:
    doc = _object(text, {f.name for f in fields(ShardResult)})
    result = ShardResult(shard=_integer(doc.get("shard"), "shard"), shards=_integer(doc.get("shards"), "shards", 1),
                         pool=_integer(doc.get("pool"), "pool"), archs=_integer(doc.get("archs"), "archs"),
                         scored=None if doc.get("scored") is None else _integer(doc.get("scored"), "scored"))
    if result.shard >= result.shards or result.archs > result.pool or (result.scored or 0) > result.archs:
        raise MessageError(f"shard {result.shard} of {result.shards}: {result.archs} archs of {result.pool}, "
                           f"{result.scored} scored: inconsistent")
    return result


def _baselines(value: Any) -> dict[str, float] | None:
    """Untrusted: only the names stepshot.predictors defines, each with a finite tau."""
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= set(BASELINES):
        raise MessageError(f"baselines: expected {{name: tau}} with names from {list(BASELINES)}")
    return {k: _number(v, f"baselines.{k}") for k, v in value.items()}


def _prior(value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("proxy") not in BASELINES:
        raise MessageError(f"prior_guided: expected a proxy from {list(BASELINES)}")
    return {"proxy": value["proxy"], "weight": _number(value.get("weight"), "prior_guided.weight"),
            "kendall_tau": _number(value.get("kendall_tau"), "prior_guided.kendall_tau", optional=True)}


def write_failure(text: str) -> None:
    """Why a command failed, as its termination message (cut to the limit).

    Without it the kubelet falls back to the log's last 2 KiB, which under torchrun is the
    launcher's own traceback, not the error."""
    write_message(text.encode()[:MESSAGE_LIMIT].decode(errors="ignore"))


def write_message(message: str) -> None:
    """The command's result for the operator, as the pod's termination message.

    Written where $STEPSHOT_TERMINATION_LOG says (the operator sets it in every pod), else to
    /dev/termination-log when that exists; nowhere otherwise (a local run)."""
    target = os.environ.get(TERMINATION_ENV)
    path = Path(target) if target else (Path(TERMINATION_LOG) if Path(TERMINATION_LOG).exists() else None)
    if path is None:
        return
    if len(message.encode()) > MESSAGE_LIMIT:
        raise MessageError(f"message larger than {MESSAGE_LIMIT} bytes")
    try:
        path.write_text(message)
    except OSError as exc:
        print(f"warning: cannot write termination message to {path}: {exc}", file=sys.stderr)
