"""The typed, read-only view of a validated, defaulted spec (`Spec`), and loading one from a
document or a YAML file."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from stepshot.kyaml import safe_yaml_documents
from stepshot.names import camel
from stepshot.space import get_space
from stepshot.spec.document import SpecError, apply_defaults, validate
from stepshot.spec.schema import KIND

_ACRONYMS = {"zero_init_last_bn": "zeroInitLastBN"}


class View:
    """Read-only attribute view of a defaulted spec section: `view.batch_size` reads `batchSize`."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: dict, path: str):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        key = _ACRONYMS.get(name, camel(name))
        if key not in self._data:
            if name in self._data:
                key = name
            else:
                raise AttributeError(f"{self._path}.{key} is not set")
        value = self._data[key]
        if isinstance(value, dict):
            return View(value, f"{self._path}.{key}")
        if isinstance(value, list):
            return tuple(View(v, f"{self._path}.{key}") if isinstance(v, dict) else v for v in value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            return default

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a spec view is read-only")

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"View({self._path}={self._data!r})"


# Controls a user may change while a run is under way; every other field is fixed by the
# first stage Job (the pods read the spec as it was then).
RUNTIME_FIELDS = ("suspend", "ttlSecondsAfterFinished")


def training_fields(spec: dict) -> dict:
    """The spec without its runtime controls: what decides the stages and their weights."""
    return {k: v for k, v in spec.items() if k not in RUNTIME_FIELDS}


def changed_fields(old: Any, new: Any, path: str = "spec") -> list[str]:
    """Dotted paths where two (defaulted) specs differ, runtime controls left out."""
    if path == "spec":
        old, new = training_fields(old), training_fields(new)
    if isinstance(old, dict) and isinstance(new, dict):
        return [p for key in sorted(old.keys() | new.keys())
                for p in changed_fields(old.get(key), new.get(key), f"{path}.{key}")]
    return [] if old == new else [path]


class Spec(View):
    """A validated, defaulted SupernetTraining."""

    __slots__ = ("name", "namespace", "raw", "base_dir", "spec_hash", "search_space")

    def __init__(self, obj: dict, base_dir: Path):
        super().__init__(obj["spec"], "spec")
        meta = obj.get("metadata") or {}
        object.__setattr__(self, "raw", obj)
        object.__setattr__(self, "name", meta.get("name", "supernet"))
        object.__setattr__(self, "namespace", meta.get("namespace", "default"))
        object.__setattr__(self, "base_dir", base_dir)
        # Runtime controls stay out: suspending and resuming is not a different training.
        canonical = json.dumps(training_fields(obj["spec"]), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "spec_hash", hashlib.sha256(canonical.encode()).hexdigest()[:16])
        # Resolved once (the schema's enum admits only known names); readers take this one.
        object.__setattr__(self, "search_space", get_space(obj["spec"]["space"]))

    def resolve(self, path: str | None) -> Path | None:
        """A file named in the spec: relative paths are relative to the YAML file."""
        if not path:
            return None
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)


def load(obj: dict, base_dir: str | Path = ".") -> Spec:
    errors = validate(obj)
    if errors:
        raise SpecError(errors)
    return Spec(apply_defaults(obj), Path(base_dir).resolve())


def load_file(path: str | Path) -> Spec:
    path = Path(path)
    try:
        docs = [d for d in safe_yaml_documents(path.read_text()) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError([f"{path}: {exc}"]) from exc
    docs = [d for d in docs if isinstance(d, dict) and d.get("kind", KIND) == KIND]
    if len(docs) != 1:
        raise SpecError([f"{path}: expected exactly one {KIND} document, found {len(docs)}"])
    return load(docs[0], path.parent)
