"""The spec schema of the `SupernetTraining` resource: the single definition every consumer
(the CRD, the API server, the local validator, the defaults) is derived from."""
from __future__ import annotations

from stepshot.predictors import BASELINES
from stepshot.quantity import QUANTITY
from stepshot.space import SPACES
from stepshot.split_modes import MODES
from stepshot.spec.limits import (MAX_ARCHS, MAX_BATCH, MAX_BATCHES, MAX_EPOCHS, MAX_IMAGES, MAX_LR, MAX_SECONDS,
                                  MAX_SEED, describe as _bounds)
# Short local names keep the table below one field per line.
from stepshot.spec.fields import boolean as _bool, integer as _int, number as _num, obj as _obj, string as _str
from stepshot.spec.fields import DNS_SUBDOMAIN as _DNS_SUBDOMAIN, pod_settings as _pod_settings

GROUP = "stepshot.dev"
VERSION = "v1alpha1"
KIND = "SupernetTraining"
PLURAL = "supernettrainings"
SINGULAR = "supernettraining"
SHORT_NAMES = ["sst"]
API_VERSION = f"{GROUP}/{VERSION}"
SPACE_NAMES = sorted(SPACES)
# The deepest registered space bounds `fewShot.steps[].stage`; the rules check the spec's own.
MAX_STAGES_OF_SPACES = max(space.num_stages for space in SPACES.values())

ROLES = ("training", "snapshot", "evaluation")

