"""Hostile cluster state, against a real kube-apiserver (issue 24 item 7): a child's name held by
an object the resource does not control, Events across an operator that dies mid-pass, and a
result message the operator rejects. Each ends in a visible condition with an Event."""
import asyncio
import copy
import json
import logging
import uuid
from datetime import datetime, timezone

import pytest
from kubernetes import client

from kubeplay import OperatorProcess, Training, wait_for
from stepshot.manifests import ClusterCaps
from stepshot.spec import GROUP, PLURAL, VERSION
from stepshot.workdir import EvaluationResult
from stepshot_operator import handlers, k8s
from stepshot_operator import reconcile as rc

pytestmark = pytest.mark.apiserver

BODY = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SupernetTraining", "metadata": {"name": "sst"},
        "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"},
                 "storage": {"claimName": "work"}, "backoffLimit": 1, "fewShot": {"mode": "none"}}}


def body(name: str = "sst") -> dict:
    doc = copy.deepcopy(BODY)
    doc["metadata"]["name"] = name
    return doc


@pytest.fixture
def namespace(apiserver):
    return apiserver.create_namespace(f"hostile-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def operator(apiserver, namespace, tmp_path):
    op = OperatorProcess(apiserver, namespace, tmp_path / "operator.log").start()
    yield op
    op.stop()
    print(op.output())


def _condition(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def _events(apiserver, namespace: str, name: str) -> list:
    core = client.CoreV1Api(apiserver.client())
    return core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items


def _stray_job(name: str, labels: dict | None = None, owner_uid: str | None = None) -> dict:
    meta: dict = {"name": name, "labels": labels or {}}
    if owner_uid:
        meta["ownerReferences"] = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "SupernetTraining", "name": "sst",
                                    "uid": owner_uid, "controller": True}]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}


def test_a_foreign_job_holding_a_childs_name_is_visible_and_released(apiserver, namespace, operator):
    """A Job created by hand under the name of the first stage's Job (no labels, no owner):
    the resource says so in a Degraded condition and an Event, and goes on once it is gone."""
    t = Training(apiserver, namespace, body())
    t.batch.create_namespaced_job(namespace, _stray_job("sst-oneshot"))
    t.create()
    cond = wait_for(lambda: (c := _condition(t.status(), "Degraded")).get("status") == "True" and c,
                    what="Degraded=True")
    assert cond["reason"] == rc.CHILD_NAME_TAKEN and "Job sst-oneshot" in cond["message"], cond
    assert "controlled by nothing" in cond["message"]
    events = wait_for(lambda: [e for e in _events(apiserver, namespace, "sst") if e.reason == rc.CHILD_NAME_TAKEN],
                      what="a ChildNameTaken Event")
    assert events[0].type == "Warning" and "sst-oneshot" in events[0].message
    assert "sst-oneshot" in operator.output() and "not by this resource" in operator.output()

    t.batch.delete_namespaced_job("sst-oneshot", namespace, propagation_policy="Background")
    wait_for(lambda: "sst-oneshot" in t.jobs() and t.jobs()["sst-oneshot"]["metadata"].get("ownerReferences"),
             what="the resource's own sst-oneshot")
    wait_for(lambda: _condition(t.status(), "Degraded").get("status") == "False", what="Degraded=False")
    assert len([e for e in _events(apiserver, namespace, "sst") if e.reason == rc.CHILD_NAME_TAKEN]) == 1


def test_a_same_name_recreate_while_the_old_children_remain(apiserver, namespace, operator):
    """Delete a resource and create it again under the same name before its children are gone
    (no garbage collector runs here, as on a busy cluster): the old spec ConfigMap and Jobs
    carry the old uid. The new resource never reads the old spec; it says why it waits."""
    first = Training(apiserver, namespace, body())
    old_uid = first.create()["metadata"]["uid"]
    first.wait_jobs({"sst-oneshot"})
    first.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sst")
    wait_for(lambda: not first.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
             what="the old resource gone")

    second = Training(apiserver, namespace, body())
    new_uid = second.create()["metadata"]["uid"]
    cond = wait_for(lambda: (c := _condition(second.status(), "Degraded")).get("status") == "True" and c,
                    what="Degraded=True")
    assert cond["reason"] == rc.CHILD_NAME_TAKEN and "ConfigMap sst-spec" in cond["message"], cond
    assert old_uid in cond["message"] and new_uid in cond["message"]
    assert second.status().get("phase") != "Succeeded"
    wait_for(lambda: any(e.reason == rc.CHILD_NAME_TAKEN and e.involved_object.uid == new_uid
                         for e in _events(apiserver, namespace, "sst")), what="a ChildNameTaken Event")
    jobs = second.batch.list_namespaced_job(namespace).items
    assert [j.metadata.owner_references[0].uid for j in jobs] == [old_uid]      # nothing new was created

    # The garbage collector's part: the old children go; the new resource runs to the end.
    second.core.delete_namespaced_config_map("sst-spec", namespace)
    second.batch.delete_namespaced_job("sst-oneshot", namespace, propagation_policy="Background")
    second.uids.clear()
    wait_for(lambda: (j := second.jobs().get("sst-oneshot")) and j["metadata"]["ownerReferences"][0]["uid"] == new_uid,
             what="the new resource's own sst-oneshot")
    assert second.run() == []
    wait_for(lambda: second.status().get("phase") == "Succeeded", what="phase Succeeded")
    assert _condition(second.status(), "Degraded")["status"] == "False"
    config = second.core.read_namespaced_config_map("sst-spec", namespace)
    assert config.metadata.owner_references[0].uid == new_uid


