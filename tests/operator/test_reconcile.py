"""The level-based stage state machine, driven with fake observed Jobs (no cluster)."""
import copy
from datetime import datetime, timedelta, timezone

import pytest

from stepshot import manifests
from stepshot.errors import StepshotError
from stepshot.manifests import ClusterCaps
from stepshot.plan import Split, Stage, build_plan
from stepshot.split_modes import MODES, SplitMode
from stepshot.spec import STATUS_SCHEMA, load
from stepshot.spec.openapi import check as _check
from stepshot.workdir import EvaluationResult, SnapshotResult
from stepshot_operator import reconcile as rc

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
BASE = {
    "apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining",
    "metadata": {"name": "demo", "namespace": "ns", "generation": 1},
    "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"}, "storage": {"claimName": "work"},
             "fewShot": {"mode": "partitioned", "maxParallel": 2,
                         "steps": [{"dimension": "width", "stage": 4, "parts": 2},
                                   {"dimension": "depth", "stage": 3, "parts": 2}]}},
}


def resource(**spec):
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec)
    return doc


def finished(job, ok=True, at="2026-01-01T00:10:00Z"):
    job = copy.deepcopy(job)
    cond = {"type": "Complete" if ok else "Failed", "status": "True", "lastTransitionTime": at}
    if not ok:
        cond.update(reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
    job["status"] = {"startTime": "2026-01-01T00:00:00Z", "conditions": [cond],
                     **({"completionTime": at, "succeeded": 1} if ok else {"failed": 3})}
    return job


class Cluster:
    """Plays the API server and the handler: keeps created Jobs and the first spec ConfigMap
    (a second create is AlreadyExists), reads it back when the handler would; the test plays
    the Job controller."""

    def __init__(self, body, caps=ClusterCaps()):
        self.body, self.caps = body, caps
        self.jobs, self.terms, self.created, self.config_map = {}, {}, [], None
        self.waiting = {}      # Job -> its pods that cannot start (stepshot_operator.pods.waiting)
        self.reads = 0

    def step(self, now=NOW):
        started, present = None, None
        edited = rc.started_spec_needed(rc.load_resource(self.body), self.jobs)
        if edited or rc.pods_to_start(self.jobs):        # when the handler reads the ConfigMap
            self.reads += edited
            present = self.config_map is not None
            started = manifests.spec_from_config_map(self.config_map) if edited else None
        # Pods are listed only when the handler would list them.
        self.listed = rc.terminations_needed(self.body, self.jobs)
        terms = self.terms if self.listed else {}
        waiting = self.waiting if self.listed or rc.pods_may_wait(self.jobs) else {}
        observed = rc.Observed(self.jobs, terms, started_spec=started, config_map_present=present, waiting=waiting)
        result = rc.reconcile(self.body, observed, self.caps, now)
        for obj in result.create:
            if obj["kind"] == "ConfigMap":
                self.config_map = self.config_map or obj
            if obj["kind"] == "Job":
                self.created.append(obj["metadata"]["name"])
                assert obj["metadata"]["name"] not in self.jobs, "duplicate create"
                self.jobs[obj["metadata"]["name"]] = obj
        for name, suspend in [(n, True) for n in result.suspend] + [(n, False) for n in result.resume]:
            self.set_suspend(name, suspend, by_operator=True)   # what k8s.Kube.set_job_suspend patches
        for name in result.delete_jobs:
            del self.jobs[name]
        self.body = dict(self.body, status=result.status)
        assert not rc_schema_errors(result.status), rc_schema_errors(result.status)
        return result

    def set_suspend(self, name, suspend, by_operator):
        job = self.jobs[name] = copy.deepcopy(self.jobs[name])
        job["spec"]["suspend"] = suspend
        annotations = job["metadata"].setdefault("annotations", {})
        annotations.pop(manifests.ANNOTATION_SUSPENDED_BY, None)
        if suspend and by_operator:
            annotations[manifests.ANNOTATION_SUSPENDED_BY] = manifests.SUSPENDED_BY_OPERATOR

    def finish(self, name, ok=True, message=None, exit_code=None):
        self.jobs[name] = finished(self.jobs[name], ok)
        if message is not None:
            code = exit_code if exit_code is not None else 0 if ok else 1
            self.terms[name] = [{"exitCode": code, "message": message, "finishedAt": "t"}]

    def active(self):
        return sorted(n for n, j in self.jobs.items() if rc.job_state(j) == rc.ACTIVE)


def rc_schema_errors(status):
    """The status checked against the CRD's status schema as strictly as a spec (unknown keys
    included): the API server would prune anything the schema lacks."""
    empty = [f"{path}: empty string (the 1.20 API server reads it as null)" for path in _empty_strings(status)]
    return list(_check(status, STATUS_SCHEMA, "status")) + empty


def _empty_strings(value, path="status"):
    if value == "":
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _empty_strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _empty_strings(item, f"{path}[{i}]")


def jobs_of(result):
    return [o["metadata"]["name"] for o in result.create if o["kind"] == "Job"]


def test_partitioned_run_walks_every_stage_to_succeeded():
    c = Cluster(resource())
    r = c.step()
    assert r.create[0]["kind"] == "ConfigMap" and jobs_of(r) == ["demo-oneshot"]
    assert r.status["phase"] == "Running" and r.status["currentStage"] == "oneshot"
    assert c.step().create == ()                                  # nothing new while it runs
    c.finish("demo-oneshot")
    r = c.step()
    assert jobs_of(r) == ["demo-oneshot-snap"] and r.status["stages"]["oneshot"]["state"] == "Snapshotting"
    snap = SnapshotResult(stage="oneshot", partition="root", epoch=9, file="oneshot/checkpoints/epoch-0009.pt",
                          sha256="ab" * 32)
    c.finish("demo-oneshot-snap", message=snap.message())
    r = c.step()
    assert jobs_of(r) == ["demo-s4w0", "demo-s4w1"]
    assert r.status["stages"]["oneshot"]["checkpoint"] == {
        "stage": "oneshot", "partition": "root", "epoch": 9, "file": "oneshot/checkpoints/epoch-0009.pt",
        "sha256": "ab" * 32}
    assert r.status["progress"] == "1/8" and r.status["stepIndex"] == 1
    for name in ("demo-s4w0", "demo-s4w1"):
        c.finish(name)
    assert sorted(jobs_of(c.step())) == ["demo-s4w0-snap", "demo-s4w1-snap"]
    c.finish("demo-s4w0-snap")
    r = c.step()
    assert jobs_of(r) == ["demo-s4w0-s3d0", "demo-s4w0-s3d1"]    # children start as soon as their parent is frozen
    assert r.status["progress"] == "2/8"
    c.finish("demo-s4w1-snap")
    assert jobs_of(c.step()) == []                                # maxParallel = 2 already running
    c.finish("demo-s4w0-s3d0")
    assert jobs_of(c.step()) == ["demo-s4w0-s3d0-snap", "demo-s4w1-s3d0"]
    while "demo-eval" not in c.jobs:                              # finish the rest as it appears
        for name in c.active():
            c.finish(name)
        c.step()
    assert c.body["status"]["phase"] == "Running" and c.body["status"]["currentStage"] == "eval"
    c.finish("demo-eval", message=EvaluationResult(n=50, kendall_tau=0.71, spearman=0.88).message())
    r = c.step()
    assert r.status["phase"] == "Succeeded" and r.status["result"]["kendallTau"] == 0.71
    assert r.status["progress"] == "8/8" and r.status["currentStage"] == "done"
    cond = {x["type"]: x for x in r.status["conditions"]}
    assert cond["Succeeded"]["status"] == "True" and cond["Succeeded"]["observedGeneration"] == 1
    assert cond["Running"]["status"] == "False"
    assert ("resource", "Running", "Succeeded") in {(t.stage, t.old, t.new) for t in r.transitions}
    assert c.step().create == () and c.step().transitions == ()   # settled
    assert len(c.created) == len(set(c.created))


def test_restart_idempotence_same_observation_same_actions():
    c = Cluster(resource())
    c.step()
    c.finish("demo-oneshot")
    c.step()
    c.finish("demo-oneshot-snap")
    before = copy.deepcopy(c.body)
    a = rc.reconcile(before, rc.Observed(c.jobs), ClusterCaps(), NOW)
    b = rc.reconcile(before, rc.Observed(c.jobs), ClusterCaps(), NOW + timedelta(seconds=5))
    assert [o["metadata"]["name"] for o in a.create] == [o["metadata"]["name"] for o in b.create]
    # an operator that lost its status (or never wrote it) derives the same from the Jobs
    fresh = dict(before, status={})
    assert jobs_of(rc.reconcile(fresh, rc.Observed(c.jobs), ClusterCaps(), NOW)) == jobs_of(a)
    c.step()
    assert jobs_of(c.step()) == []                                # once created, never again


def test_failed_partition_fails_the_resource_and_keeps_the_others():
    c = Cluster(resource())
    c.step(); c.finish("demo-oneshot"); c.step(); c.finish("demo-oneshot-snap"); c.step()
    c.finish("demo-s4w1", ok=False, message="Traceback ...\nRuntimeError: CUDA out of memory")
    r = c.step()
    assert r.status["phase"] == "Failed"
    cond = {x["type"]: x for x in r.status["conditions"]}["Failed"]
    assert cond["status"] == "True" and cond["reason"] == "PartitionFailed"
    assert "partition s4w1" in cond["message"] and "BackoffLimitExceeded" in cond["message"]
    assert "CUDA out of memory" in cond["message"]
    assert r.status["stages"]["s4w1"]["state"] == "Failed"
    assert any(t.warning and t.stage == "s4w1" for t in r.transitions)
    assert not r.suspend and jobs_of(r) == []                    # s4w0 keeps running, untouched
    c.finish("demo-s4w0")
    r = c.step()
    assert jobs_of(r) == ["demo-s4w0-snap"]                      # its work is still frozen
    c.finish("demo-s4w0-snap")
    assert jobs_of(c.step()) == [] and c.body["status"]["phase"] == "Failed"
    del c.jobs["demo-s4w1"]                                      # the user retries: deletes the failed Job
    c.created.remove("demo-s4w1")
    r = c.step()
    assert "demo-s4w1" in jobs_of(r) and r.status["phase"] == "Running"


def test_suspend_stops_new_jobs_and_suspends_running_ones():
    body = resource(suspend=True)
    r = rc.reconcile(body, rc.Observed(), ClusterCaps(), NOW)
    assert r.create == () and r.status["phase"] == "Suspended"
    c = Cluster(resource())
    c.step()
    c.body["spec"]["suspend"] = True
    r = c.step()
    assert r.suspend == ("demo-oneshot",) and r.status["phase"] == "Suspended"
    assert _cond(r.status, "Suspended")["reason"] == "SuspendRequested"
    c.body["spec"]["suspend"] = False
    r = c.step()
    assert r.resume == ("demo-oneshot",) and r.status["phase"] == "Running"
    # an API server without Job.spec.suspend (< 1.22) gets no patches that would be pruned
    old = Cluster(resource(), caps=ClusterCaps(version=(1, 20)))
    old.step()
    old.body["spec"]["suspend"] = True
    assert old.step().suspend == ()


def test_grouped_chain_and_transition_events():
    c = Cluster(resource(fewShot={"mode": "grouped", "groups": [2, 3]}))
    seen = []
    for _ in range(20):
        r = c.step()
        seen += [(t.stage, t.new) for t in r.transitions]
        for name in c.active():
            c.finish(name, message=EvaluationResult(n=8, kendall_tau=0.5).message() if name == "demo-eval" else None)
    assert c.body["status"]["phase"] == "Succeeded"
    assert [s for s, new in seen if new == "Running" and s != "resource"] == ["oneshot", "g2", "g3", "eval"]
    assert ("g2", "Snapshotting") in seen and ("eval", "Succeeded") in seen
    assert c.body["status"]["progress"] == "4/4"


def test_multi_node_fallback_stage_waits_for_every_rank_and_repairs_missing_jobs():
    caps = ClusterCaps(version=(1, 20))
    c = Cluster(resource(resources={"nodes": 2}), caps)
    r = c.step()
    assert jobs_of(r) == ["demo-oneshot-0", "demo-oneshot-1"]
    del c.jobs["demo-oneshot-1"]                                  # operator died between the two creates
    assert jobs_of(c.step()) == ["demo-oneshot-1"]
    c.finish("demo-oneshot-0")
    assert jobs_of(c.step()) == []                                # rank 1 still running
    c.finish("demo-oneshot-1")
    assert jobs_of(c.step()) == ["demo-oneshot-snap"]


def test_invalid_spec_is_failed_with_the_field():
    body = resource(storage={})
    r = rc.reconcile(body, rc.Observed(), ClusterCaps(), NOW)
    cond = {x["type"]: x for x in r.status["conditions"]}["Failed"]
    assert r.status["phase"] == "Failed" and cond["reason"] == "InvalidSpec"
    assert "spec.storage.claimName" in cond["message"] and r.create == ()


def test_a_cut_the_space_cannot_make_is_the_users_invalid_spec():
    body = resource(fewShot={"mode": "partitioned", "steps": [{"dimension": "width", "stage": 1, "parts": 3},
                                                                    {"dimension": "width", "stage": 1, "parts": 2}]})
    r = rc.reconcile(body, rc.Observed(), ClusterCaps(), NOW)
    cond = {x["type"]: x for x in r.status["conditions"]}["Failed"]
    assert cond["reason"] == "InvalidSpec" and cond["message"].startswith("spec.fewShot.steps: Invalid value:")
    assert "cannot cut" in cond["message"] and r.create == ()


def test_condition_transition_time_is_kept_while_unchanged():
    c = Cluster(resource())
    c.step()
    first = {x["type"]: x for x in c.body["status"]["conditions"]}["Running"]["lastTransitionTime"]
    later = c.step(NOW + timedelta(hours=1))
    assert {x["type"]: x for x in later.status["conditions"]}["Running"]["lastTransitionTime"] == first


def test_ttl_after_finished_deletes_the_resource():
    c = Cluster(resource(fewShot={"mode": "none"}, ttlSecondsAfterFinished=60))
    for _ in range(6):
        c.step()
        for name in c.active():
            c.finish(name)
    assert c.body["status"]["phase"] == "Succeeded"
    done = datetime(2026, 1, 1, 0, 10, tzinfo=timezone.utc)
    assert not c.step(done + timedelta(seconds=30)).delete
    assert c.step(done + timedelta(seconds=61)).delete


def test_terminations_are_read_only_when_needed():
    c = Cluster(resource())
    c.step()
    assert not rc.terminations_needed(c.body, c.jobs)
    c.finish("demo-oneshot"); c.step(); c.finish("demo-oneshot-snap")
    assert rc.terminations_needed(c.body, c.jobs)
    message = SnapshotResult(stage="oneshot", partition="root", epoch=1, file="oneshot/checkpoints/epoch-0001.pt",
                             sha256="0" * 64).message()
    c.terms["demo-oneshot-snap"] = [{"exitCode": 0, "message": message, "finishedAt": "t"}]
    c.step()
    assert c.body["status"]["stages"]["oneshot"]["checkpoint"]["epoch"] == 1
    assert not rc.terminations_needed(c.body, c.jobs)


def test_a_malformed_result_is_read_once_and_reported_as_unavailable():
    c = Cluster(resource(fewShot={"mode": "none"}))
    c.step()
    c.finish("demo-oneshot"); c.step()
    c.finish("demo-oneshot-snap", message='{"epoch": 1}')        # not what `stepshot snapshot` writes
    r = c.step()
    assert "checkpoint" not in c.body["status"]["stages"]["oneshot"]
    [rejected] = [t for t in r.transitions if t.new == rc.RESULT_REJECTED]   # a Warning Event and a log line
    assert rejected.warning and rejected.stage == "oneshot" and rejected.subject in rc.NOT_STAGES
    assert "demo-oneshot-snap" in rejected.message and "rejected" in rejected.message
    assert not rc.terminations_needed(c.body, c.jobs)             # a finished pod's message never changes
    c.finish("demo-eval", message='{"n": 64, "kendall_tau": NaN}')
    r = c.step()
    assert r.status["phase"] == "Succeeded" and "result" not in r.status
    why = "the result message of Job demo-eval was rejected: kendall_tau: expected a finite number, got nan"
    assert _cond(r.status, "Succeeded")["message"] == f"evaluation finished; metrics unavailable: {why}"
    assert any(t.new == "Succeeded" and why in t.message for t in r.transitions)   # the phase Event says why
    assert [t.message for t in r.transitions if t.new == rc.RESULT_REJECTED] == [why]
    assert not rc.terminations_needed(c.body, c.jobs)
    r = c.step()                                                  # the message is not re-read: the why is kept
    assert _cond(r.status, "Succeeded")["message"].endswith(why) and r.transitions == ()


@pytest.mark.parametrize("message,why", [
    ("", "finished without a result message"),
    ("not json", "not JSON"),
    ('{"n": 64, "kendall_tau": 0.5, "extra": 1}', "unknown keys"),
    ('{"n": -1}', "n: expected an integer"),
    ("[1, 2]", "not a JSON object"),
])
def test_each_rejected_result_says_why(message, why):
    c = Cluster(resource(fewShot={"mode": "none"}))
    c.step()
    c.finish("demo-oneshot"); c.step(); c.finish("demo-oneshot-snap"); c.step()
    c.finish("demo-eval", message=message)
    r = c.step()
    [rejected] = [t for t in r.transitions if t.new == rc.RESULT_REJECTED]
    assert why in rejected.message and "demo-eval" in rejected.message
    assert why in _cond(r.status, "Succeeded")["message"]


def test_merge_patch_removes_vanished_keys():
    old = {"phase": "Failed", "stages": {"a": {"state": "Failed", "message": "boom"}}, "result": {"x": 1}}
    new = {"phase": "Running", "stages": {"a": {"state": "Running"}}}
    assert rc.merge_patch(old, new) == {"phase": "Running", "result": None,
                                        "stages": {"a": {"state": "Running", "message": None}}}
    assert rc.merge_patch(new, new) == {}


def _spec_condition(status):
    return {x["type"]: x for x in status["conditions"]}["SpecChanged"]


def test_edits_after_start_are_reported_not_half_applied():
    c = Cluster(resource())
    c.step()
    assert c.reads == 0 and _spec_condition(c.body["status"])["status"] == "False"
    c.body["spec"]["fewShot"] = {"mode": "grouped", "groups": [2, 3]}    # the pods still read the old spec
    c.body["metadata"]["generation"] = 2
    r = c.step()
    cond = _spec_condition(r.status)
    assert cond["status"] == "True" and cond["reason"] == "EditNotApplied" and cond["observedGeneration"] == 2
    assert "spec.fewShot.mode" in cond["message"] and "spec.fewShot.groups" in cond["message"]
    [edit] = [t for t in r.transitions if t.subject == "spec"]
    assert edit.warning and edit.new == "SpecChanged"
    assert not [t for t in c.step().transitions if t.subject == "spec"]     # reported once
    c.finish("demo-oneshot")
    c.step()
    c.finish("demo-oneshot-snap")
    assert jobs_of(c.step()) == ["demo-s4w0", "demo-s4w1"]              # the partitioned plan it started with
    original = load(resource())
    assert c.config_map["data"] == manifests.spec_config_map(manifests.Context(original, build_plan(original), ClusterCaps()))["data"]
    c.body["spec"]["fewShot"] = copy.deepcopy(BASE["spec"]["fewShot"])  # edit undone
    r = c.step()
    assert _spec_condition(r.status)["status"] == "False" and c.reads > 0


def test_runtime_controls_still_apply_and_a_bad_edit_changes_nothing():
    c = Cluster(resource())
    c.step()
    c.body["spec"]["suspend"] = True                                    # a runtime control: applied
    r = c.step()
    assert r.suspend == ("demo-oneshot",) and _spec_condition(r.status)["status"] == "False"
    c.body["spec"]["fewShot"] = {"mode": "bogus"}                       # a typo while suspended
    r = c.step()
    cond = _spec_condition(r.status)
    assert r.status["phase"] == "Suspended" and cond["status"] == "True"  # neither failed nor resumed
    assert "invalid" in cond["message"] and "spec.fewShot.mode" in cond["message"]
    c.body["spec"]["fewShot"] = copy.deepcopy(BASE["spec"]["fewShot"])
    c.body["spec"]["suspend"] = False
    r = c.step()
    assert r.resume == ("demo-oneshot",) and r.status["phase"] == "Running"
    assert _spec_condition(r.status)["status"] == "False"


def test_started_spec_is_read_only_after_an_edit():
    body = resource()
    assert not rc.started_spec_needed(rc.load_resource(body), {})
    c = Cluster(body)
    c.step()
    assert not rc.started_spec_needed(rc.load_resource(c.body), c.jobs)
    assert rc.started_spec_needed(rc.load_resource(resource(training={"seed": 7})), c.jobs)
    assert not rc.started_spec_needed(rc.load_resource(resource(suspend=True)), c.jobs)
    assert manifests.spec_from_config_map({"data": {"spec.yaml": "{: bad"}}) is None
    assert manifests.spec_from_config_map(None) is None


def test_trainer_service_account_is_ensured_with_the_first_jobs_and_owned_by_no_resource():
    caps = ClusterCaps(trainer_service_account="stepshot-trainer")
    r = rc.reconcile(resource(), rc.Observed(), caps, NOW)
    kinds = [o["kind"] for o in r.create]
    assert kinds[:3] == ["ServiceAccount", "ConfigMap", "Job"]
    account = r.create[0]
    assert account["metadata"] == {**account["metadata"], "name": "stepshot-trainer", "namespace": "ns"}
    assert account["automountServiceAccountToken"] is False and "ownerReferences" not in account["metadata"]
    job = next(o for o in r.create if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "stepshot-trainer"
    assert rc.reconcile(resource(), rc.Observed(), ClusterCaps(), NOW).create[0]["kind"] == "ConfigMap"


def test_a_failed_stage_keeps_its_log_tail_once_the_pods_are_no_longer_read():
    c = Cluster(resource(fewShot={"mode": "grouped", "groups": [2]}))
    c.step()
    c.finish("demo-oneshot", ok=False, message="noise\nstepshot: error: no data in /data\n")
    first = c.step().status["stages"]["oneshot"]["message"]
    assert first.endswith("last output: stepshot: error: no data in /data")
    assert not rc.terminations_needed(c.body, c.jobs)
    assert c.step().status["stages"]["oneshot"]["message"] == first
    cond = {x["type"]: x for x in c.body["status"]["conditions"]}["Failed"]
    assert cond["message"] == first


def test_a_stage_that_refuses_its_input_fails_the_run_as_invalid_input_naming_it():
    """Exit code 2 (the trainer's preflight): reason InvalidInput and the input's own line, also
    once the pods are no longer read; any other exit code stays StageFailed."""
    c = Cluster(resource(fewShot={"mode": "grouped", "groups": [2]}))
    c.step()
    line = "spec.dataset.path: /data/fashion-mnist: no such directory"
    c.finish("demo-oneshot", ok=False, message=f"stepshot: error: {line}", exit_code=2)
    r = c.step()
    stage, failed = r.status["stages"]["oneshot"], _cond(r.status, "Failed")
    assert r.status["phase"] == "Failed" and stage["reason"] == failed["reason"] == "InvalidInput"
    assert stage["message"] == failed["message"] == f"stage oneshot refused its input: {line}"
    assert not rc_schema_errors(r.status)
    assert not rc.terminations_needed(c.body, c.jobs)
    r = c.step()
    assert _cond(r.status, "Failed")["reason"] == "InvalidInput" and r.status["stages"]["oneshot"]["message"] == \
        f"stage oneshot refused its input: {line}"
    crashed = Cluster(resource(fewShot={"mode": "grouped", "groups": [2]}))
    crashed.step()
    crashed.finish("demo-oneshot", ok=False, message="RuntimeError: CUDA error", exit_code=1)
    assert _cond(crashed.step().status, "Failed")["reason"] == "StageFailed"


def test_data_volumes_that_reach_the_node_or_secrets_need_the_administrators_opt_in():
    body = resource(dataset={"kind": "fashion-mnist", "volume": {"hostPath": {"path": "/"}}})
    r = rc.reconcile(body, rc.Observed(), ClusterCaps(), NOW)
    cond = {x["type"]: x for x in r.status["conditions"]}["Failed"]
    assert r.status["phase"] == "Failed" and cond["reason"] == "InvalidSpec" and r.create == ()
    assert cond["message"].startswith("spec.dataset.volume: Forbidden: volume type hostPath is not allowed")
    secret = resource(dataset={"kind": "fashion-mnist", "volume": {"secret": {"secretName": "creds"}}})
    assert rc.reconcile(secret, rc.Observed(), ClusterCaps(), NOW).status["phase"] == "Failed"
    two = resource(dataset={"kind": "fashion-mnist", "volume": {"nfs": {"server": "a", "path": "/"},
                                                               "csi": {"driver": "x"}}})
    conds = {x["type"]: x for x in rc.reconcile(two, rc.Observed(), ClusterCaps(), NOW).status["conditions"]}
    assert "exactly one volume source" in conds["Failed"]["message"]
    allowed = ClusterCaps(volume_types=manifests.SAFE_VOLUME_TYPES | {"hostPath"})
    assert rc.reconcile(body, rc.Observed(), allowed, NOW).status["phase"] == "Running"
    pvc = resource(dataset={"kind": "fashion-mnist", "volume": {"persistentVolumeClaim": {"claimName": "data"}}})
    assert rc.reconcile(pvc, rc.Observed(), ClusterCaps(), NOW).status["phase"] == "Running"


def _cond(status, ctype):
    return next(c for c in status["conditions"] if c["type"] == ctype)


def test_a_job_suspended_by_a_queue_manager_stays_suspended_until_it_resumes_it():
    c = Cluster(resource(scheduling={"labels": {"kueue.x-k8s.io/queue-name": "team"}}))
    r = c.step()
    [job] = [o for o in r.create if o["kind"] == "Job"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team"
    c.set_suspend("demo-oneshot", True, by_operator=False)        # Kueue's webhook: created suspended
    for _ in range(3):
        r = c.step()
        assert r.resume == () and r.status["phase"] == "Suspended"
    cond = _cond(r.status, "Suspended")
    assert cond["status"] == "True" and cond["reason"] == "SuspendedExternally" and "demo-oneshot" in cond["message"]
    assert r.status["childJobs"]["suspended"] == 1
    c.body["spec"]["suspend"] = True                                # the user suspends, then resumes ...
    assert c.step().suspend == ()
    c.body["spec"]["suspend"] = False
    r = c.step()
    assert r.resume == () and c.jobs["demo-oneshot"]["spec"]["suspend"] is True   # ... still Kueue's to admit
    c.set_suspend("demo-oneshot", False, by_operator=False)       # admitted
    r = c.step()
    assert r.status["phase"] == "Running" and _cond(r.status, "Running")["status"] == "True"


def test_conditions_say_what_is_true():
    c = Cluster(resource())
    r = c.step()
    assert r.status["phase"] == "Running"
    for ctype in ("Suspended", "Succeeded", "Failed"):
        cond = _cond(r.status, ctype)
        assert cond["status"] == "False" and cond["reason"] == "Running" and cond["message"] == "the run is running"
    assert _cond(r.status, "Running")["reason"] == "StageRunning"
    assert "spec.suspend" not in str(r.status["conditions"]) and "finished" not in str(r.status["conditions"])


def test_a_failed_per_node_job_stops_its_sibling():
    c = Cluster(resource(resources={"nodes": 2}), caps=ClusterCaps(version=(1, 20)))
    r = c.step()
    assert jobs_of(r) == ["demo-oneshot-0", "demo-oneshot-1"]
    c.finish("demo-oneshot-1", ok=False)
    r = c.step()
    assert r.delete_jobs == ("demo-oneshot-0",) and r.status["phase"] == "Failed"
    assert "demo-oneshot-0" not in c.jobs and c.step().delete_jobs == ()       # nothing left to stop
    assert jobs_of(c.step()) == []                                              # and nothing restarted


def test_a_deleted_spec_config_map_is_rebuilt_but_never_from_an_edited_spec():
    c = Cluster(resource(fewShot={"mode": "grouped", "groups": [2]}))
    c.step()
    c.config_map = None                                            # someone deletes it mid-run
    r = c.step()
    assert [o["kind"] for o in r.create] == ["ConfigMap"] and r.status["phase"] == "Running"
    assert manifests.spec_from_config_map(c.config_map) == load(c.body).raw["spec"]   # the same spec again
    c.body["spec"]["training"] = {"seed": 7}                      # an edit, then the ConfigMap goes
    c.config_map = None
    r = c.step()
    failed = _cond(r.status, "Failed")
    assert r.status["phase"] == "Failed" and failed["reason"] == "SpecLost" and r.create == ()
    del c.body["spec"]["training"]                                 # the edit undone: rebuilt, going on
    r = c.step()
    assert [o["kind"] for o in r.create] == ["ConfigMap"] and r.status["phase"] == "Running"


def test_a_stage_frozen_by_its_snapshot_stays_done_when_its_job_is_deleted():
    c = Cluster(resource(fewShot={"mode": "grouped", "groups": [2]}))
    c.step()
    c.finish("demo-oneshot")
    c.step()
    c.finish("demo-oneshot-snap", message="{not json")            # a malformed result message
    r = c.step()
    assert c.listed and r.status["stages"]["oneshot"]["state"] == "Succeeded" and "demo-g2" in jobs_of(r)
    c.step()
    assert not c.listed                                            # not re-read every pass
    del c.jobs["demo-oneshot"]                                     # the finished stage's Job is deleted
    r = c.step()
    assert r.status["stages"]["oneshot"]["state"] == "Succeeded" and "demo-oneshot" not in jobs_of(r)


def test_an_image_outside_the_allow_list_is_refused_naming_the_field():
    caps = ClusterCaps(allowed_images=r"registry\.example\.com/ml/.*")
    r = rc.reconcile(resource(), rc.Observed(), caps, NOW)
    failed = _cond(r.status, "Failed")
    assert r.status["phase"] == "Failed" and failed["reason"] == "InvalidSpec" and r.create == ()
    assert failed["message"].startswith("spec.image: Forbidden") and "trainer.allowedImages" in failed["message"]
    r = rc.reconcile(resource(image="registry.example.com/ml/stepshot-trainer:0.1.0"), rc.Observed(), caps, NOW)
    assert r.status["phase"] == "Running"


def test_every_split_mode_has_a_failure_reason_and_an_unwired_one_fails_loudly(monkeypatch):
    assert set(rc.TRAIN_FAILURE_REASONS) == set(MODES)
    monkeypatch.setitem(MODES, "sliced", SplitMode("sliced", "groups", lambda few, limit: len(few["groups"])))
    with pytest.raises(StepshotError, match="split mode 'sliced' has no failure reason in the operator"):
        rc._failure_reason(Stage("x2", "train", 1, parent="oneshot", split=Split("sliced")))


def _run_to_evaluation(c):
    while not any(n.startswith("demo-eval") for n in c.jobs):
        for name in c.active():
            c.finish(name)
        c.step()


def test_sharded_evaluation_without_indexed_jobs_runs_max_parallel_shards_then_the_merge():
    c = Cluster(resource(fewShot={"mode": "none"}, evaluation={"shards": 5, "maxParallel": 2}),
                caps=ClusterCaps(version=(1, 20)))
    c.step()
    _run_to_evaluation(c)
    assert c.active() == ["demo-eval-0", "demo-eval-1"]           # maxParallel shard Jobs at once
    command = c.jobs["demo-eval-1"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--shard") + 1] == "1" and command[command.index("--shards") + 1] == "5"
    stage = c.body["status"]["stages"]["eval"]
    assert stage["state"] == "Running" and stage["shards"] == {"done": 0, "total": 5, "merge": "Absent"}
    c.finish("demo-eval-0")
    r = c.step()
    assert jobs_of(r) == ["demo-eval-2"] and r.status["stages"]["eval"]["shards"]["done"] == 1
    for name in ("demo-eval-1", "demo-eval-2"):
        c.finish(name)
    assert jobs_of(c.step()) == ["demo-eval-3", "demo-eval-4"]
    c.finish("demo-eval-3"), c.finish("demo-eval-4")
    r = c.step()
    assert jobs_of(r) == ["demo-eval-merge"] and r.status["phase"] == "Running"
    merge = r.create[-1]["spec"]["template"]["spec"]["containers"][0]
    assert merge["command"][-1] == "--merge" and merge["resources"]["limits"].get("nvidia.com/gpu") is None
    assert c.step().status["stages"]["eval"]["shards"] == {"done": 5, "total": 5, "merge": "Active"}
    c.finish("demo-eval-merge", message=EvaluationResult(n=30, kendall_tau=0.5, evaluated=100, scored=30).message())
    r = c.step()
    assert r.status["phase"] == "Succeeded"
    assert r.status["result"] == {"n": 30, "kendallTau": 0.5, "evaluated": 100, "scored": 30}
    assert r.status["stages"]["eval"]["jobs"] == [f"demo-eval-{i}" for i in range(5)] + ["demo-eval-merge"]
    assert c.step().create == () and len(c.created) == len(set(c.created))


def test_sharded_evaluation_is_one_indexed_job_where_served_and_a_failed_merge_fails_it():
    c = Cluster(resource(fewShot={"mode": "none"}, evaluation={"shards": 6, "maxParallel": 4}))
    c.step()
    _run_to_evaluation(c)
    job = c.jobs["demo-eval"]
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 6, 4)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][container["command"].index("--shard") + 1] == "$(STEPSHOT_SHARD)"
    assert {"name": "STEPSHOT_SHARD", "valueFrom": {"fieldRef": {"fieldPath": manifests.COMPLETION_INDEX}}} \
        in container["env"]
    c.jobs["demo-eval"] = dict(job, status={"succeeded": 3, "active": 3})
    r = c.step()
    assert jobs_of(r) == [] and r.status["stages"]["eval"]["shards"] == {"done": 3, "total": 6, "merge": "Absent"}
    c.finish("demo-eval")
    assert jobs_of(c.step()) == ["demo-eval-merge"]
    c.finish("demo-eval-merge", ok=False, message="stepshot evaluate: error: 4 of 100 architectures not evaluated yet")
    r = c.step()
    assert r.status["phase"] == "Failed" and _cond(r.status, "Failed")["reason"] == "EvaluationFailed"
    assert "not evaluated yet" in r.status["stages"]["eval"]["message"]


def _stuck_pod(job, reason, message, scheduled=True):
    """A Pending pod of `job` as the API server reports it: unschedulable, or scheduled with its
    container waiting."""
    status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
    if not scheduled:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": reason, "message": message}]
    else:
        status["containerStatuses"] = [{"name": "trainer", "state": {"waiting": {"reason": reason, "message": message}}}]
    return {"metadata": {"name": f"{job}-x7k2p", "labels": {manifests.LABEL_JOB: job, manifests.LABEL_STAGE: "oneshot"},
                         "ownerReferences": [{"kind": "Job", "controller": True, "uid": "u"}]},
            "status": status}


def test_stuck_pods_show_as_pods_pending_with_the_reason_until_they_start():
    from stepshot_operator import pods

    c = Cluster(resource())
    r = c.step()
    assert _cond(r.status, "PodsPending")["status"] == "False"
    pull = "Back-off pulling image \"localhost/nope:1\""
    c.waiting = pods.waiting([_stuck_pod("demo-oneshot", "ImagePullBackOff", pull)])
    r = c.step(NOW + timedelta(seconds=10))
    pending = _cond(r.status, "PodsPending")
    assert pending["status"] == "True" and pending["reason"] == "ImagePullBackOff"
    assert pending["message"] == f"stage oneshot, pod demo-oneshot-x7k2p (Job demo-oneshot) cannot start: " \
                                 f"ImagePullBackOff: {pull}"
    assert r.status["phase"] == "Running"                        # still running: the pods may yet start
    [event] = [t for t in r.transitions if t.subject == "pods"]
    assert event.warning and event.new == "PodsPending" and event.message == pending["message"]
    since = pending["lastTransitionTime"]

    # The kubelet alternates ErrImagePull and ImagePullBackOff: the reason follows, one Event only.
    c.waiting = pods.waiting([_stuck_pod("demo-oneshot", "ErrImagePull", "not found")])
    r = c.step(NOW + timedelta(seconds=20))
    pending = _cond(r.status, "PodsPending")
    assert (pending["status"], pending["reason"], pending["lastTransitionTime"]) == ("True", "ErrImagePull", since)
    assert not [t for t in r.transitions if t.subject == "pods"]

    c.waiting = {}                                               # the pod runs
    r = c.step(NOW + timedelta(seconds=30))
    pending = _cond(r.status, "PodsPending")
    assert pending["status"] == "False" and pending["reason"] == "NoPodWaiting"
    assert pending["lastTransitionTime"] == "2026-01-01T00:00:30Z"


def test_an_unschedulable_pod_shows_the_schedulers_words_and_finished_jobs_count_no_more():
    from stepshot_operator import pods

    c = Cluster(resource())
    c.step()
    words = "0/1 nodes are available: 1 Insufficient cpu."
    c.waiting = pods.waiting([_stuck_pod("demo-oneshot", "Unschedulable", words, scheduled=False),
                              _stuck_pod("demo-oneshot", "Unschedulable", words, scheduled=False)])
    c.waiting["demo-oneshot"][1]["pod"] = "demo-oneshot-zzzzz"
    pending = _cond(c.step().status, "PodsPending")
    assert pending["status"] == "True" and pending["reason"] == "Unschedulable"
    assert pending["message"].endswith(f"cannot start: Unschedulable: {words} (and 1 more pod)")
    assert rc_schema_errors(c.body["status"]) == []
    c.finish("demo-oneshot")                                      # its Job finished (say, a deadline)
    assert _cond(c.step().status, "PodsPending")["status"] == "False"


def test_pods_are_listed_while_a_job_is_active():
    c = Cluster(resource(suspend=True))
    c.step()
    assert not rc.pods_may_wait(c.jobs)                          # nothing created while suspended
    c.body["spec"]["suspend"] = False
    c.step()
    assert rc.pods_may_wait(c.jobs)                              # demo-oneshot active
    c.finish("demo-oneshot")
    assert not rc.pods_may_wait(c.jobs)


def test_privileged_pod_settings_need_the_administrators_allow_list():
    """hostNetwork and added capabilities (RDMA clusters) are refused, naming the field and the
    chart value that allows them, unless the operator's administrator allows them; allowed, the
    stage pods get them, with the chart's stage-pod defaults under the resource's settings."""
    rdma = {"env": [{"name": "NCCL_IB_HCA", "value": "mlx5_0"}],
            "training": {"hostNetwork": True, "capabilities": ["IPC_LOCK"],
                         "extraResources": {"rdma/hca_shared_devices_a": "1"}}}
    body = resource(scheduling=rdma)
    r = rc.reconcile(body, rc.Observed(), ClusterCaps(), NOW)
    failed = _cond(r.status, "Failed")
    assert r.status["phase"] == "Failed" and failed["reason"] == "InvalidSpec" and r.create == ()
    assert failed["message"].startswith("spec.scheduling.training.hostNetwork: Forbidden")
    assert "trainer.allowHostNetwork" in failed["message"] and "trainer.allowedCapabilities" in failed["message"]
    assert "spec.scheduling.training.capabilities[0]: Forbidden: capability IPC_LOCK" in failed["message"]
    only_network = ClusterCaps(host_network=True)
    failed = _cond(rc.reconcile(body, rc.Observed(), only_network, NOW).status, "Failed")
    assert failed["message"].startswith("spec.scheduling.training.capabilities[0]: Forbidden")
    allowed = ClusterCaps(host_network=True, capabilities=frozenset({"IPC_LOCK"}),
                          pod_defaults={"env": [{"name": "NCCL_IB_HCA", "value": "mlx5"},
                                                {"name": "NCCL_DEBUG", "value": "WARN"}]})
    r = rc.reconcile(body, rc.Observed(), allowed, NOW)
    assert r.status["phase"] == "Running"
    [job] = [o for o in r.create if o["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NCCL_IB_HCA"] == "mlx5_0" and env["NCCL_DEBUG"] == "WARN"    # the resource's over the chart's
    assert container["resources"]["limits"]["rdma/hca_shared_devices_a"] == "1"
