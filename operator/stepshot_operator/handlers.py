"""Thin kopf handlers: observe, call `reconcile`, apply its actions, write status, post Events.

Triggers (all level-based: each one recomputes everything from the cluster):
- every event of a SupernetTraining (create, update, the initial listing on operator start);
- every event of a child Job (found through its owner reference), so a finished stage is
  followed by the next one within one round trip;
- a resync loop over the known resources (missed events, TTL after finish).

No kopf timer, daemon or delete handler is registered: each of those makes kopf put a
finalizer on the resource, and a finalizer blocks deletion while the operator is down.
Children carry owner references (`kopf.adopt`); the garbage collector deletes them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import kopf
from kubernetes.client.exceptions import ApiException

from stepshot import manifests
from stepshot.manifests import ClusterCaps
from stepshot.errors import StepshotError
from stepshot.manifests.cluster import load_pod_defaults
from stepshot.names import config_map_name
from stepshot.spec import GROUP, KIND, PLURAL, VERSION

from stepshot_operator import k8s, metrics, pods, reconcile

DEFAULT_METRICS_PORT = 8080
DEFAULT_RESYNC_SECONDS = 10.0
DEFAULT_API_THREADS = 32


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dirty: bool = False
    resync: bool = False             # the next pass is a resync: also check what events cannot show
    generation: int | None = None    # metadata.generation of the last pass's resource
    last_error: str | None = None    # the last failed pass's error, posted once as an Event


@dataclass
class State:
    kube: k8s.Kube
    caps: ClusterCaps
    resync: float
    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    # (kind, ns, name, owner uid) known to exist. The uid matters: a resource deleted and created
    # again under its name before this process saw the deletion must not skip its own ConfigMap.
    ensured: set[tuple[str, str, str, str]] = field(default_factory=set)
    foreign: set[tuple[str, str]] = field(default_factory=set)       # (ns, Job) ignored and logged once
    task: asyncio.Task | None = None


def _forget(state: State, namespace: str, name: str) -> None:
    """Drop what the operator keeps about a resource that is gone (or going)."""
    state.entries.pop((namespace, name), None)
    state.ensured -= {k for k in state.ensured if k[:3] == ("ConfigMap", namespace, config_map_name(name))}
    metrics.forget_resource(namespace, name)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    # All bookkeeping kopf might write goes to annotations; status belongs to reconcile.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # Reconnect watches well before load balancers drop them silently (kopf#698).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Each trigger reconciles from scratch and passes coalesce (reconcile_training), so kopf's
    # per-object batching window only adds latency between a Job finishing and the next one.
    settings.batching.batch_window = 0.01
    # Log records become Events only from WARNING up; stage Events are posted explicitly.
    settings.posting.level = logging.WARNING
    if not memo.get("scan", True):
        settings.scanning.disabled = True

    # The kubernetes client blocks: its calls run on a pool sized for many resources at once,
    # with as many pooled connections (the default pool is cores + 4 threads).
    threads = int(memo.get("api_threads", DEFAULT_API_THREADS))
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="api"))
    await asyncio.to_thread(k8s.load_config, threads)
    kube = k8s.Kube()
    caps = ClusterCaps(**await asyncio.to_thread(kube.discover), **admin_settings(os.environ))
    logger.info("API server %d.%d: indexed jobs %s, job suspend %s, volume snapshots %s; data volume types %s; "
                "host network %s, capabilities %s, stage-pod defaults %s",
                *caps.version, caps.indexed_jobs, caps.job_suspend, caps.volume_snapshots,
                ",".join(sorted(caps.volume_types)), caps.host_network, ",".join(sorted(caps.capabilities)) or "none",
                ",".join(sorted(caps.pod_defaults)) or "none")
    port = int(memo.get("metrics_port", os.environ.get("STEPSHOT_METRICS_PORT", DEFAULT_METRICS_PORT)))
    metrics.serve(port, memo.get("metrics_address", "0.0.0.0"))
    state = State(kube, caps, float(memo.get("resync", DEFAULT_RESYNC_SECONDS)))
    state.task = asyncio.create_task(_resync_loop(state, logger))
    memo["state"] = state


def admin_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The ClusterCaps fields the chart's values set (the Deployment's environment); a bad
    image pattern or invalid stage-pod defaults stop the operator at start, each error named."""
    try:
        re.compile(env.get("STEPSHOT_ALLOWED_IMAGES") or "")
    except re.error as exc:
        raise StepshotError(f"env STEPSHOT_ALLOWED_IMAGES (chart value trainer.allowedImages): {exc}") from exc
    return {"trainer_service_account": env.get("STEPSHOT_TRAINER_SERVICE_ACCOUNT") or None,
            "trainer_pull_secrets": _names(env.get("STEPSHOT_TRAINER_IMAGE_PULL_SECRETS", "")),
            "volume_types": manifests.SAFE_VOLUME_TYPES | set(_names(env.get("STEPSHOT_EXTRA_VOLUME_TYPES", ""))),
            "allowed_images": env.get("STEPSHOT_ALLOWED_IMAGES") or None,
            "host_network": env.get("STEPSHOT_ALLOW_HOST_NETWORK") == "true",
            "capabilities": frozenset(_names(env.get("STEPSHOT_ALLOWED_CAPABILITIES", ""))),
            "pod_defaults": load_pod_defaults(env.get("STEPSHOT_POD_DEFAULTS", ""), "env STEPSHOT_POD_DEFAULTS")}


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated chart value passed as an environment variable."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state: State | None = memo.get("state")
    if state and state.task:
        state.task.cancel()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def training_event(type: str | None, name: str, namespace: str, meta: kopf.Meta, memo: kopf.Memo,
                         logger: logging.Logger, **_: Any) -> None:
    state: State = memo["state"]
    if type == "DELETED":
        _forget(state, namespace, name)
        return
    entry = state.entries.get((namespace, name))
    if type is not None and entry is not None and entry.generation == meta.get("generation"):
        return   # our own status write (or a label edit): nothing to reconcile; resyncs still come
    await reconcile_training(state, namespace, name, logger)


