"""Kubernetes YAML in and out: output Go readers parse as meant, and a bounded loader for
untrusted input (specs, ConfigMaps written by anyone with edit rights)."""
from __future__ import annotations

from typing import Any

import yaml

# Untrusted YAML is bounded before it becomes Python objects: a 600-byte alias bomb would
# otherwise expand to billions of nodes in the first json.dumps of the spec.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000


class KubeDumper(yaml.SafeDumper):
    """YAML for Go readers (kubectl, Helm: YAML 1.1), which take a bare y, n, Y or N as a
    boolean: `n:` in the CRD would become the key "false" and the status field `n` be pruned."""

    def ignore_aliases(self, data: object) -> bool:   # builders share small dicts: print them in full
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if value in ("y", "Y", "n", "N") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


KubeDumper.add_representer(str, _represent_str)


def kube_yaml(*docs: Any) -> str:
    return yaml.dump_all(docs, Dumper=KubeDumper, sort_keys=False)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH while composing."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int | None]) -> int:
    """Nodes after alias expansion (shared nodes counted each time, cycles refused)."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise yaml.YAMLError("a recursive alias")
        return memo[key]
    memo[key] = None
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def safe_yaml_documents(text: str) -> list[Any]:
    """The documents of an untrusted YAML text, within size, depth and expansion limits
    (yaml.YAMLError otherwise)."""
    if len(text.encode(errors="replace")) > MAX_FILE_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_FILE_BYTES} bytes")
    loader = _BoundedLoader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if _expanded_size(node, {}) > MAX_NODES:
                raise yaml.YAMLError(f"more than {MAX_NODES} values once aliases are expanded")
            docs.append(loader.construct_document(node))
    finally:
        loader.dispose()
    return docs
