"""Pool evaluation's core: shard slices, the parts a shard resumes from, the streaming merge,
the challenge submission, the top-k and the prior-guided ranking (torch-free: the predictions
here are written by hand)."""
import json
import tracemalloc

import pytest

from stepshot import pool, predictors
from stepshot.archsets import challenge_format, pool_entries, stratified_archs
from stepshot.space import complexity, get_space, parse_arch
from stepshot.workdir import part_file, part_span, prediction_parts, top_file

SPACE = get_space("resnet48-fmnist")


def _pool(n: int) -> dict[str, str]:
    return {name: e["arch"] for name, e in challenge_format(stratified_archs(SPACE, n, seed=1)).items()}


def _predictions(codes: dict[str, str], span: range) -> dict[str, dict]:
    names = list(codes)
    return {names[i]: {"arch": codes[names[i]], "acc": round(50 + (i * 37 % 101) / 3, 4), "stage": "oneshot"}
            for i in span}


def test_shards_are_contiguous_deterministic_and_cover_the_pool():
    for total in (0, 1, 7, 100, 45_000):
        for shards in (1, 2, 3, 8):
            slices = [pool.shard_range(total, i, shards) for i in range(shards)]
            assert [i for s in slices for i in s] == list(range(total))
            assert max(map(len, slices)) - min(map(len, slices)) <= 1
    for bad in ((0, 0), (2, 2), (-1, 2)):
        with pytest.raises(pool.PoolError):
            pool.shard_range(10, *bad)


def test_missing_and_chunks_resume_after_the_last_finished_part():
    done = [(0, 4), (4, 8), (12, 16), (30, 40)]
    assert pool.missing(range(0, 20), done) == [range(8, 12), range(16, 20)]
    assert pool.missing(range(10, 35), done) == [range(10, 12), range(16, 30)]   # parts straddle the slice
    assert pool.missing(range(0, 8), done) == []
    assert pool.chunks([range(8, 12), range(16, 27)], 4) == [range(8, 12), range(16, 20), range(20, 24),
                                                            range(24, 27)]
    with pytest.raises(pool.PoolError):
        pool.chunks([range(0, 3)], 0)


def test_part_names_and_the_layout(tmp_path):
    out = tmp_path / "eval" / "step2-predictions.json"
    parts = prediction_parts(out, "abc")
    assert parts == tmp_path / "eval" / "step2-predictions.parts" / "abc"
    assert part_span(part_file(parts, 8, 12).name) == (8, 12)
    assert part_span(".part-0000008-0000012.json.x1.tmp") is None and part_span("part-0000008-0000008.json") is None
    assert top_file(out) == tmp_path / "eval" / "step2-predictions-top.json"


def test_pool_key_is_of_the_codes_their_order_and_the_context():
    codes = _pool(5)
    key = pool.pool_key(codes, {"snapshots": {"oneshot": "a"}})
    assert key == pool.pool_key(dict(codes), {"snapshots": {"oneshot": "a"}})
    assert key != pool.pool_key(dict(reversed(codes.items())), {"snapshots": {"oneshot": "a"}})
    assert key != pool.pool_key(codes, {"snapshots": {"oneshot": "b"}})


def test_merge_streams_parts_in_pool_order_with_submission_top_and_scores(tmp_path):
    codes = _pool(23)
    parts = tmp_path / "parts"
    # Written out of order, by two "shard counts" that overlap (the same numbers): merged once each.
    for span in (range(12, 23), range(0, 5), range(5, 12), range(8, 16)):
        pool.write_part(parts, span, _predictions(codes, span), 1.5, {"device": "cpu", "threads": 1})
    raw = {name: code[1:] for name, code in codes.items()}      # the challenge writes 51-char codes
    truth = {codes[n] for n in list(codes)[::3]}
    out, sub = tmp_path / "pred.json", tmp_path / "submission.json"
    merged = pool.merge(parts, raw, out, SPACE, truth_codes=truth, submission=sub, top=5, top_file=tmp_path / "top.json")
    everything = _predictions(codes, range(23))
    assert list(json.loads(out.read_text()).items()) == list(everything.items())
    submission = json.loads(sub.read_text())
    assert list(submission) == list(codes)
    assert submission == {n: {"arch": raw[n], "acc": everything[n]["acc"]} for n in codes}
    assert pool_entries(sub) == raw
    assert merged.evaluated == 23 and merged.subnet_seconds == 6.0 and merged.made == [{"device": "cpu", "threads": 1}]
    assert merged.scored == {codes[n]: everything[n]["acc"] for n in list(codes)[::3]}
    best = sorted(codes, key=lambda n: (-everything[n]["acc"], list(codes).index(n)))[:5]
    assert [t["name"] for t in merged.top] == best and [t["rank"] for t in merged.top] == [1, 2, 3, 4, 5]
    first = merged.top[0]
    assert (first["params"], first["macs"]) == complexity(parse_arch(codes[best[0]], SPACE))
    assert json.loads((tmp_path / "top.json").read_text()) == {"of": 23, "top": merged.top}