class _DiesOnce(k8s.Kube):
    """The real client, except that one call raises once: the operator dying at that point."""

    def __init__(self, api, dies_in: str):
        super().__init__(api)
        self.dies_in = dies_in

    def _die(self, where: str) -> None:
        if self.dies_in == where:
            self.dies_in = ""
            raise RuntimeError(f"operator killed in {where}")

    def patch_training_status(self, *args, **kwargs):
        self._die("status")
        return super().patch_training_status(*args, **kwargs)

    def post_event(self, *args, **kwargs):
        self._die("event")
        return super().post_event(*args, **kwargs)


def _one_pass(kube: k8s.Kube, namespace: str, name: str) -> None:
    state = handlers.State(kube, ClusterCaps(), resync=3600)
    state.entries[(namespace, name)] = handlers._Entry()
    asyncio.run(handlers._reconcile_once(state, namespace, name, logging.getLogger("test")))


@pytest.mark.parametrize("dies_in", ["event", "status"])
def test_events_survive_an_operator_dying_mid_pass_exactly_once(apiserver, namespace, dies_in):
    """The pass posts its Events before the status write, under names derived from the resource
    version and the transition: dying in either leaves the next pass to post what is missing,
    and nothing twice."""
    t = Training(apiserver, namespace, body())
    t.create()
    with pytest.raises(RuntimeError, match="operator killed"):
        _one_pass(_DiesOnce(apiserver.client(), dies_in), namespace, "sst")
    assert "phase" not in t.status()                                  # the status was never written
    _one_pass(k8s.Kube(apiserver.client()), namespace, "sst")         # the restarted operator
    assert t.status()["phase"] == "Running"
    reasons = [e.reason for e in _events(apiserver, namespace, "sst")]
    assert reasons.count("PhaseRunning") == 1 and reasons.count("StageRunning") == 1, reasons
    _one_pass(k8s.Kube(apiserver.client()), namespace, "sst")         # a quiet pass posts nothing more
    assert sorted(e.reason for e in _events(apiserver, namespace, "sst")) == sorted(reasons)


def test_event_names_are_per_transition_and_resource_version():
    meta = {"name": "sst", "uid": "u1", "resourceVersion": "7"}
    t = rc.Transition("oneshot", "oneshot", "Pending", "Running", "x")
    name = rc.event_name({"metadata": meta}, t)
    assert name == rc.event_name({"metadata": dict(meta)}, rc.Transition("oneshot", "oneshot", "Pending", "Running", "y"))
    assert name.startswith("sst.") and len(name) <= 253
    others = {rc.event_name({"metadata": {**meta, "resourceVersion": "8"}}, t),
              rc.event_name({"metadata": {**meta, "uid": "u2"}}, t),
              rc.event_name({"metadata": meta}, rc.Transition("oneshot", "oneshot", "Running", "Failed", "x"))}
    assert name not in others and len(others) == 3


def test_degraded_events_follow_the_condition_reason():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    taken = rc.with_degraded({"conditions": []}, {}, [], now, ["Job sst-oneshot exists"])
    t = rc.degraded_transition({}, taken)
    assert t.new == rc.CHILD_NAME_TAKEN and t.warning and "sst-oneshot" in t.message
    assert rc.degraded_transition(taken, taken) is None                 # still the same: no second Event
    refused = rc.with_degraded({"conditions": []}, taken, ["Job x: 422 invalid"], now)
    assert rc.degraded_transition(taken, refused).new == rc.CHILD_CREATE_FAILED
    healthy = rc.with_degraded({"conditions": []}, refused, [], now)
    assert rc.degraded_transition(refused, healthy) is None