@kopf.on.event("batch", "v1", "jobs", labels={manifests.LABEL_TRAINING: kopf.PRESENT})
async def job_event(meta: kopf.Meta, namespace: str, memo: kopf.Memo, logger: logging.Logger,
                    **_: Any) -> None:
    owner = next((ref["name"] for ref in meta.get("ownerReferences") or []
                  if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(GROUP)), None)
    if owner:
        await reconcile_training(memo["state"], namespace, owner, logger)


async def _resync_loop(state: State, logger: logging.Logger) -> None:
    while True:
        await asyncio.sleep(state.resync)
        for namespace, name in list(state.entries):
            await reconcile_training(state, namespace, name, logger, resync=True)


async def reconcile_training(state: State, namespace: str, name: str, logger: logging.Logger,
                             resync: bool = False) -> None:
    """Reconcile one resource; concurrent triggers coalesce into one more pass."""
    entry = state.entries.setdefault((namespace, name), _Entry())
    entry.dirty = True
    entry.resync = entry.resync or resync
    if entry.lock.locked():
        return
    async with entry.lock:
        while entry.dirty:
            entry.dirty, thorough, entry.resync = False, entry.resync, False
            started = time.monotonic()
            try:
                await _reconcile_once(state, namespace, name, logger, thorough)
                entry.last_error = None
            except Exception as exc:  # noqa: BLE001 - one bad pass must not kill the trigger; resync retries
                metrics.RECONCILE_ERRORS.inc()
                logger.exception("reconcile of %s/%s failed", namespace, name)
                await _report_error(state, entry, namespace, name, exc)
            finally:
                metrics.RECONCILE_DURATION.observe(time.monotonic() - started)


async def _report_error(state: State, entry: _Entry, namespace: str, name: str, exc: Exception) -> None:
    """A failing pass is visible on the resource too (a Warning Event, once per distinct error)."""
    text = f"{type(exc).__name__}: {exc}"[:500]
    if text == entry.last_error:
        return
    entry.last_error = text
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name, "namespace": namespace}}
    try:
        await asyncio.to_thread(state.kube.post_event, ref, "Warning", "ReconcileError",
                                f"the operator cannot reconcile this resource (retrying): {text}")
    except Exception:  # noqa: BLE001 - the log above already has it
        pass


