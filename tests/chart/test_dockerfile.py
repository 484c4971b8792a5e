"""The Dockerfile's targets and entrypoints exist, and the chart passes the operator flags it has.

No Docker engine runs here, so this checks what a build would rely on: the targets the
README/CI name, the console scripts the ENTRYPOINTs name (in pyproject, resolving to real
functions), the modules the operator's Job builders run in the trainer image, the non-root
user, and that the operator Deployment's arguments are flags `stepshot-operator` accepts.
"""
from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "charts" / "stepshot"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _stages() -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """Global ARG defaults and, per stage name, its instructions (FROM first)."""
    args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for ins, rest in _instructions(DOCKERFILE.read_text()):
        if ins == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m and m.group(2), f"every stage is named: FROM {rest}"
            current = m.group(2)
            stages[current] = [(ins, m.group(1))]
        elif current is None:
            assert ins == "ARG", f"only ARG may precede the first FROM, got {ins}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[current].append((ins, rest))
    return args, stages


def _one(stage: list[tuple[str, str]], ins: str) -> str:
    found = [rest for i, rest in stage if i == ins]
    assert found, f"no {ins}"
    return found[-1]


def _pyproject() -> dict:
    if tomllib is None:
        pytest.skip("tomllib needs Python >= 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _resolve(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def test_targets():
    args, stages = _stages()
    assert {"base", "operator", "trainer"} <= set(stages)
    assert _one(stages["operator"], "FROM") == "base"
    # both bases are build arguments (CI passes a local Debian base) with public defaults
    assert _one(stages["trainer"], "FROM") == "${TRAINER_BASE}"
    for arg in ("PYTHON_IMAGE", "TRAINER_BASE"):
        assert args[arg].startswith("python:3.1") and "slim" in args[arg]


def test_trainer_image_installs_the_torch_the_tests_run():
    """One torch version: the image's default is requirements/cpu.txt's pin (PyPI serves the
    CUDA build of it by default; CI installs the CPU wheel of the same version)."""
    _, stages = _stages()
    default = next(r.partition("=")[2] for i, r in stages["trainer"] if i == "ARG" and r.startswith("TORCH_VERSION="))
    pin = next(line for line in (ROOT / "requirements" / "cpu.txt").read_text().splitlines()
               if line.startswith("torch=="))
    assert pin == f"torch=={default}"


@pytest.mark.parametrize("target,script", [("operator", "stepshot-operator"), ("trainer", "stepshot")])
def test_entrypoints_are_console_scripts(target, script):
    _, stages = _stages()
    assert json.loads(_one(stages[target], "ENTRYPOINT")) == [script]
    scripts = _pyproject()["project"].get("scripts", {})
    assert script in scripts, (f"pyproject.toml [project.scripts] lacks {script!r}; the {target} "
                               f"image's ENTRYPOINT runs it")
    assert callable(_resolve(scripts[script]))


@pytest.mark.parametrize("target", ["operator", "trainer"])
def test_non_root(target):
    _, stages = _stages()
    user = _one(stages[target], "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot needs a number)"
    # the operator's Job builders run trainer pods as this uid as well
    from stepshot import manifests
    assert int(uid) == manifests.UID


def test_operator_image_has_no_torch_and_the_trainer_pins_its_torch():
    _, stages = _stages()
    copies = {i: r for i, r in enumerate(stages["operator"]) if r[0] == "COPY"}
    assert any("/requirements/operator.txt" in r for _, r in copies.values())
    op_runs = " ".join(r for i, r in stages["operator"] if i == "RUN")
    assert "torch" not in op_runs.replace('! python -c "import torch"', "")
    assert any("/requirements/trainer.txt" in r for i, r in stages["trainer"] if i == "COPY")
    tr_runs = " ".join(r for i, r in stages["trainer"] if i == "RUN")
    assert "--constraint" in tr_runs, "the trainer's requirements must not replace the torch it installed"
    # the requirements come from pyproject.toml alone, so source edits keep their layers cached
    assert [r for i, r in stages["requirements"] if i == "COPY"] == ["pyproject.toml /tmp/pyproject.toml"]
    req_runs = " ".join(r for i, r in stages["requirements"] if i == "RUN")
    assert "'operator', 'trainer'" in req_runs and "optional-dependencies" in req_runs
    assert "torchrun --help" in tr_runs and "stepshot --help" in tr_runs
    extras = _pyproject()["project"]["optional-dependencies"]
    assert not any(d.startswith("torch") for d in extras["operator"])
    assert not any(d.startswith("torch") for d in _pyproject()["project"]["dependencies"])


def test_copied_sources_exist_and_are_not_dockerignored():
    _, stages = _stages()
    ignore = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
              if p.strip() and not p.startswith("#")]
    for ins, rest in stages["wheel"]:
        if ins != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = shlex.split(rest)
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"COPY {src}: missing"
            rel = src.rstrip("/")
            assert not any(fnmatch.fnmatch(rel, pat) for pat in ignore), f"{src} is .dockerignored"
    # what pip needs for the wheel: packages as pyproject maps them, and the readme
    project = _pyproject()
    copied = {shlex.split(r)[0].rstrip("/") for i, r in stages["wheel"] if i == "COPY"}
    copied |= {s.rstrip("/") for i, r in stages["wheel"] if i == "COPY" for s in shlex.split(r)[:-1]}
    for pkg_dir in project["tool"]["setuptools"]["package-dir"].values():
        assert pkg_dir.split("/")[0] in copied, f"{pkg_dir} is not copied into the build"
    assert project["project"]["readme"] in copied


def test_modules_the_trainer_jobs_run_exist():
    """The operator's Job builders run `python -m stepshot_trainer.launch -m stepshot.cli train ...`
    and `python -m stepshot.cli snapshot|evaluate` in the trainer image (stepshot/commands.py)."""
    from stepshot import commands

    assert {commands.CLI, commands.LAUNCHER} == {"stepshot.cli", "stepshot_trainer.launch"}
    for module in (commands.CLI, commands.LAUNCHER):
        assert importlib.util.find_spec(module) is not None, module


# ---------------------------------------------------------------------------------------
# chart <-> operator CLI
def _operator_help() -> str:
    out = subprocess.run([sys.executable, "-m", "stepshot_operator", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _chart_flags() -> set[str]:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    return set(re.findall(r"^\s*-\s*(--[a-z][a-z0-9-]*)", text, re.M))


def test_chart_args_are_operator_flags():
    help_text = _operator_help()
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
    flags = _chart_flags()
    assert {"--standalone", "--namespace", "--all-namespaces", "--liveness", "--metrics-port"} <= flags
    assert flags <= known, f"flags the chart passes but the operator lacks: {flags - known}"


def test_chart_ports_match_operator_defaults():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    from stepshot_operator.handlers import DEFAULT_METRICS_PORT

    assert values["operator"]["metricsPort"] == DEFAULT_METRICS_PORT
    assert values["metrics"]["service"]["port"] == values["operator"]["metricsPort"]
    assert values["operator"]["healthPort"] == 8081
    # the trainer pods' metrics port is named as the PodMonitor expects
    text = (ROOT / "stepshot" / "manifests" / "pods.py").read_text()
    assert f'"name": "{values["trainer"]["metricsPortName"]}"' in text
    assert values["image"]["repository"].endswith("stepshot-operator")


def test_trainer_image_has_the_infiniband_libraries_nccl_loads():
    """NCCL's IB transport dlopens libibverbs.so.1 and the adapter's provider: the trainer
    installs Debian's packages of them (names checked against bookworm's archive) before torch,
    and the build fails if the library does not load."""
    _, stages = _stages()
    trainer = stages["trainer"]
    arg = next(r for i, r in trainer if i == "ARG" and r.startswith("RDMA_PACKAGES="))
    packages = arg.partition("=")[2].strip('"').split()
    assert {"libibverbs1", "ibverbs-providers"} <= set(packages)
    runs = [r for i, r in trainer if i == "RUN"]
    rdma = next(n for n, r in enumerate(runs) if "${RDMA_PACKAGES}" in r)
    torch = next(n for n, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    assert rdma < torch, "a code change must not reinstall them"
    assert "apt-get install" in runs[rdma] and "CDLL('libibverbs.so.1')" in runs[rdma]
    assert 'if [ -n "${RDMA_PACKAGES}" ]' in runs[rdma], "RDMA_PACKAGES= leaves them out"
