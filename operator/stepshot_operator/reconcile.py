"""The level-based state machine: (resource, observed children, now) -> (actions, status).

Pure: no kopf, no API client. Every stage's state is derived from the Jobs that exist now
(deterministic names from `stepshot.names.job_name`), never from the resource's own status, so
a restarted operator, a lost watch event or a 409 on the status write cannot make a stage run
twice (kuberay#756). The previous status is read only for what the cluster may have forgotten
since (pod termination messages: selected checkpoints, evaluation metrics), for condition
transition times, and to tell which stage transitions are new (Events, metrics).

Stage states:  train stages  Pending -> Running -> Snapshotting -> Succeeded | Failed
               evaluation    Pending -> Running -> Succeeded | Failed
Resource phase: Pending | Running | Suspended | Succeeded | Failed.
A failed stage is retried by deleting its failed Job: the stage is Pending again and recreated.

Once the first Job exists the spec is fixed: the pods read it from the spec ConfigMap, so the
operator acts on that copy too (with the runtime controls, suspend and ttl, taken from the
resource) and reports later edits in a SpecChanged condition instead of half-applying them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from stepshot import manifests
from stepshot.errors import StepshotError
from stepshot.manifests import ClusterCaps, Context
from stepshot.names import config_map_name, merge_job_name, snapshot_name
from stepshot.plan import Plan, Stage, build_plan
from stepshot.spec import RUNTIME_FIELDS, Spec, SpecError, changed_fields, load, training_fields
from stepshot.workdir import MessageError, parse_evaluation, parse_snapshot
from stepshot_operator import shard_progress

PENDING, RUNNING, SNAPSHOTTING, SUCCEEDED, FAILED, SUSPENDED = (
    "Pending", "Running", "Snapshotting", "Succeeded", "Failed", "Suspended")
ABSENT, ACTIVE = "Absent", "Active"   # Job states besides SUCCEEDED/FAILED/SUSPENDED
CONDITION_TYPES = ("Running", "Suspended", "Succeeded", "Failed")


@dataclass(frozen=True)
class Observed:
    """What the operator saw in the cluster for one resource."""

    jobs: Mapping[str, dict] = field(default_factory=dict)                  # Job name -> Job
    terminations: Mapping[str, Sequence[dict]] = field(default_factory=dict)
    # ^ Job name -> terminated containers of its pods: {"exitCode", "message", "finishedAt"}
    volume_snapshots: Mapping[str, dict] = field(default_factory=dict)      # name -> VolumeSnapshot
    started_spec: Mapping | None = None    # the spec in the spec ConfigMap, when it was read
    config_map_present: bool | None = None  # whether the spec ConfigMap exists (None: not looked at)
    waiting: Mapping[str, Sequence[dict]] = field(default_factory=dict)
    # ^ Job name -> its pods that cannot start (stepshot_operator.pods.waiting): {"pod", "stage", "reason", "message"}


@dataclass(frozen=True)
class Transition:
    stage: str
    # What changed: a stage (oneshot | fewshot | evaluate, the `kind` label of the transition
    # metric), the resource's phase (resource), its spec (spec) or its children (degraded).
    subject: str
    old: str
    new: str
    message: str
    seconds: float | None = None   # stage duration, on Succeeded

    @property
    def warning(self) -> bool:
        return self.new == FAILED or self.subject in ("spec", "degraded", "pods", "result")


NOT_STAGES = ("resource", "spec", "degraded", "pods", "result")   # Transition subjects that are not a stage's


@dataclass(frozen=True)
class Result:
    status: dict
    create: tuple[dict, ...] = ()
    suspend: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()
    delete_jobs: tuple[str, ...] = ()    # siblings of a failed per-node Job: the group stops together
    transitions: tuple[Transition, ...] = ()
    delete: bool = False                 # ttlSecondsAfterFinished has passed (the resync loop re-checks)


# --------------------------------------------------------------------------- observed Job state

def job_state(job: Mapping | None) -> str:
    if job is None:
        return ABSENT
    status = job.get("status") or {}
    true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in true:
        return SUCCEEDED
    if "Failed" in true:
        return FAILED
    if (job.get("spec") or {}).get("suspend"):
        return SUSPENDED
    return ACTIVE


def suspended_by_operator(job: Mapping) -> bool:
    """Whether the operator itself suspended this Job (spec.suspend): only those it resumes."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return annotations.get(manifests.ANNOTATION_SUSPENDED_BY) == manifests.SUSPENDED_BY_OPERATOR


def _failure(job: Mapping) -> tuple[str, str]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return cond.get("reason") or "Failed", cond.get("message") or ""
    return "Failed", ""


def _condition_time(job: Mapping, kind: str) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond.get("lastTransitionTime")
    return None


def _aggregate(states: Sequence[str]) -> str:
    if FAILED in states:
        return FAILED
    if all(s == SUCCEEDED for s in states):
        return SUCCEEDED
    if all(s == ABSENT for s in states):
        return ABSENT
    return ACTIVE


def _terminated(observed: Observed, job: str, success: bool) -> dict | None:
    """The latest terminated container of the Job's pods with exit code 0 (or non-zero)."""
    hits = [t for t in observed.terminations.get(job, ()) if (t.get("exitCode") == 0) == success]
    return max(hits, key=lambda t: t.get("finishedAt") or "", default=None)