def test_a_rejected_result_message_is_an_event_and_a_log_line(apiserver, namespace, operator):
    t = Training(apiserver, namespace, body())
    t.create()
    assert t.run(stop_before="sst-eval") == ["sst-eval"]
    bad = EvaluationResult(n=64, kendall_tau=0.5).message().replace('"n": 64', '"n": -3')
    t.finish("sst-eval", message=bad)
    status = wait_for(lambda: (s := t.status()).get("phase") == "Succeeded" and s, what="phase Succeeded")
    message = _condition(status, "Succeeded")["message"]
    assert message.startswith("evaluation finished; metrics unavailable: the result message of Job sst-eval "
                              "was rejected: n: expected an integer"), message
    events = wait_for(lambda: [e for e in _events(apiserver, namespace, "sst") if e.reason == rc.RESULT_REJECTED],
                      what="a ResultRejected Event")
    assert len(events) == 1 and events[0].type == "Warning" and "n: expected an integer" in events[0].message
    wait_for(lambda: "was rejected: n: expected an integer" in operator.output(), what="the log line")


def _table(apiserver, namespace: str) -> dict[str, dict]:
    """`kubectl get sst -n NAMESPACE` as the API server renders it (the Table the printer
    columns make): resource name -> column -> cell."""
    resp = client.CustomObjectsApi(apiserver.client()).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _preload_content=False,
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = json.loads(resp.data)
    names = [c["name"] for c in table["columnDefinitions"]]
    return {row["object"]["metadata"]["name"]: dict(zip(names, row["cells"])) for row in table["rows"]}


def test_a_resource_no_operator_watches_shows_an_empty_seen_column(apiserver, namespace, operator):
    """`kubectl get sst` in a namespace no operator watches must not look like a queued run:
    SEEN stays empty there, and shows the generation where the operator acts."""
    unwatched = apiserver.create_namespace(f"unwatched-{uuid.uuid4().hex[:8]}")
    Training(apiserver, unwatched, body("lonely")).create()
    Training(apiserver, namespace, body("seen")).create()
    row = wait_for(lambda: (r := _table(apiserver, namespace).get("seen")) and r.get("Seen") == 1 and r,
                   what="SEEN 1 where the operator watches")
    assert row["Phase"] == "Running"
    lonely = _table(apiserver, unwatched)["lonely"]
    assert lonely["Seen"] is None and lonely["Phase"] is None, lonely


@pytest.mark.parametrize("patch,field", [
    ({"image": "ghcr.io/stepshot/stepshot-trainer:0.1.0 "}, "spec.image"),
    ({"resources": {"cpu": "1e9"}}, "spec.resources.cpu"),
    ({"resources": {"memory": "1000Pi"}}, "spec.resources.memory"),
    ({"dataset": {"kind": "fashion-mnist", "path": "/data", "volume": {"name": "workdir", "emptyDir": {}}}},
     "spec.dataset.volume.name"),
], ids=["image-space", "cpu-1e9", "memory-1000Pi", "volume-name"])
def test_hostile_specs_the_api_server_takes_end_failed_with_the_field(apiserver, namespace, operator, patch, field):
    """What the CRD schema cannot express reaches the operator: the resource ends Failed with
    reason InvalidSpec naming the field, with a Warning Event, and nothing is created."""
    doc = body()
    doc["spec"].update(patch)
    custom = client.CustomObjectsApi(apiserver.client())
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    status = wait_for(lambda: (s := custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "sst").get("status") or {}).get("phase") == "Failed" and s,
        what="phase Failed")
    failed = _condition(status, "Failed")
    assert failed["reason"] == "InvalidSpec" and failed["message"].startswith(f"{field}: "), failed
    events = wait_for(lambda: [e for e in _events(apiserver, namespace, "sst") if e.reason == "PhaseFailed"],
                      what="a PhaseFailed Event")
    assert events[0].type == "Warning" and field in events[0].message
    assert client.BatchV1Api(apiserver.client()).list_namespaced_job(namespace).items == []


def test_a_claim_name_no_claim_could_have_is_refused_at_apply(apiserver, namespace):
    doc = body()
    doc["spec"]["storage"]["claimName"] = "Work_Claim"
    with pytest.raises(client.ApiException) as exc:
        client.CustomObjectsApi(apiserver.client()).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, doc)
    assert exc.value.status == 422 and "spec.storage.claimName" in exc.value.body
