"""`spec.scheduling`: how its levels merge into one role's pod settings, what a level may not
set, and which settings need the operator's administrator.

Levels, lowest first: the chart's defaults for stage pods (value trainer.podDefaults, the same
shape as spec.scheduling), the resource's shared settings, the resource's role section. Each
source is resolved per role first (its role section over its shared settings), then the
resource's over the chart's: whatever a resource sets wins. A field replaces the one below it,
except the maps (labels, annotations, extraResources: merged per key) and env (merged per
variable name).

The manifest builder (stepshot.manifests) and the cross-field rules (rules) read the settings
through `effective`, so the two cannot merge differently.
"""
from __future__ import annotations

from typing import Iterator, Mapping

from stepshot.spec.schema import ROLES

MERGED_BY_KEY = ("labels", "annotations", "extraResources")
MERGED_BY_NAME = ("env",)
# What the stage pods' GPUs are requested as unless a role names another (gpuResource).
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"

# Environment variables the operator sets in stage containers, and where each comes from: a
# user value would silently change what the spec says (or break the launch). PET_* are
# torchrun's settings (--nnodes, the rendezvous, --max-restarts).
RESERVED_ENV = {
    "PYTHONUNBUFFERED": "unbuffered logs",
    "HOME": "/tmp: the root filesystem is read-only",
    "STEPSHOT_TERMINATION_LOG": "the container's result message",
    "OMP_NUM_THREADS": "from spec.resources.cpu (training) and spec.evaluation.resources.cpu",
    "STEPSHOT_SHARD": "from spec.evaluation.shards",
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "multi-node stages: a group restart after a lost pod needs a fresh rendezvous store",
}
RESERVED_ENV_PREFIXES = {"PET_": "torchrun's settings, from spec.resources.nodes/procsPerNode and spec.maxRestarts"}

# Settings that weaken the pod's isolation: a resource may use them only where the operator's
# administrator allows it (chart values); the chart's own defaults are the administrator's.
PRIVILEGED = {"hostNetwork": "trainer.allowHostNetwork", "capabilities": "trainer.allowedCapabilities"}


def reserved_env(name: str) -> str | None:
    """What sets `name` in stage containers (None: a user may set it)."""
    if name in RESERVED_ENV:
        return RESERVED_ENV[name]
    return next((why for prefix, why in RESERVED_ENV_PREFIXES.items() if name.startswith(prefix)), None)


def merge(base: Mapping, over: Mapping) -> dict:
    """`over`'s settings on top of `base`'s (one level on another)."""
    out = {**base, **{k: v for k, v in over.items() if k not in MERGED_BY_KEY + MERGED_BY_NAME}}
    for key in MERGED_BY_KEY:
        out[key] = {**(base.get(key) or {}), **(over.get(key) or {})}
    for key in MERGED_BY_NAME:
        by_name = {item["name"]: item for item in base.get(key) or []}
        by_name.update({item["name"]: item for item in over.get(key) or []})
        out[key] = list(by_name.values())
    return out


def role_settings(scheduling: Mapping | None, role: str) -> dict:
    """One source's settings for `role`: its role section over its shared settings."""
    scheduling = scheduling or {}
    shared = {k: v for k, v in scheduling.items() if k not in ROLES}
    return merge(shared, scheduling.get(role) or {})


def effective(scheduling: Mapping | None, role: str, defaults: Mapping | None = None) -> dict:
    """The pod settings of `role`'s pods: the resource's over the chart's defaults."""
    return merge(role_settings(defaults, role), role_settings(scheduling, role))


def gpu_resource(settings: Mapping) -> str:
    return settings.get("gpuResource") or DEFAULT_GPU_RESOURCE


def privileged_errors(scheduling: Mapping | None, host_network: bool, capabilities: frozenset[str],
                      path: str = "spec.scheduling") -> Iterator[str]:
    """Where a resource asks for a privileged setting its operator does not allow."""
    allowed_caps = {capability(c) for c in capabilities}
    for level, section in levels(scheduling, path):
        if section.get("hostNetwork") and not host_network:
            yield (f"{level}.hostNetwork: Forbidden: host networking is not allowed by this operator; its "
                   f"administrator can allow it with the chart value {PRIVILEGED['hostNetwork']}")
        for i, cap in enumerate(section.get("capabilities") or []):
            if capability(cap) not in allowed_caps:
                allowed = ", ".join(sorted(allowed_caps)) or "none"
                yield (f"{level}.capabilities[{i}]: Forbidden: capability {cap} is not allowed by this operator "
                       f"(allowed: {allowed}); its administrator can allow it with the chart value "
                       f"{PRIVILEGED['capabilities']}")


def capability(name: str) -> str:
    """A capability's name as Kubernetes and the allow-list compare it (CAP_IPC_LOCK = IPC_LOCK)."""
    return name.upper().removeprefix("CAP_")


def levels(scheduling: Mapping | None, path: str = "spec.scheduling") -> Iterator[tuple[str, Mapping]]:
    """(field path, section) of the shared settings and of each role section present."""
    scheduling = scheduling or {}
    yield path, scheduling
    for role in ROLES:
        if isinstance(scheduling.get(role), Mapping):
            yield f"{path}.{role}", scheduling[role]

