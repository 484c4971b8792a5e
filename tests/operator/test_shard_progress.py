"""Architecture-level progress of a sharded evaluation: from the Jobs' status and the finished
shards' termination messages (untrusted), kept in the status once read, shown in `kubectl get`."""
from stepshot.manifests import ClusterCaps
from stepshot.pool import shard_range
from stepshot.workdir import EvaluationResult, ShardResult
from stepshot_operator import reconcile as rc
from stepshot_operator import shard_progress
from test_reconcile import Cluster, _run_to_evaluation, resource


def _shard(i, shards=3, pool=100, scored=None, **forged):
    r = ShardResult(shard=i, shards=shards, pool=pool, archs=len(shard_range(pool, i, shards)), scored=scored)
    return ShardResult(**{**r.__dict__, **forged}).message()


def test_completed_indexes_parse_ranges_and_ignore_what_is_not_an_index():
    assert shard_progress.completed_indexes("0-2,5,7-8", 8) == {0, 1, 2, 5, 7}
    assert shard_progress.completed_indexes("", 4) == set() and shard_progress.completed_indexes(None, 4) == set()
    assert shard_progress.completed_indexes("x,1,2-z", 4) == {1}


def test_per_shard_jobs_count_archs_done_of_the_pool_and_keep_read_messages():
    c = Cluster(resource(fewShot={"mode": "none"}, evaluation={"shards": 3, "maxParallel": 3}),
                caps=ClusterCaps(version=(1, 20)))
    c.step()
    _run_to_evaluation(c)
    assert "archs" not in c.body["status"]                      # nothing known yet: no guess
    c.finish("demo-eval-1", message=_shard(1, scored=10))
    c.finish("demo-eval-2", message=_shard(2, pool=999))        # disagrees with the pool: not read
    r = c.step()
    # Evaluated: the succeeded Jobs' slices (33 + 34); scored: the messages read.
    assert r.status["archs"] == {"evaluated": 67, "total": 100, "scored": 10, "progress": "67/100"}
    assert r.status["stages"]["eval"]["shardReports"] == {"1": {"pool": 100, "archs": 33, "scored": 10}}
    c.terms.clear()                                             # the pods are gone: the status remembers
    c.finish("demo-eval-0")                                     # finished without a message: its slice counts
    r = c.step()
    assert r.status["archs"] == {"evaluated": 100, "total": 100, "scored": 10, "progress": "100/100"}
    c.finish("demo-eval-merge", message=EvaluationResult(n=30, kendall_tau=0.5, evaluated=100, scored=30).message())
    r = c.step()
    assert r.status["phase"] == "Succeeded"
    assert r.status["archs"] == {"evaluated": 100, "total": 100, "scored": 30, "progress": "100/100"}


def test_an_indexed_job_counts_its_completed_indexes_and_reads_each_message_once():
    c = Cluster(resource(fewShot={"mode": "none"}, evaluation={"shards": 3, "maxParallel": 2}))
    c.step()
    _run_to_evaluation(c)
    job = c.jobs["demo-eval"]
    c.jobs["demo-eval"] = dict(job, status={"succeeded": 2, "active": 1, "completedIndexes": "0,2"})
    forged = _shard(0, archs=50)                                # not the slice's size: refused
    c.terms["demo-eval"] = [{"exitCode": 0, "message": m, "finishedAt": "t"}
                            for m in (forged, _shard(0, scored=3), _shard(2, scored=4), "not json")]
    r = c.step()
    assert c.listed
    assert r.status["archs"] == {"evaluated": 33 + 34, "total": 100, "scored": 7, "progress": "67/100"}
    c.step()
    assert not c.listed                                         # both messages recorded: no pod list for them
    c.jobs["demo-eval"] = dict(job, status={"succeeded": 3, "active": 0, "completedIndexes": "0-2"})
    assert rc.terminations_needed(c.body, c.jobs)               # a third shard finished: read it