SPEC_SCHEMA: dict = _obj(
    description="A step-by-step one-shot -> few-shot super-net training.",
    required=["space", "dataset"],
    properties={
        "image": _str("ghcr.io/stepshot/stepshot-trainer:0.1.0", "Trainer image (torch + stepshot).", max_length=1024),
        "imagePullPolicy": _str("IfNotPresent", enum=["Always", "IfNotPresent", "Never"]),
        "space": _str(description="Search space.", enum=SPACE_NAMES),
        "dataset": _obj(
            required=["kind"],
            description="Training/evaluation data.",
            properties={
                "kind": _str("fashion-mnist", enum=["fashion-mnist", "imagefolder"]),
                "path": _str("/usr/share/datasets/fashion-mnist",
                             "Directory of the IDX files, or of train/ and val/ ImageFolder trees."),
                "volume": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                           "description": "A core/v1 volume source mounted at `path` in cluster pods."},
                "trainLimit": _int(0, 0, MAX_IMAGES, description="Use only the first N training images (0 = all)."),
                "evalLimit": _int(0, 0, MAX_IMAGES, description="Evaluate on the first N test images (0 = all)."),
            },
        ),
        "storage": _obj(
            description="Where checkpoints and snapshots live.",
            properties={
                "claimName": _str(description="PVC holding the work directory (cluster only).", pattern=_DNS_SUBDOMAIN,
                                   max_length=253),
                "path": _str("/workdir", "Mount path of the work directory in pods."),
                "snapshot": _str("auto", enum=["auto", "copy", "volumeSnapshot"],
                                 description="auto: VolumeSnapshot when the cluster serves "
                                             "snapshot.storage.k8s.io/v1, else a file copy."),
                "volumeSnapshotClassName": _str(description="VolumeSnapshotClass for snapshots.", pattern=_DNS_SUBDOMAIN,
                                                 max_length=253),
            },
        ),
        "resources": _obj(
            description="Per training stage.",
            properties={
                "nodes": _int(1, 1, 64, "Nodes (pods) per training stage (torchrun --nnodes)."),
                "procsPerNode": _int(1, 1, 16, "Processes per node (torchrun --nproc-per-node)."),
                "gpusPerNode": _int(0, 0, 16, "nvidia.com/gpu per pod; 0 trains on CPU (gloo)."),
                "cpu": _str("2", f"CPU cores (a quantity). {_bounds('cpu')}", pattern=QUANTITY),
                "memory": _str("8Gi", f"Memory (a quantity). {_bounds('memory')}", pattern=QUANTITY),
            },
        ),
        "training": _obj(
            description="Settings shared by every training stage (spec §3.1 defaults).",
            properties={
                "batchSize": _int(128, 1, MAX_BATCH, "Images per process per step."),
                "seed": _int(0, 0, MAX_SEED),
                "seedScope": _str("stage", enum=["stage", "step"],
                                  description="What the data order, subnet draws and dropout derive from besides "
                                              "`seed`: the stage name, or the step number, so that two runs whose "
                                              "stages differ only in their split (grouped vs continued) draw the "
                                              "same batches and subnets (a branch-paired comparison)."),
                "randomSubnets": _int(2, 0, 16, "Random subnets per sandwich step (plus max and min)."),
                "labelSmoothing": _num(0.1, 0.0, 1.0),
                "dropout": _num(0.2, 0.0, 1.0, "Dropout before the FC, max net only."),
                "gradClip": _num(1.0, 0.0, 1e6, description="clip_grad_value bound; 0 disables."),
                "momentum": _num(0.9, 0.0, 1.0),
                "nesterov": _bool(True),
                "weightDecay": _num(1e-5, 0.0, 1.0),
                "workers": _int(None, 0, 64, "imagefolder: decode worker processes per training process; "
                                             "default: its share of resources.cpu minus one (the "
                                             "training loop's core)."),
                "checkpointEvery": _int(1, 1, MAX_EPOCHS, description="Checkpoint every N epochs."),
                "keepCheckpoints": _int(3, 1, 1000, description="Checkpoints kept per stage (the selected one is always kept)."),
                "ratioCodes": {"type": "array", "items": _int(None, 1, 7), "minItems": 1, "maxItems": 7,
                               "default": [1, 2, 3, 4, 5, 6, 7],
                               "description": "Ratio codes sampled for widths (the paper samples all 7)."},
                "zeroInitLastBN": _bool(True, "Zero-initialise the last BN gamma of every block."),
            },
        ),
        "oneShot": _obj(
            description="The one-shot stage (BigNAS sandwich + in-place distillation).",
            properties={
                "epochs": _int(100, 1, MAX_EPOCHS),
                "lr": _num(0.1, 0.0, MAX_LR, exclusive_minimum=True),
                "warmupEpochs": _num(5.0, 0.0, MAX_EPOCHS),
            },
        ),
        "fewShot": _obj(
            description="Step-by-step few-shot stages.",
            properties={
                "mode": _str("grouped", enum=list(MODES),
                             description="grouped / partitioned: the paper's splits; continued: the unsplit "
                                         "super-net trained on for one step per entry of `groups` at that "
                                         "step's lr, the equal-budget control of grouped; none: one-shot only."),
                "epochs": _int(20, 1, MAX_EPOCHS, description="Epochs per few-shot stage."),
                "lr": _num(0.001, 0.0, MAX_LR, exclusive_minimum=True, description="Base lr of few-shot stages."),
                "lrByGroups": {"type": "object", "additionalProperties": _num(None, 0.0, MAX_LR),
                               "default": {"3": 0.002},
                               "description": "grouped: base lr override per G (spec §3.4)."},
                "groups": {"type": "array", "items": _int(None, 2, 7), "minItems": 1, "maxItems": 6,
                           "default": [2, 3, 4, 5, 6, 7],
                           "description": "grouped: G of each step, strictly increasing."},
                "lrScaling": _bool(True, "grouped: scale per-group lr by merged widths (spec §3.4)."),
                "steps": {"type": "array", "default": [], "maxItems": 8,
                          "description": "partitioned: each step cuts every partition into `parts`.",
                          "items": {"type": "object", "required": ["dimension", "stage", "parts"],
                                    "properties": {
                                        "dimension": _str(enum=["width", "depth"]),
                                        "stage": _int(None, 1, MAX_STAGES_OF_SPACES, f"Network stage 1..{MAX_STAGES_OF_SPACES}."),
                                        "parts": _int(None, 2, 8),
                                    }}},
                "maxParallel": _int(4, 1, 256, "partitioned: partition Jobs running at once."),
            },
        ),
        "selection": _obj(
            description="Optional checkpoint selection by Kendall tau on reference archs (spec §3.1).",
            properties={
                "archs": _str(description="JSON file of reference architectures."),
                "groundTruth": _str(description="JSON file with their stand-alone accuracies."),
                "evalImages": _int(2500, 1, MAX_IMAGES),
                "calibrationBatches": _int(8, 1, MAX_BATCHES),
            },
        ),
        "evaluation": _obj(
            description="Final correlation evaluation.",
            properties={
                "archs": _str(description="JSON file of architectures to rank; default: the ground truth's."),
                "groundTruth": _str(description="JSON file of stand-alone accuracies (challenge format)."),
                "sample": _int(100, 1, MAX_ARCHS, description="Random archs to rank when neither file is given."),
                "calibrationBatches": _int(16, 1, MAX_BATCHES),
                "calibrationBatchSize": _int(256, 1, MAX_BATCH),
                "evalImages": _int(10000, 1, MAX_IMAGES),
                "batchSize": _int(1000, 1, MAX_BATCH),
                "everyStage": _bool(False, "Also evaluate after every training stage (benchmarks)."),
                "shards": _int(1, 1, 1024, "Evaluation pods, each a contiguous slice of the architectures "
                                           "(an Indexed Job, or a Job per shard on servers without them); "
                                           "above 1 a small merge Job writes the predictions."),
                "maxParallel": _int(4, 1, 256, "Shards running at once."),
                "checkpointEvery": _int(32, 1, MAX_ARCHS, description="A shard saves its predictions every this many "
                                                           "architectures: a killed pod resumes there."),
                "baselines": {"type": "array", "items": _str(enum=list(BASELINES)), "maxItems": len(BASELINES),
                              "default": list(BASELINES),
                              "description": "Free baselines scored beside the super-net on the architectures "
                                             "with ground truth: MACs, params and zero-cost proxies at "
                                             "initialisation (one minibatch each; stepshot.predictors)."},
                "prior": _obj(
                    description="Prior-guided ranking: also rank every architecture by (1 - weight) x the "
                                "super-net's rank + weight x the prior's rank, reported beside the pure "
                                "super-net's (`<predictions>-prior.json`).",
                    properties={
                        "proxy": _str("none", enum=["none", *BASELINES], description="The prior; none: off."),
                        "weight": _num(0.5, 0.0, 1.0, "The prior's share of the rank."),
                    }),
                "resources": _obj(
                    description="The evaluation pod: its own size, not a training node's. Without a GPU "
                                "it evaluates in one process per whole core, as its memory allows (1 GiB each "
                                "beside the image cache).",
                    properties={
                        "cpu": _str("2", f"CPU cores (a quantity). {_bounds('cpu')}", pattern=QUANTITY),
                        "memory": _str("8Gi", f"Memory (a quantity). {_bounds('memory')}", pattern=QUANTITY),
                        "gpus": _int(None, 0, 1, "nvidia.com/gpu; default 1 when training uses GPUs."),
                    }),
            },
        ),
        "scheduling": _obj(
            description="Where and how stage pods are scheduled, and what they get from the node: shared "
                        "settings, overridden per role (a role's field replaces the shared one; labels, "
                        "annotations and extraResources are merged per key, env per name), all over the "
                        "operator's defaults (chart value trainer.podDefaults).",
            properties={**_pod_settings("stage"),
                        **{role: _obj(_pod_settings(role), f"Overrides for {role} pods.") for role in ROLES}},
        ),
        "suspend": _bool(False, "Suspend the training: running stage Jobs are suspended."),
        "ttlSecondsAfterFinished": _int(None, 0, MAX_SECONDS, description="Delete the resource this long after it finished."),
        "backoffLimit": _int(2, 0, 100, "Retries of each stage Job (failed pods; preemptions do not count "
                                        "where the cluster serves podFailurePolicy)."),
        "maxRestarts": _int(3, 0, 100, "Multi-node stages: worker-group restarts inside the pods "
                                       "(torchrun --max-restarts) before a pod fails."),
        "metricsPort": _int(9400, 0, 65535, "Trainer Prometheus port, served by every training pod (0 disables)."),
    },
)
