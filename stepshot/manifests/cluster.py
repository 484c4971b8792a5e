"""What the cluster serves and what the operator's administrator allows (`ClusterCaps`), and the
one check of a valid spec against them (`cluster_errors`) that the operator, `stepshot validate
--cluster` and `stepshot render` run."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from stepshot.errors import StepshotError
from stepshot.spec import API_VERSION, KIND, Spec, scheduling
from stepshot.spec.rules import pod_defaults_errors

# Volume types a resource may mount into its pods (spec.dataset.volume) without the operator's
# administrator allowing more: storage that cannot reach the node's files or the namespace's
# secrets. hostPath and secret need an explicit opt-in (chart value trainer.extraVolumeTypes).
SAFE_VOLUME_TYPES = frozenset({"persistentVolumeClaim", "nfs", "csi", "configMap", "emptyDir", "ephemeral"})


@dataclass(frozen=True)
class ClusterCaps:
    """What the API server serves and the operator allows; the operator discovers it, `render`
    assumes a current cluster."""

    version: tuple[int, int] = (1, 30)
    volume_snapshots: bool = False
    trainer_service_account: str | None = None  # the chart's API-less ServiceAccount for stage pods
    trainer_pull_secrets: tuple[str, ...] = ()   # imagePullSecrets of that account (chart value)
    volume_types: frozenset[str] = SAFE_VOLUME_TYPES
    allowed_images: str | None = None            # a regex every spec.image must match (chart value)
    host_network: bool = False                   # resources may use hostNetwork (trainer.allowHostNetwork)
    capabilities: frozenset[str] = frozenset()   # ... and add these (trainer.allowedCapabilities)
    # Stage-pod settings under every resource's spec.scheduling (trainer.podDefaults, checked at start).
    pod_defaults: dict = field(default_factory=dict, hash=False)

    @property
    def indexed_jobs(self) -> bool:  # completionMode: Indexed + the index annotation (beta 1.22)
        return self.version >= (1, 22)

    @property
    def job_suspend(self) -> bool:   # Job.spec.suspend (beta, on by default, 1.22)
        return self.version >= (1, 22)

    @property
    def pod_failure_policy(self) -> bool:  # beta, on by default, 1.26
        return self.version >= (1, 26)

    @property
    def pod_replacement_policy(self) -> bool:  # beta 1.29: no second pod per index while one terminates
        return self.version >= (1, 29)


def cluster_errors(spec: Spec, caps: ClusterCaps) -> list[str]:
    """Why the operator refuses a valid spec on this cluster (empty: it accepts it): the one
    check the operator, `stepshot validate --cluster` and `stepshot render` run."""
    errors = [f"{key}: Required value: kubectl and the API server need it (apiVersion: {API_VERSION}, kind: {KIND})"
              for key in ("apiVersion", "kind") if not spec.raw.get(key)]
    if not spec.storage.get("claim_name"):
        errors.append("spec.storage.claimName: Required value: a cluster run needs a PersistentVolumeClaim "
                      "for checkpoints and snapshots")
    return errors + volume_errors(spec, caps) + image_errors(spec, caps) + privileged_errors(spec, caps)


def privileged_errors(spec: Spec, caps: ClusterCaps) -> list[str]:
    """Where spec.scheduling asks for host networking or capabilities this operator does not allow."""
    settings = spec.scheduling.to_dict() if spec.get("scheduling") is not None else {}
    return list(scheduling.privileged_errors(settings, caps.host_network, caps.capabilities))


def image_errors(spec: Spec, caps: ClusterCaps) -> list[str]:
    """Why spec.image may not run here (the operator's optional allow-list; empty: it may)."""
    if caps.allowed_images and not re.fullmatch(caps.allowed_images, spec.image):
        return [f"spec.image: Forbidden: {spec.image!r} does not match this operator's allowed images "
                f"({caps.allowed_images}; chart value trainer.allowedImages)"]
    return []


def volume_errors(spec: Spec, caps: ClusterCaps) -> list[str]:
    """Why spec.dataset.volume may not be mounted here (empty: it may)."""
    volume = spec.dataset.get("volume")
    if volume is None:
        return []
    kinds = sorted(set(volume.to_dict()) - {"name"})
    if len(kinds) != 1:
        return [f"spec.dataset.volume: Invalid value: {kinds}: exactly one volume source is required"]
    if kinds[0] not in caps.volume_types:
        return [f"spec.dataset.volume: Forbidden: volume type {kinds[0]} is not allowed by this operator "
                f"(allowed: {', '.join(sorted(caps.volume_types))}); its administrator can allow it with "
                f"the chart value trainer.extraVolumeTypes"]
    return []


def load_pod_defaults(text: str, where: str) -> dict:
    """The operator's stage-pod defaults (chart value trainer.podDefaults, as JSON or YAML text)
    once they pass the schema and rules a resource's spec.scheduling meets; a StepshotError
    naming each error otherwise (the operator stops at start rather than build bad pods)."""
    try:
        value = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise StepshotError(f"{where}: trainer.podDefaults is not JSON or YAML: {exc}") from exc
    errors = pod_defaults_errors({} if value is None else value, "trainer.podDefaults")
    if errors:
        raise StepshotError(f"{where}: invalid chart value trainer.podDefaults:\n  " + "\n  ".join(errors))
    return value or {}
