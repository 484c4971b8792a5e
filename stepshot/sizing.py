"""How much of a pod the image pipeline takes: decode workers, shared memory, host cache.

One definition for the trainer (how many DataLoader workers it starts, how much of the
evaluation set it keeps decoded) and for the manifests (the CPU split, the /dev/shm size).
Only `imagefolder` data is decoded; Fashion-MNIST lives in memory and needs no workers.
"""
from __future__ import annotations

from stepshot.quantity import cores_per_process, parse_quantity
from stepshot.spec import Spec

# Batches each DataLoader worker keeps ready (DataLoader's prefetch_factor).
PREFETCH = 2
# /dev/shm beyond the workers' batches: NCCL's intra-node buffers and torch's own segments.
SHM_SLACK_BYTES = 1 << 30
# Decoded evaluation images may fill half of a process's memory; the other half is the
# model, the workers and torch.
CACHE_DIVISOR = 2
# One evaluating process without its share of the cache: torch, the data, the super-nets
# (one on Fashion-MNIST, grouped G=3: 0.66 GiB peak RSS measured).
EVAL_PROCESS_BYTES = 1 << 30


def decodes(spec: Spec) -> bool:
    return spec.dataset.kind == "imagefolder"


def training_workers(spec: Spec) -> int:
    """Decode workers per training process: spec.training.workers, else every core of the
    process's share but the one its training loop runs on."""
    if not decodes(spec):
        return 0
    explicit = spec.training.get("workers")
    return explicit if explicit is not None else max(0, cores_per_process(spec.resources.cpu,
                                                                       spec.resources.procs_per_node) - 1)


def evaluation_workers(spec: Spec) -> int:
    """Decode workers of the evaluation pod: all its cores but the evaluating process's."""
    return max(0, cores_per_process(spec.evaluation.resources.cpu, 1) - 1) if decodes(spec) else 0


def evaluation_processes(spec: Spec, gpus: int) -> int:
    """Evaluating processes of the evaluation pod. With a GPU one (its decode workers feed it);
    on CPUs one per whole core, splitting the architectures (the same numbers as one process,
    faster than threads: stepshot.local.evaluation_split), as many as the memory left beside
    the host cache holds; the manifests share the cores among them."""
    if gpus:
        return 1
    res = spec.evaluation.resources
    beside_cache = parse_quantity(res.memory) - evaluation_cache_bytes(spec)
    return int(max(1, min(cores_per_process(res.cpu, 1), beside_cache // EVAL_PROCESS_BYTES)))


def image_bytes(spec: Spec) -> int:
    """One decoded uint8 image at the space's resolution."""
    space = spec.search_space
    return space.in_channels * space.resolution ** 2


def shm_bytes(procs: int, workers: int, batch_images: int, image: int) -> int:
    """/dev/shm the loaders of one pod hold at most: every worker's prefetched batches."""
    return procs * workers * PREFETCH * batch_images * image + SHM_SLACK_BYTES


def training_shm_bytes(spec: Spec) -> int:
    return shm_bytes(spec.resources.procs_per_node, training_workers(spec), spec.training.batch_size,
                     image_bytes(spec))


def evaluation_shm_bytes(spec: Spec) -> int:
    ev = spec.evaluation
    batch = max(ev.batch_size, ev.calibration_batch_size)
    return shm_bytes(1, evaluation_workers(spec), batch, image_bytes(spec))


def evaluation_cache_bytes(spec: Spec) -> int:
    """Decoded evaluation images the evaluation pod may keep on the host (calibration + test)."""
    return int(parse_quantity(spec.evaluation.resources.memory) // CACHE_DIVISOR)


def selection_cache_bytes(spec: Spec) -> int:
    """The same for checkpoint selection (rank 0), inside one training process's share of the
    pod, half of which the training batches and their workers keep."""
    res = spec.resources
    return int(parse_quantity(res.memory) // (res.procs_per_node * CACHE_DIVISOR * 2))


def mebibytes(n: int) -> str:
    """A quantity string, rounded up to whole MiB."""
    return f"{-(-n // (1 << 20))}Mi"
