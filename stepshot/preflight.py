"""Every input a run will read, checked before any training: the first stage runs it (in
its pod, as the pod's user, before the rendezvous) and so does `stepshot run` before it
starts anything. A bad input then fails in seconds, exit 2, with one line naming the spec
field and the file, instead of after hours of training (an evaluation file) or after a
Job's retries (the data).

Checked: the data set (spec.dataset: files, readable, shape), the architecture and
accuracy files (spec.selection, spec.evaluation: parse, and every code belongs to the
space) and the work directory (writable). A missing evaluation.groundTruth beside an
evaluation.archs file is not an error: predictions stand alone, the ground truth may come
later (the evaluation warns).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from stepshot.archsets import load_codes
from stepshot.correlate import load_accuracies
from stepshot.datasets import data_errors
from stepshot.errors import StepshotError
from stepshot.space import parse_arch
from stepshot.spec import Spec


class InputError(StepshotError):
    """An input the run would read is missing, unreadable or wrong (exit 2, one line)."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def input_errors(spec: Spec, workdir: Path, workdir_field: str = "spec.storage.path") -> list[str]:
    ds = spec.dataset
    root = spec.resolve(ds.path)
    errors = [f"spec.dataset.path: {e}" for e in data_errors(ds.kind, root)]
    errors += list(_file_errors(spec))
    errors += _workdir_errors(workdir, workdir_field)
    return errors


def check_inputs(spec: Spec, workdir: Path, workdir_field: str = "spec.storage.path") -> None:
    errors = input_errors(spec, workdir, workdir_field)
    if errors:
        raise InputError(errors)


def _file_errors(spec: Spec):
    sel, ev = spec.selection, spec.evaluation
    codes = lambda path: load_codes(path).values()          # noqa: E731
    truth = lambda path: load_accuracies(path).keys()       # noqa: E731
    files: list[tuple[str, str | None, Callable]] = [
        ("spec.selection.archs", sel.get("archs"), codes),
        ("spec.selection.groundTruth", sel.get("ground_truth"), truth),
        ("spec.evaluation.archs", ev.get("archs"), codes),
    ]
    gt = spec.resolve(ev.get("ground_truth"))
    if gt is not None and (gt.exists() or not ev.get("archs")):  # without archs it is their source
        files.append(("spec.evaluation.groundTruth", ev.get("ground_truth"), truth))
    for field, name, read in files:
        if name:
            error = _codes_error(spec, spec.resolve(name), read)
            if error:
                yield f"{field}: {error}"


def _codes_error(spec: Spec, path: Path, read: Callable) -> str | None:
    """Why `path` is no architecture file of the spec's space (the first bad code only)."""
    if not path.exists():
        return f"{path}: not found"
    try:
        found = list(read(path))
    except (OSError, ValueError, StepshotError) as exc:
        return f"{path}: {exc}" if str(path) not in str(exc) else str(exc)
    if not found:
        return f"{path}: no architectures in it"
    for code in found:
        try:
            parse_arch(code, spec.search_space)
        except (ValueError, StepshotError) as exc:
            return f"{path}: {code!r} is no {spec.space} architecture: {exc}"
    return None


def _workdir_errors(workdir: Path, field: str) -> list[str]:
    """The run writes checkpoints there: a probe file written and removed, as this user."""
    probe = workdir / f".stepshot-preflight-{os.getpid()}"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return [f"{field}: {workdir}: not writable: {exc.strerror or exc}"]
    return []
