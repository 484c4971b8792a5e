"""Names of the objects derived from a SupernetTraining (torch-free, one home): the operator,
`stepshot render` and the tests all derive them here, so they cannot disagree. Also how the
resource spells its fields (`camel`), for the spec view and the status writers."""
from __future__ import annotations

import hashlib
import re

MAX_JOB_NAME = 52   # leaves room for "-snap" and an Indexed Job's "-<index>" within 63


def dns_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label of at most `limit` characters; long names keep a hash suffix."""
    text = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if len(text) <= limit:
        return text
    return f"{text[:limit - 9].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars, alnum ends); long values keep a hash suffix."""
    text = re.sub(r"[^A-Za-z0-9._-]", "-", text).strip("-._")
    if len(text) <= 63:
        return text
    return f"{text[:54].rstrip('-._')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def job_name(resource: str, stage: str) -> str:
    """Deterministic name of a stage's Job (<= 52 chars)."""
    return dns_name(f"{resource}-{stage}", MAX_JOB_NAME)


def snapshot_name(resource: str, stage: str) -> str:
    """Deterministic name of a stage's snapshot Job / VolumeSnapshot."""
    return job_name(resource, stage) + "-snap"


def shard_job_name(resource: str, stage: str, shard: int) -> str:
    """An evaluation shard's own Job, where the server has no Indexed Jobs (<= 57 chars)."""
    return f"{job_name(resource, stage)}-{shard}"


def merge_job_name(resource: str, stage: str) -> str:
    """The Job that merges a sharded evaluation's parts into one predictions file."""
    return job_name(resource, stage) + "-merge"


def config_map_name(resource: str) -> str:
    """The spec ConfigMap every stage pod reads."""
    return dns_name(f"{resource}-spec")


def camel(name: str) -> str:
    """snake_case -> camelCase, as the resource spells its fields."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
