"""The layering, in one place: the torch-free core (`stepshot`, every module of it, packages
included) points nowhere up; the trainer and the operator import the core, never each other;
the operator's pure state machine imports no client, no kopf and none of its siblings."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "stepshot"
TRAINER = ROOT / "trainer" / "stepshot_trainer"
OPERATOR = ROOT / "operator" / "stepshot_operator"

# The torch-free core points nowhere up: not into the operator, the trainer, or their libraries.
CORE_FORBIDDEN = {"stepshot_operator", "stepshot_trainer", "torch", "kopf", "kubernetes"}
# The trainer and the operator share only the core.
TRAINER_FORBIDDEN = {"stepshot_operator", "kopf", "kubernetes"}
OPERATOR_FORBIDDEN = {"stepshot_trainer", "torch"}
# operator module -> modules of the package (and third-party roots) it must not import
FORBIDDEN = {
    "reconcile": {"handlers", "k8s", "metrics", "kopf", "kubernetes"},
    "k8s": {"handlers", "reconcile", "metrics", "kopf"},
    "metrics": {"handlers", "reconcile", "k8s", "kopf", "kubernetes"},
}


def _imports(path: Path) -> set[str]:
    """Every dotted part of every module `path` imports (relative imports included)."""
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported |= {f"{node.module}.{a.name}" for a in node.names}
    return {p for name in imported for p in name.split(".")}


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def test_every_package_is_scanned():
    assert (CORE / "spec" / "schema.py") in _modules(CORE)   # subpackages too
    assert _modules(TRAINER) and _modules(OPERATOR)


@pytest.mark.parametrize("path", _modules(CORE), ids=lambda p: str(p.relative_to(CORE)))
def test_core_layering(path):
    assert not _imports(path) & CORE_FORBIDDEN, f"{path.name} imports {_imports(path) & CORE_FORBIDDEN}"


@pytest.mark.parametrize("path", _modules(TRAINER), ids=lambda p: p.name)
def test_trainer_never_imports_the_operator(path):
    assert not _imports(path) & TRAINER_FORBIDDEN, f"{path.name} imports {_imports(path) & TRAINER_FORBIDDEN}"


@pytest.mark.parametrize("path", _modules(OPERATOR), ids=lambda p: p.name)
def test_operator_never_imports_the_trainer(path):
    assert not _imports(path) & OPERATOR_FORBIDDEN, f"{path.name} imports {_imports(path) & OPERATOR_FORBIDDEN}"


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_operator_layering(module):
    parts = _imports(OPERATOR / f"{module}.py")
    assert not parts & FORBIDDEN[module] - {module}, f"{module} imports {parts & FORBIDDEN[module]}"


def test_core_modules_are_torch_free():
    code = ("import sys, stepshot.space, stepshot.partition, stepshot.arch_cli, stepshot.spec, stepshot.plan, "
            "stepshot.manifests, stepshot.render; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("path", _modules(TRAINER), ids=lambda p: p.name)
def test_trainer_never_imports_the_local_runner(path):
    """`stepshot run` starts the trainer's commands; what both need (stepshot.commands, stepshot.cpus)
    lives below both."""
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "stepshot.local" not in names, path.name


def test_the_operator_imports_no_numerics():
    """The operator image installs the core and the `operator` extra only (pyproject.toml): its
    import graph must not reach numpy, scipy, tqdm or torch."""
    pytest.importorskip("kopf")
    code = ("import sys, stepshot_operator.__main__, stepshot_operator.handlers, stepshot.render; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'scipy', 'tqdm', 'torch'}); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
