"""`promtool check metrics` on an exposition (tests/ is on sys.path through the conftests)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def promtool_path() -> str:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    tool = shutil.which("promtool", path=path)
    if tool is None:
        pytest.fail("promtool not found: run `make setup` (scripts/install-promtool.sh)")
    return tool


def promtool_lint(exposition: bytes) -> str:
    """promtool's complaints about the exposition ('' when clean)."""
    result = subprocess.run([promtool_path(), "check", "metrics"], input=exposition, capture_output=True)
    return (result.stdout + result.stderr).decode().strip() if result.returncode else ""
