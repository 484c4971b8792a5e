"""What the operator reads from its stage pods (one list call per pass, plain dicts in and out):
the termination messages of finished containers (results, failure tails) and why a pod
cannot start (the scheduler's or the kubelet's reason), both by the Job label on the pod.

Only pods controlled by the resource's own Jobs count (`owned`): a pod that merely carries a
stage's labels can neither supply a result nor raise a condition.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from stepshot import manifests

# Container waiting reasons that do not clear by waiting: the kubelet retries them forever
# (a Job never counts them against backoffLimit), so without a condition the stage looks busy.
# ContainerCreating and PodInitializing are ordinary start-up and are not listed.
STUCK_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


def controller_uid(obj: Mapping) -> str | None:
    """The uid of the object's controller (its ownerReference with controller: true)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _job(pod: Mapping) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(manifests.LABEL_JOB)


def _statuses(pod: Mapping) -> list[dict]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def terminations(pods: Iterable[Mapping]) -> dict[str, list[dict]]:
    """Job name -> terminated containers of its pods: {"exitCode", "message", "finishedAt", "ownerUid"}."""
    out: dict[str, list[dict]] = {}
    for pod in pods:
        job = _job(pod)
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if job and term:
                out.setdefault(job, []).append({"exitCode": term.get("exitCode"), "message": term.get("message") or "",
                                                "finishedAt": term.get("finishedAt"), "ownerUid": controller_uid(pod)})
    return out


def stuck(pod: Mapping) -> tuple[str, str] | None:
    """(reason, message) when the pod cannot start: unschedulable, or a container the kubelet
    cannot create (image pull, invalid image, missing Secret/ConfigMap key); None otherwise."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason"):
            return cond["reason"], cond.get("message") or ""
    for cs in _statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            return waiting["reason"], waiting.get("message") or ""
    return None


def waiting(pods: Iterable[Mapping]) -> dict[str, list[dict]]:
    """Job name -> its pods that cannot start: {"pod", "stage", "reason", "message", "ownerUid"}."""
    out: dict[str, list[dict]] = {}
    for pod in pods:
        job, why = _job(pod), stuck(pod)
        if job and why:
            meta = pod.get("metadata") or {}
            out.setdefault(job, []).append({"pod": meta.get("name"), "stage": (meta.get("labels") or {}).get(
                manifests.LABEL_STAGE), "reason": why[0], "message": why[1], "ownerUid": controller_uid(pod)})
    return out


def owned(found: Mapping[str, list[dict]], jobs: Mapping[str, dict]) -> dict[str, list[dict]]:
    """Only entries of pods controlled by the resource's own Jobs (by uid)."""
    return {job: [e for e in entries if e.get("ownerUid") == jobs[job]["metadata"].get("uid")]
            for job, entries in found.items() if job in jobs}
