"""Test-node infrastructure checked against the shared real API server (tests/apiserver.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared fixture modules

from apiserver import apiserver  # noqa: E402,F401  (registers the session fixture)
