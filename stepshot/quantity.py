"""Kubernetes resource quantities ("500m", "1.5", "8Gi", "1e3"), parsed exactly.

The schema's pattern (`QUANTITY`), the cross-field rules and the pod sizing
(`stepshot.sizing`, `stepshot.manifests`) read quantities through this one parser.
"""
from __future__ import annotations

import re
from decimal import Decimal

# Kubernetes' quantity grammar (resource.Quantity), unsigned.
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
_SCALE = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Decimal:
    """A quantity string in base units (cores, bytes), exactly; ValueError if malformed."""
    match = re.fullmatch(QUANTITY, text)
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = Decimal(match.group(1)), match.group(3) or ""
    if suffix.endswith("i"):
        return number * 1024 ** ("KMGTPE".index(suffix[0]) + 1)
    if suffix in _SCALE:     # before the exponent: a bare "E" is exa (1E = 10^18), not e-notation
        return number.scaleb(_SCALE[suffix])
    return number.scaleb(int(suffix[1:]))


def cores_per_process(cpu: str, procs: int) -> int:
    """Whole cores of a `cpu` quantity per process, `procs` processes sharing it."""
    return int(parse_quantity(cpu) // max(procs, 1))
