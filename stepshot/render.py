"""`stepshot render FILE.yaml`: the objects the operator would create, as multi-document YAML.

A dry run without a cluster, from the same builders the operator creates its objects with
(stepshot.manifests), after the same checks (`cluster_errors`: what the operator refuses is
refused here, exit 2). The server is assumed (--kube-version, --volume-snapshots), and so are
the administrator's allow-lists (chart values, options here). Owner references are left
out; the operator adds them.
"""
from __future__ import annotations

import argparse
import re


from stepshot.errors import StepshotError
from stepshot.kyaml import kube_yaml
from stepshot.manifests import Context, all_objects, cluster_errors
from stepshot.plan import build_plan
from stepshot.spec import load, load_file
from stepshot.validate import add_cluster_options, admin_caps


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="SupernetTraining YAML")
    parser.add_argument("--name", help="override metadata.name")
    parser.add_argument("--namespace", help="override metadata.namespace")
    parser.add_argument("--kube-version", default="1.30", metavar="MAJOR.MINOR",
                        help="API server version to render for (< 1.22: no Indexed Jobs, no Job suspend)")
    parser.add_argument("--volume-snapshots", action="store_true",
                        help="assume the cluster serves snapshot.storage.k8s.io/v1")
    add_cluster_options(parser)
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
    caps = admin_caps(args, version=_kube_version(args.kube_version), volume_snapshots=args.volume_snapshots)
    refused = cluster_errors(spec, caps)
    if refused:    # what the operator would do with it: nothing but a Failed status
        raise StepshotError("the operator refuses this resource (InvalidSpec):\n  " + "\n  ".join(refused))
    ctx = Context(spec, build_plan(spec), caps)
    print(kube_yaml(*all_objects(ctx)), end="")
    return 0
