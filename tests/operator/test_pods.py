"""What the operator reads from its stage pods: which ones cannot start, and why."""
import pytest

from stepshot import manifests
from stepshot_operator import pods


def pod(phase="Pending", conditions=(), waiting=None, init_waiting=None, terminated=None, uid="job-uid", **meta):
    status = {"phase": phase, "conditions": list(conditions)}
    if waiting:
        status["containerStatuses"] = [{"name": "trainer", "state": {"waiting": waiting}}]
    if terminated:
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": terminated}}]
    if init_waiting:
        status["initContainerStatuses"] = [{"name": "init", "state": {"waiting": init_waiting}}]
    return {"metadata": {"name": "sst-oneshot-abcde", "labels": {manifests.LABEL_JOB: "sst-oneshot",
                                                                  manifests.LABEL_STAGE: "oneshot"},
                         "ownerReferences": [{"kind": "Job", "controller": True, "uid": uid}], **meta},
            "status": status}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient cpu."}


@pytest.mark.parametrize("reason", sorted(pods.STUCK_WAITING))
def test_a_container_the_kubelet_cannot_create_is_stuck(reason):
    assert pods.stuck(pod(waiting={"reason": reason, "message": "m"})) == (reason, "m")


def test_unschedulable_and_init_containers_are_stuck():
    assert pods.stuck(pod(conditions=[UNSCHEDULABLE])) == ("Unschedulable", UNSCHEDULABLE["message"])
    assert pods.stuck(pod(init_waiting={"reason": "ErrImagePull"})) == ("ErrImagePull", "")


@pytest.mark.parametrize("case", [
    pod(waiting={"reason": "ContainerCreating"}),                      # ordinary start-up
    pod(conditions=[{"type": "PodScheduled", "status": "True"}]),
    pod(),                                                             # not looked at by the scheduler yet
    pod("Running"),
    pod("Failed", waiting={"reason": "ErrImagePull"}),
    pod(waiting={"reason": "ImagePullBackOff"}, deletionTimestamp="2026-01-01T00:00:00Z"),   # going away
], ids=["creating", "scheduled", "new", "running", "failed", "deleted"])
def test_pods_on_their_way_are_not_stuck(case):
    assert pods.stuck(case) is None


def test_only_pods_of_the_resources_own_jobs_count():
    jobs = {"sst-oneshot": {"metadata": {"name": "sst-oneshot", "uid": "job-uid"}}}
    found = pods.waiting([pod(conditions=[UNSCHEDULABLE]), pod(conditions=[UNSCHEDULABLE], uid="other")])
    assert pods.owned(found, jobs) == {"sst-oneshot": [
        {"pod": "sst-oneshot-abcde", "stage": "oneshot", "reason": "Unschedulable",
         "message": UNSCHEDULABLE["message"], "ownerUid": "job-uid"}]}
    assert pods.owned(found, {}) == {}


def test_terminations_come_from_the_same_listing():
    listed = [pod("Succeeded", terminated={"exitCode": 0, "message": "{}", "finishedAt": "t"}), pod("Running")]
    assert pods.terminations(listed) == {"sst-oneshot": [
        {"exitCode": 0, "message": "{}", "finishedAt": "t", "ownerUid": "job-uid"}]}
    assert pods.waiting(listed) == {}
