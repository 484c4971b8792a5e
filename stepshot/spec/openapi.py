"""A generic OpenAPI v3 checker and defaulter: the subset of the structural schema the
resource uses, reported with the API server's field paths and wording, so that the local
runner and the API server reject the same YAML in the same words."""
from __future__ import annotations

import copy
import difflib
import json
import math
import re
from typing import Any, Iterator

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
_JSON_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def invalid(path: str, value: Any, why: str) -> str:
    # The API server's wording: `<path>: Invalid value: <value>: <path> in body <why>`.
    return f"{path}: Invalid value: {json.dumps(value)}: {path} in body {why}"


def check(value: Any, schema: dict, path: str) -> Iterator[str]:
    """Every way `value` breaks `schema`, one API-server-style message each."""
    kind = schema.get("type")
    if kind and not _type_ok(value, kind):
        got = _JSON_NAMES.get(type(value), type(value).__name__)
        yield f'{path}: Invalid value: "{got}": {path} in body must be of type {kind}: "{got}"'
        return
    if isinstance(value, float) and not math.isfinite(value):
        # YAML's .inf and .nan load as floats; JSON (and so the API server) has neither.
        yield f'{path}: Invalid value: "{value}": {path} in body must be a finite number'
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        yield f"{path}: Unsupported value: {json.dumps(value)}: supported values: {allowed}"
    if "minimum" in schema:
        lo = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= lo:
            yield invalid(path, value, f"should be greater than {lo}")
        elif value < lo:
            yield invalid(path, value, f"should be greater than or equal to {lo}")
    if "maximum" in schema and value > schema["maximum"]:
        yield invalid(path, value, f"should be less than or equal to {schema['maximum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        yield invalid(path, value, f"should match '{schema['pattern']}'")
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield invalid(path, value, f"should be at least {schema['minLength']} chars long")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield f"{path}: Too long: may not be longer than {schema['maxLength']}"
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            yield invalid(path, value, f"should have at least {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            yield f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
        for i, item in enumerate(value):
            yield from check(item, schema.get("items", {}), f"{path}[{i}]")
    if kind == "object":
        yield from _check_object(value, schema, path)


def _check_object(value: dict, schema: dict, path: str) -> Iterator[str]:
    if len(value) > schema.get("maxProperties", len(value)):
        yield f"{path}: Too many: {len(value)}: must have at most {schema['maxProperties']} items"
    for key in schema.get("required", []):
        if key not in value:
            yield f"{path}.{key}: Required value"
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if not isinstance(key, str):   # YAML's unquoted `3:` is an integer; JSON keys are strings
            yield f"{path}: Invalid value: {key!r}: keys must be strings (quote them: \"{key}\")"
            continue
        if props is not None and key in props:
            yield from check(item, props[key], f"{path}.{key}")
        elif isinstance(extra, dict):
            yield from check(item, extra, f"{path}.{key}")
        elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            # The API server prunes unknown fields silently; locally a typo deserves an error
            # (what `kubectl apply --validate=strict` reports).
            hint = difflib.get_close_matches(key, list(props), n=1)
            yield f'{path}.{key}: Unknown field: "{key}"' + (f' (did you mean "{hint[0]}"?)' if hint else "")


def fill_defaults(value: Any, schema: dict) -> Any:
    """`value` with the schema's defaults filled in, in place (as the API server defaults)."""
    if schema.get("type") == "object" and isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = fill_defaults(value[key], sub)
    elif schema.get("type") == "array" and isinstance(value, list):
        value[:] = [fill_defaults(v, schema.get("items", {})) for v in value]
    return value
