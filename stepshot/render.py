"""`stepshot render FILE.yaml`: the objects the operator would create, as multi-document YAML.

A dry run without a cluster, from the same builders the operator creates its objects with
(stepshot.manifests). Owner references are left out; the operator adds them.
"""
from __future__ import annotations

import argparse
import re


from stepshot.errors import StepshotError
from stepshot.manifests import Caps, Context, all_objects
from stepshot.plan import build_plan
from stepshot.spec import kube_yaml, load, load_file


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="SupernetTraining YAML")
    parser.add_argument("--name", help="override metadata.name")
    parser.add_argument("--namespace", help="override metadata.namespace")
    parser.add_argument("--kube-version", default="1.30", metavar="MAJOR.MINOR",
                        help="API server version to render for (< 1.22: no Indexed Jobs, no Job suspend)")
    parser.add_argument("--volume-snapshots", action="store_true",
                        help="assume the cluster serves snapshot.storage.k8s.io/v1")
    parser.set_defaults(func=run)


def _kube_version(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(\.\d+)?", text)
    if not match:
        raise StepshotError(f"--kube-version {text!r}: expected MAJOR.MINOR, e.g. 1.30")
    return int(match.group(1)), int(match.group(2))


def run(args: argparse.Namespace) -> int:
    spec = load_file(args.file)
    if args.name or args.namespace:
        raw = dict(spec.raw, metadata=dict(spec.raw.get("metadata") or {}))
        raw["metadata"].update({k: v for k, v in (("name", args.name), ("namespace", args.namespace)) if v})
        spec = load(raw, spec.base_dir)
    major, minor = _kube_version(args.kube_version)
    ctx = Context(spec, build_plan(spec), Caps(version=(major, minor), volume_snapshots=args.volume_snapshots))
    print(kube_yaml(*all_objects(ctx)), end="")
    return 0
