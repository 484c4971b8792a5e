"""Tests on a real single-node Kubernetes with the project's images (tests/node/localnode.py).

Marked `node`; run them alone with `make test-node` (or `pytest -m node`). If the node cannot
be started, they FAIL, unless STEPSHOT_SKIP_NODE=1 turns that into an explicit skip.
"""
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared helper modules

from localnode import TIMINGS, Node  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/node/" in str(item.fspath):
            item.add_marker(pytest.mark.node)


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    try:
        node = Node.up()
    except Exception as exc:  # noqa: BLE001 - reported as a failure (or an explicit skip)
        if os.environ.get("STEPSHOT_SKIP_NODE") == "1":
            pytest.skip(f"local node unavailable: {exc} (STEPSHOT_SKIP_NODE=1)")
        pytest.fail(f"local node unavailable: {exc}\nSet STEPSHOT_SKIP_NODE=1 to skip these tests explicitly.",
                    pytrace=False)
    try:
        node.load_images()
        yield node
    finally:   # a failure here fails the session: `down` must leave no pod process behind
        node.down()


@pytest.fixture(scope="session")
def operator(node, tmp_path_factory) -> Node:
    """The chart installed: the operator runs as a pod from its image, cluster-wide RBAC."""
    node.install_chart(tmp_path_factory.mktemp("chart"))
    return node


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_sep("-", "local node figures")
        for line in TIMINGS:
            terminalreporter.write_line(line)
