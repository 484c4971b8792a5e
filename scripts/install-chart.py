#!/usr/bin/env python3
"""Install (or upgrade) the stepshot chart where no helm binary exists, through helm-sdkpy
(the Helm 4 library; `make setup` installs it). Uses $KUBECONFIG. With a helm binary, run
`helm upgrade --install stepshot charts/stepshot -n stepshot-system --create-namespace -f FILE`.

    .venv/bin/python scripts/install-chart.py -f examples/local-cluster/values.yaml
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "stepshot"


def set_value(text: str) -> dict:
    """helm's `--set a.b=v` as a values dict (v read as YAML: true, 3, cluster)."""
    path, sep, raw = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected KEY=VALUE")
    value = yaml.safe_load(raw) if raw else ""
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


async def install(release: str, namespace: str, values: dict) -> None:
    import helm_sdkpy

    cfg = helm_sdkpy.Configuration(namespace=namespace)   # $KUBECONFIG
    await helm_sdkpy.Upgrade(cfg).run(release, str(CHART), values=values, install=True, create_namespace=True,
                                      wait=False, timeout=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--values", type=Path, action="append", default=[], help="values file (repeatable)")
    p.add_argument("--set", type=set_value, action="append", default=[], metavar="KEY=VALUE",
                   help="a value, as helm's --set (after the files; repeatable)")
    p.add_argument("--release", default="stepshot")
    p.add_argument("-n", "--namespace", default="stepshot-system")
    args = p.parse_args(argv)
    values: dict = {}
    for path in args.values:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    for extra in args.set:
        values = merge(values, extra)
    asyncio.run(install(args.release, args.namespace, values))
    print(f"installed release {args.release} in namespace {args.namespace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