async def _reconcile_once(state: State, namespace: str, name: str, logger: logging.Logger,
                          resync: bool = False) -> None:
    kube = state.kube
    sel = manifests.selector(name)
    body, listed = await asyncio.gather(asyncio.to_thread(kube.get_training, namespace, name),
                                        asyncio.to_thread(kube.list_jobs, namespace, sel))
    if body is None or body["metadata"].get("deletionTimestamp"):
        _forget(state, namespace, name)
        return
    state.entries[(namespace, name)].generation = body["metadata"].get("generation")
    jobs = _owned(state, body, listed, logger)
    terminations, waiting = {}, {}
    wanted = reconcile.terminations_needed(body, jobs)
    if wanted or reconcile.pods_may_wait(jobs):   # one list of the children's pods serves both
        listed_pods = await asyncio.to_thread(kube.list_pods, namespace, sel)
        terminations = pods.owned(pods.terminations(listed_pods), jobs) if wanted else {}
        waiting = pods.owned(pods.waiting(listed_pods), jobs)
    snapshots = {}
    if state.caps.volume_snapshots:
        snapshots = await asyncio.to_thread(kube.list_volume_snapshots, namespace, sel)
    current = reconcile.load_resource(body)        # validated once for the whole pass
    started, present = None, None
    edited = reconcile.started_spec_needed(current, jobs)   # the Jobs' spec hash differs from the resource's
    if edited or (resync and reconcile.pods_to_start(jobs)):
        # After an edit: the spec the pods read. On resyncs while pods may still start (they mount
        # it, and the kubelet waits for it): whether it still exists.
        config_map = await asyncio.to_thread(kube.get_config_map, namespace, config_map_name(name))
        present = config_map is not None
        started = manifests.spec_from_config_map(config_map) if edited else None
        if not present:   # deleted: the cache must not keep the operator from recreating it
            state.ensured.discard(("ConfigMap", namespace, config_map_name(name), body["metadata"].get("uid")))
    observed = reconcile.Observed(jobs=jobs, terminations=terminations, volume_snapshots=snapshots,
                                  started_spec=started, config_map_present=present, waiting=waiting)
    now = datetime.now(timezone.utc)
    result = reconcile.reconcile(body, observed, state.caps, now, current)

    refused, taken = await _create_children(state, body, result.create, logger)
    for job in result.suspend:
        await asyncio.to_thread(kube.set_job_suspend, namespace, job, True)
    for job in result.resume:
        await asyncio.to_thread(kube.set_job_suspend, namespace, job, False)
    for job in result.delete_jobs:
        logger.info("stopping Job %s/%s: another node's Job of its stage failed", namespace, job)
        await asyncio.to_thread(kube.delete_job, namespace, job)
    status = reconcile.with_degraded(result.status, body.get("status") or {}, refused, now, taken)
    transitions = list(result.transitions)
    degraded = reconcile.degraded_transition(body.get("status") or {}, status)
    if degraded:
        transitions.append(degraded)
    for t in transitions:
        if t.subject == "result":   # the operator's log says why too, not only "metrics unavailable"
            logger.warning("%s/%s stage %s: %s", namespace, name, t.stage, t.message)
    # Events first, under names derived from this version of the resource and the transition:
    # if the operator dies before the status write below, the next pass derives the same
    # transitions and names again, and an Event already posted is not posted twice.
    await asyncio.gather(*(asyncio.to_thread(kube.post_event, body, "Warning" if t.warning else "Normal",
                                             _event_reason(t), t.message, name=reconcile.event_name(body, t))
                           for t in transitions))
    patch = reconcile.merge_patch(body.get("status") or {}, status)
    if patch:
        await asyncio.to_thread(kube.patch_training_status, namespace, name, patch)
    for t in transitions:
        if t.subject not in reconcile.NOT_STAGES:
            metrics.observe_transition(t.subject, t.new, t.seconds)
    metrics.observe_resource(namespace, name, status)
    if result.delete:
        logger.info("ttlSecondsAfterFinished passed: deleting %s/%s", namespace, name)
        await asyncio.to_thread(kube.delete_training, namespace, name)


def _event_reason(t: reconcile.Transition) -> str:
    # degraded: ChildCreateFailed or ChildNameTaken; result: ResultRejected
    return {"resource": "Phase", "spec": "", "pods": "", "degraded": "", "result": ""}.get(t.subject, "Stage") + t.new


async def _create_children(state: State, body: dict, objects: tuple[dict, ...],
                           logger: logging.Logger) -> tuple[list[str], list[str]]:
    """Create the pass's children in order: (refused by the API server, names held by an object
    this resource does not control). An existing object counts as created only when this
    resource controls it: a foreign ConfigMap would give the pods another spec, a foreign Job
    would leave its stage waiting for ever. After a taken name nothing more is created."""
    namespace, uid = body["metadata"]["namespace"], body["metadata"].get("uid")
    refused: list[str] = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        key = (kind, namespace, name, "" if kind == "ServiceAccount" else uid)   # the SA is shared
        if key in state.ensured:
            continue  # created (or found) by this process already: save a round trip per stage
        if kind != "ServiceAccount":  # shared by the namespace's resources: owned by none
            kopf.adopt(obj, owner=body, nested="spec.template" if kind == "Job" else None)
        try:
            created = await asyncio.to_thread(state.kube.create, obj)
        except ApiException as exc:   # the user must see it: a condition and an Event, not only this log
            refused.append(f"{kind} {name}: {k8s.api_message(exc)}")
            continue
        if not created and kind != "ServiceAccount":
            existing = await asyncio.to_thread(state.kube.get_child, kind, namespace, name)
            owner = pods.controller_uid(existing) if existing else uid   # gone since: the next pass creates it
            if owner != uid:
                message = reconcile.taken_message(kind, name, owner, uid)
                if (namespace, f"{kind}/{name}/{uid}") not in state.foreign:   # once per holder, not per pass
                    state.foreign.add((namespace, f"{kind}/{name}/{uid}"))
                    logger.warning("%s/%s: %s", namespace, body["metadata"]["name"], message)
                return refused, [message]
        if kind in ("ConfigMap", "ServiceAccount"):
            state.ensured.add(key)
        logger.info("%s %s/%s", "created" if created else "found existing", kind, name)
    return refused, []


def _owned(state: State, body: dict, jobs: dict[str, dict], logger: logging.Logger) -> dict[str, dict]:
    """The Jobs this resource controls (its uid): a Job that merely carries its labels, or one
    left by an earlier resource of the same name, is ignored (and logged once), never adopted."""
    uid = body["metadata"].get("uid")
    owned = {n: j for n, j in jobs.items() if pods.controller_uid(j) == uid}
    for name in sorted(set(jobs) - set(owned)):
        key = (body["metadata"]["namespace"], name)
        if key not in state.foreign:
            state.foreign.add(key)
            logger.warning("ignoring Job %s: it carries the labels of %s but is not controlled by it",
                           name, body["metadata"]["name"])
    return owned
