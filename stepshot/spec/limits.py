"""The bounds of every resource quantity a spec asks of a node: one table, read by the rules
(which refuse a quantity outside them, naming the field) and by the schema's descriptions.

A quantity such as `cpu: 1e9` or `memory: 1000Pi` parses, and the API server takes the Job,
but no node could ever hold its pod: it would wait Pending for ever. The upper bounds are
well above the largest single machines sold today (hundreds of cores, tens of TiB) and far
below what any node reports; the lower ones catch a forgotten unit (`memory: 8` is 8 bytes,
which no container runtime starts). Counts (nodes, GPUs, epochs, images, ...) are integers
bounded by the schema itself (`maximum`, tests/core/test_limits.py checks every one has one).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from stepshot.quantity import QUANTITY, parse_quantity
from stepshot.spec.openapi import invalid

_MI, _TI = 1024 ** 2, 1024 ** 4

# The schema's upper bounds of counts (its `maximum`s): far beyond any real run, and where
# Kubernetes or the libraries stop (int32 seconds and indexes, numpy's 32-bit seeds).
MAX_IMAGES = 2 ** 31 - 1      # images of a data set (torch indexes them with int64; int32 is plenty)
MAX_SECONDS = 2 ** 31 - 1     # Kubernetes' int32 durations (ttlSecondsAfterFinished)
MAX_SEED = 2 ** 32 - 1        # numpy's seed range
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536            # images in one batch of one process
MAX_BATCHES = 100_000         # calibration batches
MAX_ARCHS = 10_000_000        # architectures one evaluation ranks
MAX_LR = 100.0                # a learning rate beyond this diverges on the first step


@dataclass(frozen=True)
class Bound:
    low: Decimal      # inclusive
    high: Decimal     # inclusive
    low_text: str     # as a user would write them
    high_text: str
    unit: str
    whole: bool = False   # extended resources (devices) are counted in whole units

    def why(self, value: Decimal) -> str | None:
        """Why `value` (base units) is out of bounds, None if within."""
        if self.whole and value != value.to_integral_value():
            return f"must be a whole number of {self.unit}"
        if value < self.low:
            return f"should be at least {self.low_text}"
        if value > self.high:
            return f"should be at most {self.high_text}: no node has that many {self.unit}"
        return None


CPU = Bound(Decimal("0.001"), Decimal(1024), "1m", "1024", "cores")
MEMORY = Bound(Decimal(64 * _MI), Decimal(64 * _TI), "64Mi", "64Ti", "bytes of memory")
STORAGE = Bound(Decimal(1), Decimal(1024 * _TI), "1", "1Pi", "bytes of storage")
DEVICES = Bound(Decimal(0), Decimal(1024), "0", "1024", "devices", whole=True)


def bound_of(resource: str) -> Bound:
    """The bound of a resource name as a pod's `resources` use it: cpu, memory, hugepages-*,
    ephemeral-storage, or an extended resource (a device plugin's, counted in whole units)."""
    if resource == "cpu":
        return CPU
    if resource == "memory":
        return MEMORY
    if resource == "ephemeral-storage" or resource.startswith("hugepages-"):
        return STORAGE
    return DEVICES


def quantity_errors(path: str, resource: str, value: str) -> Iterator[str]:
    """Why the quantity `value` of `resource` at `path` cannot be asked of a node."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return   # the schema's pattern reports it
    why = bound_of(resource).why(amount)
    if why:
        yield invalid(path, value, why)


def quantities(value: Any, schema: dict, path: str, key: str = "") -> Iterator[tuple[str, str, str]]:
    """Every (path, resource name, quantity) of a schema-valid `value`: the string fields whose
    schema pattern is the quantity grammar, named by their key (a map's key for maps of them,
    such as extended resources: `nvidia.com/gpu`)."""
    if schema.get("type") == "string" and schema.get("pattern") == QUANTITY and isinstance(value, str):
        yield path, key, value
    elif isinstance(value, dict):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for name, item in value.items():
            sub = props.get(name, extra if isinstance(extra, dict) else None)
            if isinstance(sub, dict):
                yield from quantities(item, sub, f"{path}.{name}", name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from quantities(item, schema.get("items") or {}, f"{path}[{i}]", key)


def describe(resource: str) -> str:
    """The bounds as the field reference states them."""
    b = bound_of(resource)
    return f"From {b.low_text} to {b.high_text}" + (" (whole devices)." if b.whole else ".")
