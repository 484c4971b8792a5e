"""`stepshot render FILE.yaml`: the objects the operator would create, as multi-document YAML.

A dry run without a cluster, from the same builders the operator creates its objects with
(stepshot.manifests). Owner references are left out; the operator adds them.
"""
from __future__ import annotations

import argparse

import yaml

from stepshot.manifests import Caps, Context, all_objects
from stepshot.plan import build_plan
from stepshot.spec import load, load_file


class _NoAliases(yaml.SafeDumper):
    """Builders share small dicts (e.g. a capabilities block); print them in full, not as &anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="SupernetTraining YAML")
    parser.add_argument("--name", help="override metadata.name")
    parser.add_argument("--namespace", help="override metadata.namespace")
    parser.add_argument("--kube-version", default="1.30", metavar="MAJOR.MINOR",
                        help="API server version to render for (< 1.22: no Indexed Jobs, no Job suspend)")
    parser.add_argument("--volume-snapshots", action="store_true",
                        help="assume the cluster serves snapshot.storage.k8s.io/v1")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = load_file(args.file)
    if args.name or args.namespace:
        raw = dict(spec.raw, metadata=dict(spec.raw.get("metadata") or {}))
        raw["metadata"].update({k: v for k, v in (("name", args.name), ("namespace", args.namespace)) if v})
        spec = load(raw, spec.base_dir)
    major, minor = (int(x) for x in args.kube_version.split(".")[:2])
    ctx = Context(spec, build_plan(spec), Caps(version=(major, minor), volume_snapshots=args.volume_snapshots))
    print(yaml.dump_all(all_objects(ctx), Dumper=_NoAliases, sort_keys=False), end="")
    return 0
