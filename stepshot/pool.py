"""Ranking a pool of architectures in shards (torch-free): the slices, the checkpointed parts,
the streaming merge, the challenge submission, the top-k ranking and the prior-guided ranking.

A pool of N architectures (in the file's order) is evaluated in *parts*: each part holds the
predictions of the architectures [start, end) of the pool, written atomically once all of
them are evaluated (`workdir.part_file`). Shard I of S evaluates the contiguous slice
`shard_range(N, I, S)`, skipping whatever parts already cover, so a killed shard resumes
where its last part ended and a rerun with another shard count reuses every finished part.
Parts live in a directory named by `pool_key`: the architectures, the snapshots' hashes and
the evaluation settings, so parts of another pool or another super-net are never mixed in.

The merge walks the parts in pool order and writes one predictions file entry by entry,
the submission beside it, the top-k and the accuracies of the architectures that have a
ground truth: its memory is the k best and the scored ones, not the pool.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import math
from array import array
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Collection, Iterator, Mapping, Sequence

from stepshot import predictors
from stepshot.atomic import atomic_open, atomic_write
from stepshot.correlate import normalize_code
from stepshot.errors import StepshotError
from stepshot.space import SearchSpace, complexity, parse_arch
from stepshot.workdir import part_file, part_span

PART_FORMAT = 1


class PoolError(StepshotError, ValueError):
    """Parts that do not make up the pool (missing, or not this pool's)."""


def shard_range(total: int, shard: int, shards: int) -> range:
    """The deterministic slice of a pool of `total` architectures that shard `shard` of
    `shards` evaluates: contiguous, sizes differing by at most one, covering the pool."""
    if shards < 1 or not 0 <= shard < shards:
        raise PoolError(f"shard {shard} of {shards}: need 0 <= shard < shards")
    return range(total * shard // shards, total * (shard + 1) // shards)


def pool_key(codes: Mapping[str, str], context: Mapping) -> str:
    """What the predictions are of: the architectures in order and `context` (snapshot hashes,
    evaluation settings). Not where they were made (device, threads): that is recorded per part."""
    h = hashlib.sha256(json.dumps(context, sort_keys=True).encode())
    for name, code in codes.items():
        h.update(f"{name}\t{code}\n".encode())
    return h.hexdigest()[:16]


def finished_spans(parts: Path) -> list[tuple[int, int]]:
    """[(start, end)] of the parts written so far, sorted."""
    if not parts.is_dir():
        return []
    return sorted(span for span in (part_span(p.name) for p in parts.iterdir()) if span is not None)


def missing(span: range, done: list[tuple[int, int]]) -> list[range]:
    """The pieces of `span` no finished part covers."""
    gaps, pos = [], span.start
    for start, end in done:
        if end <= pos or start >= span.stop:
            continue
        if start > pos:
            gaps.append(range(pos, start))
        pos = max(pos, end)
    if pos < span.stop:
        gaps.append(range(pos, span.stop))
    return gaps


def chunks(gaps: list[range], size: int) -> list[range]:
    """The gaps cut into parts of at most `size` architectures (each one checkpoint)."""
    if size < 1:
        raise PoolError(f"checkpoint size must be at least 1, got {size}")
    return [range(i, min(i + size, gap.stop)) for gap in gaps for i in range(gap.start, gap.stop, size)]


def write_part(parts: Path, span: range, predictions: Mapping[str, dict], seconds: float,
               made: Mapping | None = None) -> Path:
    """One finished part, atomically: a reader sees all of it or none."""
    if len(predictions) != len(span):
        raise PoolError(f"part {span.start}-{span.stop}: {len(predictions)} predictions for {len(span)} archs")
    path = part_file(parts, span.start, span.stop)
    doc = {"format": PART_FORMAT, "start": span.start, "end": span.stop, "seconds": round(seconds, 3),
           "made": dict(made or {}), "predictions": dict(predictions)}
    atomic_write(path, json.dumps(doc, allow_nan=False).encode())
    return path


def _read_part(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PoolError(f"{path}: cannot read: {exc}") from exc
    span = part_span(path.name)
    if (not isinstance(doc, dict) or doc.get("format") != PART_FORMAT or span != (doc.get("start"), doc.get("end"))
            or not isinstance(doc.get("predictions"), dict) or len(doc["predictions"]) != span[1] - span[0]):
        raise PoolError(f"{path}: not a part of this format ({PART_FORMAT}) or not its span")
    for name, entry in doc["predictions"].items():   # a file on a shared volume: checked, not trusted
        acc = entry.get("acc") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("arch"), str) or isinstance(acc, bool) \
                or not isinstance(acc, (int, float)) or not math.isfinite(acc):
            raise PoolError(f"{path}: entry {name!r} needs an 'arch' code and a finite 'acc'")
    return doc


@dataclass
class Merged:
    """What the merge saw: counts, the top-k, the predictions of the scored architectures."""
    evaluated: int = 0
    subnet_seconds: float = 0.0              # evaluation time of all parts, summed over processes
    made: list[dict] = field(default_factory=list)   # distinct devices/threads/torch the parts came from
    top: list[dict] = field(default_factory=list)
    scored: dict[str, float] = field(default_factory=dict)   # code -> predicted acc, ground-truth codes only


def _entries(parts: Path, names: list[str], merged: Merged) -> Iterator[tuple[str, dict]]:
    """(name, prediction) of the whole pool in order, from parts that tile it (overlaps from
    runs with different shard counts are the same numbers: the first one is taken)."""
    pos = 0
    for start, end in finished_spans(parts):
        if end <= pos:
            continue
        if start > pos:
            break
        doc = _read_part(part_file(parts, start, end))
        merged.subnet_seconds += float(doc.get("seconds", 0.0))
        if doc.get("made") and doc["made"] not in merged.made:
            merged.made.append(doc["made"])
        for i, (name, entry) in enumerate(doc["predictions"].items(), start):
            if i < pos:
                continue
            if name != names[i]:
                raise PoolError(f"{parts}: entry {i} is {name!r}, the pool's is {names[i]!r}")
            yield name, entry
        pos = end
    if pos < len(names):
        lacking = sum(len(r) for r in missing(range(len(names)), finished_spans(parts)))
        raise PoolError(f"{parts}: {lacking} of {len(names)} architectures not evaluated yet "
                        f"(run the missing shards, then merge)")


def _json_object_writer(f: IO[bytes]):
    """Writes `{"name": entry, ...}` one entry per line, so a 45,000-entry file streams."""
    count = 0

    def write(name: str, entry: dict) -> None:
        nonlocal count
        f.write(b"{\n" if count == 0 else b",\n")
        f.write(f"  {json.dumps(name)}: {json.dumps(entry, sort_keys=True, allow_nan=False)}".encode())
        count += 1

    def close() -> None:
        f.write(b"\n}\n" if count else b"{}\n")
    return write, close


def merge(parts: Path, pool: Mapping[str, str], out: Path, space: SearchSpace, *,
          truth_codes: set[str] | frozenset = frozenset(), submission: Path | None = None,
          top: int = 0, top_file: Path | None = None) -> Merged:
    """One predictions file from the parts (atomically, streamed), and optionally the
    challenge submission (`{"archN": {"arch": CODE, "acc": ACC}}`, the pool's keys, order and
    codes as written) and the `top` best with their params and MACs."""
    names = list(pool)
    merged, best = Merged(), []
    with ExitStack() as stack:
        write, close = _json_object_writer(stack.enter_context(atomic_open(out)))
        if submission is not None:
            write_sub, close_sub = _json_object_writer(stack.enter_context(atomic_open(submission)))
        for i, (name, entry) in enumerate(_entries(parts, names, merged)):
            write(name, entry)
            if submission is not None:
                write_sub(name, {"arch": pool[name], "acc": entry["acc"]})
            code = normalize_code(entry["arch"])
            if code in truth_codes:
                merged.scored[code] = float(entry["acc"])
            if top:   # a min-heap of the k best; on equal acc the earlier architecture ranks first
                item = (float(entry["acc"]), -i, name, entry["arch"])
                (heapq.heappush if len(best) < top else heapq.heappushpop)(best, item)
            merged.evaluated += 1
        close()
        if submission is not None:
            close_sub()
    merged.top = [_ranked(rank, name, code, acc, space)
                  for rank, (acc, _, name, code) in enumerate(sorted(best, reverse=True), 1)]
    if top_file is not None:
        atomic_write(top_file, (json.dumps({"of": merged.evaluated, "top": merged.top}, indent=2) + "\n").encode())
    return merged


def _ranked(rank: int, name: str, code: str, acc: float, space: SearchSpace) -> dict:
    params, macs = complexity(parse_arch(code, space))
    return {"rank": rank, "name": name, "arch": code, "acc": acc, "params": params, "macs": macs}


PRIOR_CHUNK = 1024   # codes per call of the prior: a zero-cost proxy scores (and caches) them together


def prior_guided(parts: Path, names: list[str], prior: Callable[[list[str]], Sequence[float]], weight: float,
                 out: Path, keep: Collection[str] = frozenset()) -> dict[str, float]:
    """The prior-guided ranking of the whole pool (stepshot.predictors.prior_guided, ranked over
    the pool's entries), written to `out` as {code: score} in pool order; returns the scores of
    the codes in `keep` (the ground truth's, to score it).

    Bounded: two passes over the parts, holding two numbers per architecture (its accuracy and
    its prior's score, then their rank fractions) and never the predictions' entries or a file's
    text; `prior` is asked for PRIOR_CHUNK codes at a time."""
    predictors.check_weight(weight)
    accs, scores, chunk = array("d"), array("d"), []
    for _, entry in _entries(parts, names, Merged()):
        accs.append(float(entry["acc"]))
        chunk.append(normalize_code(entry["arch"]))
        if len(chunk) == PRIOR_CHUNK:
            scores.extend(_prior_scores(prior, chunk))
            chunk = []
    scores.extend(_prior_scores(prior, chunk) if chunk else [])
    a, b = predictors.rank_fractions(accs), predictors.rank_fractions(scores)
    del accs, scores
    kept: dict[str, float] = {}
    with atomic_open(out) as f:
        write, close = _json_object_writer(f)
        for i, (_, entry) in enumerate(_entries(parts, names, Merged())):
            code, score = normalize_code(entry["arch"]), predictors.guided_score(a[i], b[i], weight)
            write(code, score)
            if code in keep:
                kept[code] = score
        close()
    return kept


def _prior_scores(prior: Callable[[list[str]], Sequence[float]], codes: list[str]) -> list[float]:
    scores = [float(s) for s in prior(codes)]
    if len(scores) != len(codes) or not all(math.isfinite(s) for s in scores):
        raise PoolError(f"the prior gave {len(scores)} scores for {len(codes)} codes, or a non-finite one")
    return scores
