"""Trainer tests share 2 CPU cores with everything else: one intra-op thread."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared helper modules (apiserver)

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
