"""Architecture-level progress of a sharded evaluation, from what crosses the pod boundary.

The shards' checkpointed parts live on the claim, which the operator does not mount (and
should not: reading the claim would need the claim, a volume in the operator's pod, or a pod
per read). What it does see without any extra right: each Job's status (which shard indexes
completed) and each finished shard's termination message (`stepshot.workdir.ShardResult`:
the pool's size, its slice's size, how many of the slice have a ground truth). Slices are
`stepshot.pool.shard_range(pool, index, shards)`, so the pool size and the completed indexes
give the architectures evaluated level-based; the messages, read once and kept in the status
(pods may be gone later), give the scored ones. Progress inside a running shard is the
trainer's `stepshot_trainer_evaluation_subnets_done` gauge, not the status.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from stepshot.pool import shard_range
from stepshot.workdir import MessageError, parse_shard


def completed_indexes(text: object, shards: int) -> set[int]:
    """An Indexed Job's `status.completedIndexes` ("0-2,5"): the indexes below `shards`."""
    done: set[int] = set()
    if not isinstance(text, str):
        return done
    for piece in text.split(","):
        low, _, high = piece.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            continue
        done.update(range(max(0, first), min(last, shards - 1) + 1))
    return done


def reports(terminations: Iterable[Mapping], shards: int, old: Mapping[str, Mapping]) -> dict[str, dict]:
    """{index: {"pool", "archs", "scored"}} of the shards whose message was read, now or before.

    Untrusted: a message must parse, name a shard of this evaluation, agree with the pool size
    already known and carry its slice's true size; anything else is left out."""
    out = {k: dict(v) for k, v in old.items() if isinstance(v, Mapping)}
    pool = next((v.get("pool") for v in out.values()), None)
    for term in terminations:
        if term.get("exitCode") != 0 or not term.get("message"):
            continue
        try:
            r = parse_shard(term["message"])
        except MessageError:
            continue
        if r.shards != shards or (pool is not None and r.pool != pool) \
                or r.archs != len(shard_range(r.pool, r.shard, shards)):
            continue
        pool = r.pool
        out.setdefault(str(r.shard), {k: v for k, v in (("pool", r.pool), ("archs", r.archs),
                                                          ("scored", r.scored)) if v is not None})
    return out


def archs(shards: int, done: Iterable[int], read: Mapping[str, Mapping]) -> dict | None:
    """{"evaluated", "total", "scored"?, "progress"} once the pool size is known: every completed
    shard's slice counts as evaluated; scored counts the shards that reported it."""
    pool = next((v.get("pool") for v in read.values()), None)
    if not isinstance(pool, int):
        return None
    evaluated = sum(len(shard_range(pool, i, shards)) for i in set(done) if 0 <= i < shards)
    out = {"evaluated": evaluated, "total": pool, "progress": f"{evaluated}/{pool}"}
    scored: Sequence[int] = [v["scored"] for v in read.values() if isinstance(v.get("scored"), int)]
    if scored:
        out["scored"] = sum(scored)
    return out