def _result(observed: Observed, job: str, parse: Callable[[str], object],
            rejected: list[str] | None = None) -> dict | None:
    """The status form of the Job's result message (stepshot.workdir), None if absent or
    malformed; why it was unusable goes to `rejected` (an Event and a log line)."""
    hit = _terminated(observed, job, success=True)
    if not hit:
        return None
    if not (hit.get("message") or "").strip():
        why = f"Job {job} finished without a result message"
    else:
        try:
            return parse(hit["message"]).status()
        except MessageError as exc:   # pod output is untrusted: say why it was refused
            why = f"the result message of Job {job} was rejected: {exc}"[:500]
    if rejected is not None:
        rejected.append(why)
    return None


RESULT_REJECTED = "ResultRejected"
METRICS_UNAVAILABLE = "evaluation finished; metrics unavailable"


def _log_tail(observed: Observed, job: str) -> str:
    hit = _terminated(observed, job, success=False)
    lines = [ln.strip() for ln in (hit or {}).get("message", "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# --------------------------------------------------------------------------- helpers

def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _iso(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stage_category(stage: Stage) -> str:
    """Which part of the method a stage is: the one-shot super-net, a few-shot step, the evaluation."""
    return "evaluate" if not stage.is_train else ("oneshot" if stage.step == 0 else "fewshot")


def _what(stage: Stage) -> str:
    return stage.split.describe(stage.name) if stage.is_train else "evaluation"


# The condition reason of a failed training stage, per split mode (stepshot.split_modes.MODES).
TRAIN_FAILURE_REASONS = {"none": "StageFailed", "grouped": "StageFailed", "partitioned": "PartitionFailed",
                         "continued": "StageFailed"}


def _failure_reason(stage: Stage) -> str:
    if not stage.is_train:
        return "EvaluationFailed"
    try:
        return TRAIN_FAILURE_REASONS[stage.split.mode]
    except KeyError:   # a mode added to the table but not here: a bug of ours, not the user's
        raise StepshotError(f"stage {stage.name}: split mode {stage.split.mode!r} has no failure reason in the "
                            f"operator (stepshot_operator.reconcile.TRAIN_FAILURE_REASONS)") from None


def _compact(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@dataclass
class _StageView:
    stage: Stage
    jobs: list[str]
    train: str                      # aggregated Job state of the stage's Job(s)
    snapshot: str = ABSENT          # the snapshot Job's state (train stages)
    state: str = PENDING
    failure: str | None = None      # "what failed: reason: message"
    reason: str | None = None       # condition reason of that failure


# --------------------------------------------------------------------------- the spec acted on

SPEC_CHANGED = "SpecChanged"


def load_resource(body: Mapping) -> Spec | SpecError:
    """The resource's own spec, validated and defaulted once per pass (or why it is invalid)."""
    try:
        return load(dict(body))
    except SpecError as exc:
        return exc


def effective_spec(body: Mapping, current: Spec | SpecError, started: Mapping | None) -> tuple[Spec, str | None]:
    """The spec to reconcile with, and why the resource's edits are not applied (None: no edits).

    Before the first Job that is the resource's own spec (`current`). After it, the spec the
    pods read (`started`, from the ConfigMap) with the resource's runtime controls; of an
    invalid edit only valid runtime controls count."""
    if started is None:
        if isinstance(current, SpecError):
            raise current
        return current, None
    if isinstance(current, SpecError):
        message = f"the edited spec is invalid and is not applied ({'; '.join(current.errors)}); the run goes on unchanged"
        try:  # a valid suspend still counts, or a typo elsewhere would resume a suspended run
            return _with_runtime(body, started, body.get("spec") or {}), message
        except SpecError:
            return load({**body, "spec": dict(started)}), message
    edited = current.raw["spec"]
    spec = _with_runtime(body, started, edited)
    changed = changed_fields(started, edited)
    if not changed:
        return spec, None
    return spec, (f"edits after the first stage Job are not applied ({', '.join(changed)}): the run goes on "
                  f"with the spec it started with; create a new {body.get('kind', 'resource')} to train "
                  f"with the edited one (spec.suspend and spec.ttlSecondsAfterFinished do apply)")


def _with_runtime(body: Mapping, started: Mapping, source: Mapping) -> Spec:
    runtime = {k: source[k] for k in RUNTIME_FIELDS if source.get(k) is not None}
    return load({**body, "spec": {**training_fields(started), **runtime}})


def started_spec_needed(current: Spec | SpecError, jobs: Mapping[str, dict]) -> bool:
    """Whether to read the spec ConfigMap: some Job was made from a spec other than the
    resource's current one (the hash annotation every child carries)."""
    if not jobs:
        return False
    if isinstance(current, SpecError):
        return True
    return any(((job.get("metadata") or {}).get("annotations") or {}).get(manifests.ANNOTATION_SPEC_HASH)
               != current.spec_hash for job in jobs.values())


DEGRADED = "Degraded"


CHILD_CREATE_FAILED, CHILD_NAME_TAKEN = "ChildCreateFailed", "ChildNameTaken"


def with_degraded(status: dict, old: Mapping, refused: Sequence[str], now: datetime,
                  taken: Sequence[str] = ()) -> dict:
    """The status plus the Degraded condition: True while a child's name is held by an object
    this resource does not control (`taken`: nothing more is created until it is gone), or
    while the API server refuses a child (its message); every pass retries. False otherwise."""
    old_conditions = {c.get("type"): c for c in old.get("conditions") or []}
    problems = [*taken, *refused]
    reason = CHILD_NAME_TAKEN if taken else CHILD_CREATE_FAILED if refused else "ChildrenCreated"
    degraded = _condition(DEGRADED, bool(problems), reason, "; ".join(problems)[:1024], old_conditions,
                          status.get("observedGeneration"), now)
    return {**status, "conditions": [*status.get("conditions", []), degraded]}


def degraded_transition(old: Mapping, status: Mapping) -> Transition | None:
    """The Event of a Degraded condition that became True, or changed its reason (level-based:
    from the two statuses, so a pass that dies before its status write posts it again)."""
    new = next((c for c in status.get("conditions") or [] if c.get("type") == DEGRADED), None)
    if not new or new.get("status") != "True":
        return None
    before = next((c for c in old.get("conditions") or [] if c.get("type") == DEGRADED), {})
    if before.get("status") == "True" and before.get("reason") == new.get("reason"):
        return None
    return Transition("resource", "degraded", "", new["reason"], new.get("message") or "")


def taken_message(kind: str, name: str, owner_uid: str | None, uid: str | None) -> str:
    """Why a child's deterministic name cannot be used: another object holds it."""
    holder = f"controlled by uid {owner_uid}" if owner_uid else "controlled by nothing"
    return (f"{kind} {name} already exists, {holder}, not by this resource (uid {uid}): left by an earlier "
            f"resource of the same name, or created by hand; the run waits until it is deleted "
            f"(kubectl delete {kind.lower()} {name})")


def event_name(body: Mapping, t: Transition) -> str:
    """A deterministic Event name for transition `t` of this version of the resource: a pass
    that posted its Events and died before writing the status posts the same names again, and
    the API server's AlreadyExists makes that a no-op (an Event is neither lost nor doubled).
    After the status write the resourceVersion differs, so a later identical transition (a
    retried stage failing again) gets an Event of its own."""
    meta = body.get("metadata") or {}
    key = "/".join(str(x) for x in (meta.get("uid"), meta.get("resourceVersion"), t.subject, t.stage, t.old, t.new))
    return f"{meta.get('name')}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def pods_to_start(jobs: Mapping[str, dict]) -> bool:
    """Whether a Job may still start pods (active or suspended): they mount the spec ConfigMap."""
    return any(job_state(job) in (ACTIVE, SUSPENDED) for job in jobs.values())


def pods_may_wait(jobs: Mapping[str, dict]) -> bool:
    """Whether a Job has pods that may be stuck before starting (the handler lists them then)."""
    return any(job_state(job) == ACTIVE for job in jobs.values())


PODS_PENDING = "PodsPending"


def _pods_pending(observed: Observed) -> tuple[str, str] | None:
    """(reason, message) while a pod of an active Job cannot start, else None. The first pod
    (by Job, then pod name) gives the reason; the message counts the others."""
    stuck = sorted(((job, w) for job, found in observed.waiting.items()
                    if job_state(observed.jobs.get(job)) == ACTIVE for w in found),
                   key=lambda jw: (jw[0], jw[1].get("pod") or ""))
    if not stuck:
        return None
    job, first = stuck[0]
    where = f"stage {first['stage']}, " if first.get("stage") else ""
    text = f"{where}pod {first.get('pod')} (Job {job}) cannot start: {first['reason']}"
    text += f": {first['message']}" if first.get("message") else ""
    more = f" (and {len(stuck) - 1} more pod{'s' * (len(stuck) > 2)})" if len(stuck) > 1 else ""
    return first["reason"], text[:900] + more


def _pods_pending_condition(pending: tuple[str, str] | None, old: Mapping, generation: int | None,
                            now: datetime) -> dict:
    """True (the scheduler's or kubelet's reason) while a stage pod cannot start; level-based:
    False again as soon as no pod of an active Job is stuck."""
    old_conditions = {c.get("type"): c for c in old.get("conditions") or []}
    reason, message = pending or ("NoPodWaiting", "no stage pod is waiting to be scheduled or for its containers")
    return _condition(PODS_PENDING, pending is not None, reason, message, old_conditions, generation, now)


def condition_true(status: Mapping, ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True" for c in status.get("conditions") or [])


def _spec_condition(edit: str | None, old: Mapping, generation: int | None, now: datetime) -> dict:
    old_conditions = {c.get("type"): c for c in old.get("conditions") or []}
    reason = "EditNotApplied" if edit else "AsCreated"
    return _condition(SPEC_CHANGED, bool(edit), reason, edit or "", old_conditions, generation, now)


# --------------------------------------------------------------------------- the state machine

@dataclass
class _Pass:
    """What one reconcile pass works on: the spec it acts on, what it observed, the old status."""

    ctx: Context
    observed: Observed
    old: Mapping
    generation: int | None
    now: datetime
    views: dict[str, _StageView] = field(default_factory=dict)
    rejected: dict[str, list[str]] = field(default_factory=dict)   # stage -> why its result was unusable

    @property
    def plan(self) -> Plan:
        return self.ctx.plan


def reconcile(body: Mapping, observed: Observed, caps: ClusterCaps, now: datetime,
              current: Spec | SpecError | None = None) -> Result:
    """One pass. `current` is `load_resource(body)` when the caller already has it."""
    old = dict(body.get("status") or {})
    generation = (body.get("metadata") or {}).get("generation")
    acted_on = _acted_on(body, observed, caps, load_resource(body) if current is None else current)
    if isinstance(acted_on, _Refused):
        return _invalid(old, generation, acted_on.message, now, reason=acted_on.reason)
    spec, plan, edit = acted_on
    p = _Pass(Context(spec, plan, caps), observed, old, generation, now)
    p.views = _views(p)
    failed = [v for v in p.views.values() if v.state == FAILED]
    evaluation = p.views[plan.stages[-1].name]
    suspended = bool(spec.suspend) and evaluation.state != SUCCEEDED and not failed

    create: list[dict] = []
    if not suspended and evaluation.state != SUCCEEDED:
        create, starting = _next_objects(p.ctx, p.views, observed, failed=bool(failed))
        create = _with_shared_objects(p, create)
        for name in starting:
            p.views[name].state = RUNNING
    suspend, resume, held = _suspend_resume(caps, observed, suspended)
    waiting = bool(held) and not any(job_state(j) == ACTIVE for j in observed.jobs.values())
    phase = _phase(failed, evaluation, suspended or waiting, bool(observed.jobs or create))

    old_stages: Mapping[str, dict] = old.get("stages") or {}
    # A stage's result message is judged once, in the pass that records the stage Succeeded
    # (later passes may list the same pods again for another stage's message).
    p.rejected = {name: [] for name in p.views if (old_stages.get(name) or {}).get("state") != SUCCEEDED}
    stages_status = {name: _stage_status(p.ctx, v, observed, old_stages.get(name) or {}, p.rejected.get(name))
                     for name, v in p.views.items()}
    result_metrics = (_result(observed, evaluation.jobs[-1], parse_evaluation,
                              p.rejected.get(evaluation.stage.name))
                      if evaluation.state == SUCCEEDED else None) or old.get("result")
    status = _status(p, stages_status, phase, failed, result_metrics, _suspension(suspended, waiting, held))
    archs = _archs(p.ctx, evaluation, observed, stages_status[evaluation.stage.name], result_metrics)
    if archs:
        status["archs"] = archs
    status["conditions"].append(_spec_condition(edit, old, generation, now))
    pending = _pods_pending(observed)
    status["conditions"].append(_pods_pending_condition(pending, old, generation, now))

    transitions = _transitions(plan, p.views, stages_status, old_stages, old.get("phase"), phase, status)
    if edit and not condition_true(old, SPEC_CHANGED):
        transitions += (Transition("spec", "spec", "", SPEC_CHANGED, edit),)
    if pending and not condition_true(old, PODS_PENDING):
        transitions += (Transition("pods", "pods", "", PODS_PENDING, pending[1]),)
    transitions += tuple(Transition(stage, "result", "", RESULT_REJECTED, why)
                         for stage, whys in p.rejected.items() for why in whys)
    return Result(status=status, create=tuple(create), suspend=tuple(suspend), resume=tuple(resume),
                  delete_jobs=_stopped_siblings(p.views, observed), transitions=transitions,
                  delete=_ttl_expired(spec, status, now))


@dataclass(frozen=True)
class _Refused:
    message: str
    reason: str


def _acted_on(body: Mapping, observed: Observed, caps: ClusterCaps,
              current: Spec | SpecError) -> tuple[Spec, Plan, str | None] | _Refused:
    """(spec, plan, edit message) to act on, or why the resource is Failed."""
    if observed.started_spec is None and started_spec_needed(current, observed.jobs) \
            and observed.config_map_present is not None:
        # The pods' spec is gone (ConfigMap deleted or mangled) and the resource's spec is not
        # the one the run started with: rebuilding from it would let an edit slip through.
        return _Refused(f"the spec ConfigMap {config_map_name(body['metadata']['name'])} is missing or "
                        "unreadable and the resource's spec was edited since the run started: undo the edit "
                        "(the ConfigMap is then rebuilt) or create a new resource", "SpecLost")
    try:
        spec, edit = effective_spec(body, current, observed.started_spec)
        refused = manifests.cluster_errors(spec, caps)
        if refused:
            raise SpecError(refused)
        return spec, build_plan(spec), edit
    except SpecError as exc:   # anything else is a bug of ours, not the user's: it propagates
        return _Refused("; ".join(exc.errors), "InvalidSpec")


def _views(p: _Pass) -> dict[str, _StageView]:
    """Each stage's state, derived from the Jobs observed under its deterministic names."""
    old_stages: Mapping[str, dict] = p.old.get("stages") or {}
    views: dict[str, _StageView] = {}
    for stage in p.plan.stages:
        names = manifests.train_job_names(p.ctx, stage) if stage.is_train else _eval_jobs(p.ctx, stage)
        view = _StageView(stage, names, _aggregate([job_state(p.observed.jobs.get(n)) for n in names]))
        if stage.is_train:
            view.snapshot = job_state(p.observed.jobs.get(snapshot_name(p.ctx.name, stage.name)))
        old_stage = old_stages.get(stage.name) or {}
        _derive(view, p.observed, p.ctx.name, old_stage.get("message"), old_stage.get("reason"))
        views[stage.name] = view
    return views


def _eval_jobs(ctx: Context, stage: Stage) -> list[str]:
    """The evaluation's Jobs: its shard Job(s) and, above one shard, the merge Job last (whose
    result is the evaluation's)."""
    sharded = ctx.spec.evaluation.shards > 1
    return manifests.eval_job_names(ctx, stage) + ([merge_job_name(ctx.name, stage.name)] if sharded else [])


def _more_eval_jobs(ctx: Context, view: _StageView, observed: Observed) -> list[dict]:
    """A sharded evaluation under way: the next per-shard Jobs, at most evaluation.maxParallel
    running at once (an Indexed Job limits itself), then the merge once every shard is done."""
    shards, merge = view.jobs[:-1], view.jobs[-1]
    states = [job_state(observed.jobs.get(n)) for n in shards]
    if all(s == SUCCEEDED for s in states):
        return [manifests.merge_job(ctx, view.stage)] if merge not in observed.jobs else []
    running = sum(s in (ACTIVE, SUSPENDED) for s in states)
    absent = [j for j in manifests.eval_jobs(ctx, view.stage) if j["metadata"]["name"] not in observed.jobs]
    return absent[:max(0, ctx.spec.evaluation.max_parallel - running)]


def _shards(ctx: Context, view: _StageView, observed: Observed) -> dict | None:
    """Shard Jobs done of all (an Indexed Job counts its completed indexes), and the merge's state."""
    total = ctx.spec.evaluation.shards
    if view.stage.is_train or total == 1:
        return None
    shards = [observed.jobs.get(n) for n in view.jobs[:-1]]
    done = (((shards[0] or {}).get("status") or {}).get("succeeded") or 0) if len(shards) == 1 else \
        sum(job_state(j) == SUCCEEDED for j in shards)
    return {"done": min(int(done), total), "total": total, "merge": job_state(observed.jobs.get(view.jobs[-1]))}


def _shard_reports(ctx: Context, view: _StageView, observed: Observed, old: Mapping) -> dict | None:
    """The finished shards' messages (stepshot_operator.shard_progress), read once and kept."""
    if view.stage.is_train or ctx.spec.evaluation.shards == 1:
        return None
    terms = [t for name in view.jobs[:-1] for t in observed.terminations.get(name, ())]
    return shard_progress.reports(terms, ctx.spec.evaluation.shards, old.get("shardReports") or {}) or None


def _completed_shards(ctx: Context, view: _StageView, observed: Observed) -> set[int]:
    """Shard indexes done: an Indexed Job's completedIndexes (all once it completed), else the
    per-shard Jobs that succeeded."""
    total, shards = ctx.spec.evaluation.shards, view.jobs[:-1]
    if len(shards) == 1:
        job = observed.jobs.get(shards[0])
        if job_state(job) == SUCCEEDED:
            return set(range(total))
        return shard_progress.completed_indexes(((job or {}).get("status") or {}).get("completedIndexes"), total)
    return {i for i, name in enumerate(shards) if job_state(observed.jobs.get(name)) == SUCCEEDED}


def _archs(ctx: Context, view: _StageView, observed: Observed, stage: Mapping, result: Mapping | None) -> dict | None:
    """Architectures evaluated of the pool (and scored): the evaluation's result once it is in,
    else the completed shards' slices (shard_progress.archs); None while neither is known."""
    evaluated = (result or {}).get("evaluated")
    if isinstance(evaluated, int):
        scored = (result or {}).get("scored")
        return _compact({"evaluated": evaluated, "total": evaluated, "progress": f"{evaluated}/{evaluated}",
                         "scored": scored if isinstance(scored, int) else None})
    if not stage.get("shardReports"):
        return None
    return shard_progress.archs(ctx.spec.evaluation.shards, _completed_shards(ctx, view, observed),
                                stage["shardReports"])


def _with_shared_objects(p: _Pass, create: list[dict]) -> list[dict]:
    """The spec ConfigMap (rebuilt if deleted: pods still to start read it) and the trainer
    ServiceAccount go first whenever a Job is created."""
    if not (any(o["kind"] == "Job" for o in create) or p.observed.config_map_present is False):
        return create
    account = manifests.trainer_service_account(p.ctx)
    return [*([account] if account else []), manifests.spec_config_map(p.ctx), *create]


def _suspend_resume(caps: ClusterCaps, observed: Observed, suspended: bool) -> tuple[list[str], list[str], list[str]]:
    """Jobs to suspend, Jobs to resume (only those the operator suspended), and Jobs held
    suspended by someone else (a queue manager waiting to admit them: theirs to resume)."""
    suspend, resume = [], []
    if caps.job_suspend:
        for name, job in sorted(observed.jobs.items()):
            state = job_state(job)
            if suspended and state == ACTIVE:
                suspend.append(name)
            elif not suspended and state == SUSPENDED and suspended_by_operator(job):
                resume.append(name)
    held = sorted(n for n, j in observed.jobs.items() if job_state(j) == SUSPENDED and not suspended_by_operator(j))
    return suspend, resume, held


def _phase(failed: list[_StageView], evaluation: _StageView, suspended: bool, started: bool) -> str:
    if failed:
        return FAILED
    if evaluation.state == SUCCEEDED:
        return SUCCEEDED
    if suspended:
        return SUSPENDED
    return RUNNING if started else PENDING


def _suspension(suspended: bool, waiting: bool, held: list[str]) -> tuple[str, str] | None:
    if suspended:
        return "SuspendRequested", "spec.suspend is true: no new Jobs, running Jobs suspended"
    if waiting:
        more = f" (and {len(held) - 1} more)" if len(held) > 1 else ""
        return ("SuspendedExternally", f"Job {held[0]}{more} is suspended by another controller (a queue "
                "manager such as Kueue resumes it on admission); the operator leaves it suspended")
    return None


def _stopped_siblings(views: Mapping[str, "_StageView"], observed: Observed) -> tuple[str, ...]:
    """Per-node Jobs (clusters without Indexed Jobs) still running beside a failed one: without
    their peer they can only hang in the rendezvous or collectives, holding GPUs."""
    out: list[str] = []
    for view in views.values():
        if view.state == FAILED and len(view.jobs) > 1:
            out += [n for n in view.jobs if job_state(observed.jobs.get(n)) in (ACTIVE, SUSPENDED)]
    return tuple(out)


def _derive(view: _StageView, observed: Observed, resource: str, old_message: str | None,
            old_reason: str | None = None) -> None:
    """The stage's state from its Jobs. A failure message is recomputed only while its pods'
    terminations are observed (they are read once, then kept in status as `old_message` and
    `old_reason`)."""
    stage = view.stage
    if view.train == FAILED:
        job = next(observed.jobs[n] for n in view.jobs if job_state(observed.jobs.get(n)) == FAILED)
        view.state, view.reason = FAILED, _failure_reason(stage)
        view.failure = _failure_message(_what(stage), job, observed, old_message)
        refused = _refused_input(observed, view.jobs)
        if refused or (refused is None and old_reason == INVALID_INPUT):
            view.reason = INVALID_INPUT
            view.failure = _input_message(_what(stage), observed, view.jobs) or view.failure
    elif view.train == ABSENT and stage.is_train and view.snapshot == SUCCEEDED:
        view.state = SUCCEEDED   # its Job was deleted after the snapshot froze it: done, not rerun
    elif view.train == ABSENT:
        view.state = PENDING
    elif view.train != SUCCEEDED:
        view.state = RUNNING
    elif not stage.is_train:
        view.state = SUCCEEDED
    elif view.snapshot == SUCCEEDED:
        view.state = SUCCEEDED
    elif view.snapshot == FAILED:
        name = snapshot_name(resource, stage.name)
        view.state, view.reason = FAILED, "SnapshotFailed"
        view.failure = _failure_message(f"snapshot of {_what(stage)}", observed.jobs[name], observed,
                                        old_message)
    else:
        view.state = SNAPSHOTTING


INVALID_INPUT = "InvalidInput"


def _refused_input(observed: Observed, jobs: Sequence[str]) -> bool | None:
    """Whether a container of the Jobs' pods exited with the bad-input code (the trainer's
    preflight or any StepshotError); None: no termination observed (not read this pass)."""
    terms = [t for job in jobs for t in observed.terminations.get(job, ())]
    if not terms:
        return None
    return any(t.get("exitCode") == StepshotError.exit_code for t in terms)


def _input_message(what: str, observed: Observed, jobs: Sequence[str]) -> str | None:
    """The refused input, from the termination message the trainer wrote (every server
    version has it; Jobs without podFailurePolicy (< 1.26) retried it until backoffLimit)."""
    hits = [t for job in jobs for t in observed.terminations.get(job, ())
            if t.get("exitCode") == StepshotError.exit_code and (t.get("message") or "").strip()]
    if not hits:
        return None
    line = max(hits, key=lambda t: t.get("finishedAt") or "")["message"].strip().splitlines()[-1]
    return f"{what} refused its input: {line.removeprefix('stepshot: error: ')[:900]}"


def _failure_message(what: str, job: Mapping, observed: Observed, old_message: str | None) -> str:
    tail = _log_tail(observed, job["metadata"]["name"])
    if not tail and old_message:
        return old_message   # the pods' terminations are not re-read once recorded
    reason, message = _failure(job)
    text = f"{what} failed: {reason}" + (f": {message}" if message else "")
    return text + (f"; last output: {tail}" if tail else "")


def _next_objects(ctx: Context, views: dict[str, _StageView], observed: Observed,
                  failed: bool) -> tuple[list[dict], set[str]]:
    """Objects to create now, and the stages they start.

    After a failure nothing new is started, but finished stages still get their snapshot:
    the work of the other partitions is kept.
    """
    create: list[dict] = []
    starting: set[str] = set()
    plan = ctx.plan
    for view in views.values():
        if view.stage.is_train and view.train == SUCCEEDED:
            if view.snapshot == ABSENT:
                create.append(manifests.snapshot_job(ctx, view.stage))
            elif view.snapshot == SUCCEEDED and manifests.wants_volume_snapshot(ctx):
                vs = manifests.volume_snapshot(ctx, view.stage)
                if vs["metadata"]["name"] not in observed.volume_snapshots:
                    create.append(vs)
    if failed:
        return create, starting

    # Repair a partially created multi-Job stage (operator died between its creates).
    for view in views.values():
        if view.stage.is_train and view.state == RUNNING and any(n not in observed.jobs for n in view.jobs):
            create += [o for o in manifests.train_objects(ctx, view.stage)
                       if o["kind"] != "Job" or o["metadata"]["name"] not in observed.jobs]

    for view in views.values():
        if not view.stage.is_train and view.state == RUNNING and len(view.jobs) > 1:
            create += _more_eval_jobs(ctx, view, observed)

    running_fewshot = sum(1 for v in views.values()
                          if v.stage.is_train and v.stage.step > 0 and v.state == RUNNING)
    budget = ctx.spec.few_shot.max_parallel - running_fewshot
    for stage in plan.stages:
        view = views[stage.name]
        if view.state != PENDING:
            continue
        if stage.is_train:
            if stage.parent is not None and views[stage.parent].state != SUCCEEDED:
                continue
            if stage.step > 0:
                if budget <= 0:
                    continue
                budget -= 1
            create += manifests.train_objects(ctx, stage)
        else:
            if any(views[leaf].state != SUCCEEDED for leaf in plan.leaves):
                continue
            create += manifests.eval_jobs(ctx, stage)[:ctx.spec.evaluation.max_parallel]
        starting.add(stage.name)
    return create, starting


# --------------------------------------------------------------------------- status

def _stage_status(ctx: Context, view: _StageView, observed: Observed, old: Mapping,
                  rejected: list[str] | None = None) -> dict:
    stage = view.stage
    jobs = [observed.jobs[n] for n in view.jobs if n in observed.jobs]
    starts = [(j.get("status") or {}).get("startTime") for j in jobs]
    ends = [(j.get("status") or {}).get("completionTime") or _condition_time(j, "Failed") for j in jobs]
    entry = _compact({
        "state": view.state, "kind": stage.task, "step": stage.step, "partition": stage.partition,
        "parent": stage.parent, "jobs": view.jobs,
        "startTime": min((s for s in starts if s), default=None),
        "completionTime": max(ends) if jobs and all(ends) else None,
        "message": view.failure, "reason": view.reason if view.state == FAILED else None,
        "shards": _shards(ctx, view, observed),
        "shardReports": _shard_reports(ctx, view, observed, old),
    })
    if stage.is_train:
        snap_name = snapshot_name(ctx.name, stage.name)
        snap_job = observed.jobs.get(snap_name)
        snapshot = _compact({
            "job": snap_name, "state": view.snapshot,
            "completionTime": (snap_job.get("status") or {}).get("completionTime") if snap_job else None,
        })
        if manifests.wants_volume_snapshot(ctx) and snap_name in observed.volume_snapshots:
            ready = (observed.volume_snapshots[snap_name].get("status") or {}).get("readyToUse", False)
            snapshot["volumeSnapshot"] = {"name": snap_name, "readyToUse": bool(ready)}
        entry["snapshot"] = snapshot
        manifest = _result(observed, snap_name, parse_snapshot, rejected) if view.snapshot == SUCCEEDED else None
        checkpoint = manifest or old.get("checkpoint")
        if checkpoint:
            entry["checkpoint"] = checkpoint
    return entry


def _current(plan: Plan, views: Mapping[str, _StageView]) -> tuple[int, str]:
    for index, step in enumerate(plan.steps):
        open_ = [v for v in (views[s.name] for s in step) if v.state != SUCCEEDED]
        if not open_:
            continue
        active = [v for v in open_ if v.state in (RUNNING, SNAPSHOTTING, FAILED)] or open_
        label = active[0].stage.name + ("/snapshot" if active[0].state == SNAPSHOTTING else "")
        return index, label + (f"+{len(active) - 1}" if len(active) > 1 else "")
    return len(plan.steps) - 1, "done"


def _condition(ctype: str, true: bool, reason: str, message: str, old: Mapping[str, dict],
               generation: int | None, now: datetime) -> dict:
    status = "True" if true else "False"
    prev = old.get(ctype) or {}
    since = prev.get("lastTransitionTime") if prev.get("status") == status else None
    # An empty message is left out: the 1.20 API server reads "" in a merge patch as null,
    # which the status schema (type: string) refuses, and the whole status write fails.
    return _compact({"type": ctype, "status": status, "reason": reason, "message": message or None,
                     "lastTransitionTime": since or _iso(now), "observedGeneration": generation})


def _conditions(phase: str, reasons: dict[str, tuple[str, str]], old_status: Mapping,
                generation: int | None, now: datetime) -> list[dict]:
    """One condition per phase type; only the true one carries that phase's reason and message,
    the others say what is true instead (reason: the current phase)."""
    old = {c.get("type"): c for c in old_status.get("conditions") or []}
    out = []
    for ctype in CONDITION_TYPES:
        reason, message = reasons.get(ctype, (phase, "")) if phase == ctype else (phase, f"the run is {phase.lower()}")
        out.append(_condition(ctype, phase == ctype, reason, message, old, generation, now))
    return out


def _status(p: _Pass, stages: dict, phase: str, failed: list[_StageView], result: dict | None,
            suspension: tuple[str, str] | None) -> dict:
    plan, views, old = p.plan, p.views, p.old
    done = sum(1 for v in views.values() if v.state == SUCCEEDED)
    index, current = _current(plan, views)
    reasons: dict[str, tuple[str, str]] = {"Running": ("StageRunning", f"running {current}")}
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        reasons["Failed"] = (first.reason or "StageFailed", (first.failure or "") + more)
    tau = (result or {}).get("kendallTau")
    reasons["Succeeded"] = ("EvaluationComplete",
                            f"kendall tau {tau:.4f}" if isinstance(tau, (int, float)) else
                            "evaluation finished" if result else _unavailable(p))
    if suspension:
        reasons["Suspended"] = suspension

    oneshot = stages[plan.stages[0].name]
    evaluation = stages[plan.stages[-1].name]
    if phase == SUCCEEDED:
        completion = evaluation.get("completionTime")
    elif phase == FAILED:
        completion = stages[failed[0].stage.name].get("completionTime") or old.get("completionTime")
    else:
        completion = None
    status = _compact({
        "observedGeneration": p.generation,
        "phase": phase,
        "currentStage": "done" if phase == SUCCEEDED else current,
        "stepIndex": index,
        "stepsTotal": len(plan.steps),
        "progress": f"{done}/{len(views)}",
        "stagesDone": done,
        "stagesTotal": len(views),
        "startTime": oneshot.get("startTime"),
        "completionTime": completion,
        "stages": stages,
        "result": result,
        "childJobs": _child_counts(p.observed),
    })
    status["conditions"] = _conditions(phase, reasons, old, p.generation, p.now)
    return status


def _unavailable(p: _Pass) -> str:
    """Why the evaluation has no metrics: said once when its message is read, then kept (the
    pods' messages are not re-read once the stage is recorded)."""
    why = p.rejected.get(p.plan.stages[-1].name) or []
    if why:
        return f"{METRICS_UNAVAILABLE}: {why[0]}"
    old = next((c.get("message") or "" for c in p.old.get("conditions") or [] if c.get("type") == SUCCEEDED), "")
    return old if old.startswith(METRICS_UNAVAILABLE) else METRICS_UNAVAILABLE


def _child_counts(observed: Observed) -> dict[str, int]:
    counts = {"active": 0, "suspended": 0, "succeeded": 0, "failed": 0}
    for job in observed.jobs.values():
        state = job_state(job)
        key = {SUCCEEDED: "succeeded", FAILED: "failed", SUSPENDED: "suspended"}.get(state, "active")
        counts[key] += 1
    return counts


def _invalid(old: Mapping, generation: int | None, message: str, now: datetime,
             reason: str = "InvalidSpec") -> Result:
    status = {"observedGeneration": generation, "phase": FAILED, "currentStage": "invalid",
              "completionTime": old.get("completionTime") or _iso(now)}
    reasons = {"Failed": (reason, message)}
    status["conditions"] = _conditions(FAILED, reasons, old, generation, now)
    transitions = ()
    if old.get("phase") != FAILED:
        what = "invalid spec" if reason == "InvalidSpec" else "spec lost"
        transitions = (Transition("resource", "resource", old.get("phase") or PENDING, FAILED, f"{what}: {message}"),)
    return Result(status=status, transitions=transitions)


# --------------------------------------------------------------------------- transitions, TTL

def _transitions(plan: Plan, views: Mapping[str, _StageView], stages: Mapping[str, dict],
                 old_stages: Mapping[str, dict], old_phase: str | None, phase: str,
                 status: Mapping) -> tuple[Transition, ...]:
    out = []
    for stage in plan.stages:
        new = views[stage.name].state
        before = (old_stages.get(stage.name) or {}).get("state", PENDING)
        if new == before:
            continue
        entry = stages[stage.name]
        seconds = None
        if new == SUCCEEDED and entry.get("startTime") and entry.get("completionTime"):
            seconds = (_ts(entry["completionTime"]) - _ts(entry["startTime"])).total_seconds()
        message = views[stage.name].failure or f"stage {stage.name}: {before} -> {new}"
        if new == SUCCEEDED and entry.get("checkpoint"):
            message += f" (checkpoint epoch {entry['checkpoint'].get('epoch')})"
        out.append(Transition(stage.name, _stage_category(stage), before, new, message, seconds))
    if phase != (old_phase or PENDING):
        message = next(c["message"] for c in status["conditions"] if c["type"] == phase) \
            if phase in CONDITION_TYPES else f"phase {phase}"
        out.append(Transition("resource", "resource", old_phase or PENDING, phase, message or f"phase {phase}"))
    return tuple(out)


def _ttl_expired(spec: Spec, status: Mapping, now: datetime) -> bool:
    ttl = spec.get("ttl_seconds_after_finished")
    finished = _ts(status.get("completionTime"))
    if ttl is None or status.get("phase") not in (SUCCEEDED, FAILED) or finished is None:
        return False
    return now >= finished + timedelta(seconds=ttl)


def _unread_shards(stages: Mapping, jobs: Mapping[str, dict]) -> bool:
    """Whether more shard pods succeeded than the status holds messages of (an evaluation not
    yet recorded as Succeeded): each message is read once (shard_progress)."""
    succeeded: dict[str, int] = {}
    for job in jobs.values():
        labels = (job.get("metadata") or {}).get("labels") or {}
        if labels.get(manifests.LABEL_COMPONENT) == "evaluate":
            stage = labels.get(manifests.LABEL_STAGE, "")
            succeeded[stage] = succeeded.get(stage, 0) + int(((job.get("status") or {}).get("succeeded") or 0))
    return any(count > len((stages.get(stage) or {}).get("shardReports") or {})
               and (stages.get(stage) or {}).get("state") != SUCCEEDED for stage, count in succeeded.items())


def merge_patch(old: Mapping, new: Mapping) -> dict:
    """A JSON merge patch turning `old` into `new`: keys that disappeared are set to null."""
    patch: dict = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch


def terminations_needed(body: Mapping, jobs: Mapping[str, dict]) -> bool:
    """Whether a finished Job's pod message is wanted and not yet recorded in status."""
    status = body.get("status") or {}
    stages = status.get("stages") or {}
    # A sharded evaluation's result is the merge Job's message; its shards write none.
    sharded = (((body.get("spec") or {}).get("evaluation") or {}).get("shards") or 1) > 1
    result_component = "merge" if sharded else "evaluate"
    if sharded and _unread_shards(stages, jobs):
        return True
    for name, job in jobs.items():
        state = job_state(job)
        component = ((job.get("metadata") or {}).get("labels") or {}).get(manifests.LABEL_COMPONENT)
        stage = ((job.get("metadata") or {}).get("labels") or {}).get(manifests.LABEL_STAGE, "")
        if state == FAILED and not (stages.get(stage) or {}).get("message"):
            return True
        recorded = (stages.get(stage) or {}).get("state") == SUCCEEDED   # read once; malformed stays absent
        if state == SUCCEEDED and component == "snapshot" and "checkpoint" not in (stages.get(stage) or {}) \
                and not recorded:
            return True
        if state == SUCCEEDED and component == result_component and not status.get("result") and not recorded:
            return True
    return False
