"""Trainer tests share 2 CPU cores with everything else: one intra-op thread."""
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
