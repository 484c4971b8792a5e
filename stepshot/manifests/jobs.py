"""A stage Job around a pod spec: the role's pod settings (spec.scheduling over the chart's
trainer.podDefaults), the operator's labels, suspend and the pod failure policy."""
from __future__ import annotations

from stepshot.errors import StepshotError
from stepshot.manifests.context import (ANNOTATION_SUSPENDED_BY, LABEL_JOB, SUSPENDED_BY_OPERATOR, Context,
                                        meta)
from stepshot.manifests.pods import with_settings
from stepshot.spec import Spec, scheduling

# Pod settings copied to the pod spec as they are; the others are placed below and in
# pods.with_settings (tests/core/test_pod_settings.py renders every key of the schema).
_POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName",
               "serviceAccountName", "imagePullSecrets", "runtimeClassName")


def role_settings(spec: Spec, role: str, defaults: dict | None = None) -> dict:
    """The pod settings of `role`'s pods (stepshot.spec.scheduling.effective): spec.scheduling's
    role section over its shared settings, over the operator's defaults."""
    own = spec.scheduling.to_dict() if spec.get("scheduling") is not None else {}
    return scheduling.effective(own, role, defaults)


def stage_job(ctx: Context, role: str, name: str, lbl: dict[str, str], pod_spec: dict,
              **spec_extra: object) -> dict:
    """A stage Job: the role's scheduling settings (spec.scheduling) on the Job and its pods."""
    settings = role_settings(ctx.spec, role, ctx.caps.pod_defaults)
    # The operator's labels come last: a user label can never detach a child from its selectors.
    job_labels = {**settings["labels"], **lbl}
    pod_labels = {**job_labels, LABEL_JOB: name}
    pod_spec = dict(pod_spec)
    if ctx.caps.trainer_service_account:
        pod_spec["serviceAccountName"] = ctx.caps.trainer_service_account
    pod_spec.update({k: settings[k] for k in _POD_FIELDS if settings.get(k) not in (None, "", [], {})})
    pod_spec["containers"] = [with_settings(c, settings) for c in pod_spec["containers"]]
    if settings.get("hostNetwork"):   # allowed by the operator's administrator (cluster_errors)
        pod_spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")  # still resolves Services
    pod_meta: dict = {"labels": pod_labels}
    if settings["annotations"]:
        pod_meta["annotations"] = dict(settings["annotations"])
    spec: dict = {"backoffLimit": ctx.spec.backoff_limit, **spec_extra,
                  "template": {"metadata": pod_meta, "spec": pod_spec}}
    if settings.get("activeDeadlineSeconds"):
        spec["activeDeadlineSeconds"] = settings["activeDeadlineSeconds"]
    if ctx.caps.pod_failure_policy:
        spec["podFailurePolicy"] = pod_failure_policy(pod_spec)
    job_meta = meta(ctx, name, job_labels)
    job_meta["annotations"].update(settings["annotations"])
    if ctx.caps.job_suspend:
        spec["suspend"] = bool(ctx.spec.suspend)
        if ctx.spec.suspend:
            job_meta["annotations"][ANNOTATION_SUSPENDED_BY] = SUSPENDED_BY_OPERATOR
    # No ttlSecondsAfterFinished: a vanished finished Job is indistinguishable from one never
    # created, and stage state is derived from the Jobs. Deleting the resource (or its own
    # TTL) removes them through owner references.
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": spec}


def pod_failure_policy(pod_spec: dict) -> dict:
    """Preemption, eviction and node drains (condition DisruptionTarget) do not count against
    backoffLimit: the trainer checkpoints on SIGTERM and the replacement pod resumes. A bad
    spec or input (`stepshot`'s StepshotError exit code) fails the Job at once instead of
    burning its retries."""
    rules: list[dict] = [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    for container in pod_spec["containers"]:
        # onPodConditions: [] is "not set" to the API server; the published OpenAPI marks it required.
        rules.append({"action": "FailJob", "onPodConditions": [],
                      "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [StepshotError.exit_code]}})
    return {"rules": rules}