def test_merge_refuses_a_pool_with_missing_or_foreign_parts(tmp_path):
    codes = _pool(10)
    parts = tmp_path / "parts"
    pool.write_part(parts, range(0, 4), _predictions(codes, range(0, 4)), 1.0)
    pool.write_part(parts, range(6, 10), _predictions(codes, range(6, 10)), 1.0)
    out = tmp_path / "pred.json"
    with pytest.raises(pool.PoolError, match="2 of 10 architectures not evaluated yet"):
        pool.merge(parts, codes, out, SPACE)
    assert not out.exists()                   # atomic: nothing half-written is left
    pool.write_part(parts, range(4, 6), _predictions(codes, range(4, 6)), 1.0)
    other = dict(reversed(codes.items()))
    with pytest.raises(pool.PoolError, match="the pool's is"):
        pool.merge(parts, other, out, SPACE)
    with pytest.raises(pool.PoolError, match="predictions for"):
        pool.write_part(parts, range(0, 3), _predictions(codes, range(0, 2)), 1.0)
    part_file(parts, 4, 6).write_text('{"format": 1, "start": 4, "end": 6, "predictions": {}}')
    with pytest.raises(pool.PoolError, match="not its span"):
        pool.merge(parts, codes, out, SPACE)
    names = list(codes)
    bad = {"format": 1, "start": 4, "end": 6, "predictions": {names[4]: {"arch": codes[names[4]], "acc": "NaN"},
                                                             names[5]: {"arch": codes[names[5]], "acc": 1.0}}}
    part_file(parts, 4, 6).write_text(json.dumps(bad))
    with pytest.raises(pool.PoolError, match="finite 'acc'"):
        pool.merge(parts, codes, out, SPACE)


def test_prior_guided_over_the_parts_is_the_in_memory_definition(tmp_path, monkeypatch):
    codes = _pool(23)
    parts = tmp_path / "parts"
    for span in (range(12, 23), range(0, 5), range(5, 12), range(8, 16)):
        pool.write_part(parts, span, _predictions(codes, span), 1.0)
    monkeypatch.setattr(pool, "PRIOR_CHUNK", 4)               # several calls of the prior
    macs = predictors.complexity_scores(codes.values(), SPACE)["macs"]
    asked = []

    def prior(chunk):
        asked.append(len(chunk))
        return [macs[c] for c in chunk]
    keep = {codes[n] for n in list(codes)[::3]}
    out = tmp_path / "pred-prior.json"
    kept = pool.prior_guided(parts, list(codes), prior, 0.3, out, keep=keep)
    accs = {e["arch"]: e["acc"] for e in _predictions(codes, range(23)).values()}
    expected = predictors.prior_guided(accs, macs, 0.3)
    assert list(json.loads(out.read_text())) == list(codes.values())    # pool order
    assert json.loads(out.read_text()) == expected and kept == {c: expected[c] for c in keep}
    assert asked == [4, 4, 4, 4, 4, 3]
    with pytest.raises(pool.PoolError, match="gave 2 scores for 4 codes"):
        pool.prior_guided(parts, list(codes), lambda chunk: [1.0, 2.0][:len(chunk) - 1], 0.3, out)


def test_prior_guided_memory_is_a_few_numbers_per_architecture_not_the_predictions(tmp_path):
    """10,000 architectures in parts of 500: the streamed path's peak against reading the
    predictions file whole and ranking it in memory, both with the same prior."""
    n = 10_000
    names = [f"arch{i}" for i in range(n)]
    codes = {name: f"{i:052d}" for i, name in enumerate(names)}
    parts = tmp_path / "parts"
    for start in range(0, n, 500):
        span = range(start, start + 500)
        pool.write_part(parts, span, {names[i]: {"arch": codes[names[i]], "acc": (i * 7919 % 1000) / 10,
                                                 "stage": "oneshot"} for i in span}, 1.0)
    out = tmp_path / "pred.json"
    pool.merge(parts, codes, out, SPACE)
    prior = lambda chunk: [float(int(c) % 97) for c in chunk]   # noqa: E731

    def whole_file():
        accs = {e["arch"]: e["acc"] for e in json.loads(out.read_text()).values()}
        return predictors.prior_guided(accs, dict(zip(accs, prior(list(accs)))), 0.5)

    def peak(run):
        tracemalloc.start()
        run()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top
    streamed = peak(lambda: pool.prior_guided(parts, names, prior, 0.5, tmp_path / "prior.json"))
    assert json.loads((tmp_path / "prior.json").read_text()) == whole_file()
    # Measured: about 110 bytes per architecture streamed (a part and a chunk of codes included),
    # 570 read whole.
    assert streamed < 150 * n and 4 * streamed < peak(whole_file), (streamed, peak(whole_file))
