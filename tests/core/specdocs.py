"""The smallest valid SupernetTraining document the spec tests start from, and copies of it with
fields set by path (`training__batchSize=64` sets spec.training.batchSize)."""
from __future__ import annotations

import copy

BASE = {"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining", "metadata": {"name": "t"},
        "spec": {"space": "resnet48-fmnist", "dataset": {"kind": "fashion-mnist"}}}


def spec_doc(base: dict | None = None, **patch) -> dict:
    """A copy of BASE with `base`'s spec sections on top, then each `a__b__c=value` set."""
    out = copy.deepcopy(BASE)
    out["spec"].update(base or {})
    for dotted, value in patch.items():
        node = out["spec"]
        *head, last = dotted.split("__")
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return out
