"""A whole `SupernetTraining` document checked and defaulted: identity, metadata.name, the
schema (`openapi.check`) and the cross-field rules (`rules.semantic_errors`)."""
from __future__ import annotations

import copy
import re
from typing import Any, Iterator

from stepshot.errors import StepshotError
from stepshot.spec.openapi import check, fill_defaults, invalid
from stepshot.spec.rules import semantic_errors
from stepshot.spec.schema import API_VERSION, KIND, SPEC_SCHEMA


class SpecError(StepshotError, ValueError):
    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid SupernetTraining:\n  " + "\n  ".join(self.errors))


def apply_defaults(obj: dict) -> dict:
    """A copy of the document with the schema's defaults filled in."""
    out = copy.deepcopy(obj)
    out.setdefault("spec", {})
    out["spec"] = fill_defaults(out["spec"], SPEC_SCHEMA)
    return out


def validate(obj: dict) -> list[str]:
    """All errors, API-server style, with the field path; [] when valid."""
    if not isinstance(obj, dict):
        return ["<root>: Invalid value: the document must be a mapping"]
    errors: list[str] = []
    if obj.get("apiVersion") not in (None, API_VERSION):
        errors.append(f'apiVersion: Invalid value: "{obj.get("apiVersion")}": must be {API_VERSION}')
    if obj.get("kind") not in (None, KIND):
        errors.append(f'kind: Invalid value: "{obj.get("kind")}": must be {KIND}')
    errors += list(_name_errors(obj.get("metadata")))
    errors += list(check(obj.get("spec"), SPEC_SCHEMA, "spec")) if "spec" in obj else ["spec: Required value"]
    if errors:
        return errors
    spec = apply_defaults(obj)["spec"]
    errors = list(semantic_errors(spec))
    name = (obj.get("metadata") or {}).get("name")
    if not errors and isinstance(name, str) and spec["resources"]["nodes"] > 1 and not name[:1].isalpha():
        # A multi-node stage's headless Service is named after the resource (DNS-1035 label).
        errors.append(invalid("metadata.name", name, "must start with a letter when spec.resources.nodes > 1 "
                                                     "(the stage's headless Service is named after it)"))
    return errors


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _name_errors(meta: Any) -> Iterator[str]:
    """metadata.name must make valid child names: a DNS-1123 label (no dots, so no two
    resources derive the same children), at most 63 characters."""
    if meta is None:
        return
    if not isinstance(meta, dict):
        yield 'metadata: Invalid value: the metadata must be a mapping'
        return
    name = meta.get("name")
    if name is None:
        return
    if not isinstance(name, str) or len(name) > 63 or not re.match(_DNS_LABEL, name):
        yield invalid("metadata.name", name, "must be a DNS-1123 label: at most 63 lower-case alphanumerics "
                                             "or '-', starting and ending with an alphanumeric")
