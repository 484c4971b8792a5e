"""What every builder shares: the (spec, plan, cluster) context, the labels and annotations that
tie a child to its SupernetTraining, and the paths inside the pods."""
from __future__ import annotations

from dataclasses import dataclass

from stepshot.manifests.cluster import ClusterCaps
from stepshot.names import label_value
from stepshot.plan import Plan, Stage
from stepshot.spec import POD_SPEC_DIR, Spec

LABEL_TRAINING = "stepshot.dev/training"
LABEL_STAGE = "stepshot.dev/stage"
LABEL_PARTITION = "stepshot.dev/partition"
LABEL_STEP = "stepshot.dev/step"
LABEL_COMPONENT = "stepshot.dev/component"    # train | snapshot | evaluate | merge
LABEL_JOB = "stepshot.dev/job"                # on pods: the Job they belong to (termination lookups)
ANNOTATION_SPEC_HASH = "stepshot.dev/spec-hash"
# On a Job the operator suspended itself (spec.suspend): the only Jobs it ever resumes. A Job
# suspended by anyone else (a queue manager such as Kueue) stays theirs to resume.
ANNOTATION_SUSPENDED_BY = "stepshot.dev/suspended-by"
SUSPENDED_BY_OPERATOR = "stepshot-operator"

# Beside the image's /opt/stepshot/benchmarks, so a spec's relative paths such as
# ../benchmarks/groundtruth/... resolve in pods exactly as they do in a checkout.
SPEC_DIR = POD_SPEC_DIR
SPEC_FILE = f"{SPEC_DIR}/spec.yaml"
UID = 1000


@dataclass(frozen=True)
class Context:
    spec: Spec
    plan: Plan
    caps: ClusterCaps = ClusterCaps()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def namespace(self) -> str:
        return self.spec.namespace


def selector(resource: str) -> str:
    """Label selector of every child of a SupernetTraining."""
    return f"{LABEL_TRAINING}={label_value(resource)}"


def labels(ctx: Context, stage: Stage | None = None, component: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": "stepshot", "app.kubernetes.io/managed-by": "stepshot-operator",
           LABEL_TRAINING: label_value(ctx.name)}
    if stage is not None:
        out.update({LABEL_STAGE: label_value(stage.name), LABEL_PARTITION: label_value(stage.partition),
                    LABEL_STEP: str(stage.step)})
    if component:
        out[LABEL_COMPONENT] = component
    return out


def meta(ctx: Context, name: str, lbl: dict[str, str]) -> dict:
    """metadata of a child: its labels and the spec hash it was built from."""
    return {"name": name, "namespace": ctx.namespace, "labels": dict(lbl),
            "annotations": {ANNOTATION_SPEC_HASH: ctx.spec.spec_hash}}
