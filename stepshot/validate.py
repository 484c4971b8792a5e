"""`stepshot validate FILE... [--cluster]`: the checks a SupernetTraining file meets before
anything runs, from the same code that runs them elsewhere.

Without --cluster: what `stepshot run` checks (the API server's schema and the cross-field
rules, `stepshot.spec.load_file`, and the plan they make). With --cluster: also what the
operator refuses on a cluster (`stepshot.manifests.cluster_errors`: apiVersion and kind, a
work claim, the data volume types, images, host networking and capabilities its administrator
allows). The allow-lists are chart values (trainer.extraVolumeTypes, trainer.allowedImages,
trainer.allowHostNetwork, trainer.allowedCapabilities): pass yours with the options below.
Exit 0 when every file passes, else 2 with one line per error.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from stepshot.errors import StepshotError
from stepshot.manifests import SAFE_VOLUME_TYPES, ClusterCaps, cluster_errors
from stepshot.manifests.cluster import load_pod_defaults
from stepshot.plan import build_plan
from stepshot.spec import SpecError, load_file


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--extra-volume-types", default="", metavar="TYPE,...",
                        help="data volume types the operator's administrator allows beyond "
                             f"{','.join(sorted(SAFE_VOLUME_TYPES))} (chart value trainer.extraVolumeTypes)")
    parser.add_argument("--allowed-images", default=None, metavar="REGEX",
                        help="the operator's image allow-list (chart value trainer.allowedImages)")
    parser.add_argument("--allow-host-network", action="store_true",
                        help="the operator lets stage pods use hostNetwork (chart value trainer.allowHostNetwork)")
    parser.add_argument("--allowed-capabilities", default="", metavar="CAP,...",
                        help="capabilities stage containers may add (chart value trainer.allowedCapabilities)")
    parser.add_argument("--pod-defaults", type=Path, default=None, metavar="FILE",
                        help="YAML of the operator's stage-pod defaults (chart value trainer.podDefaults)")


def admin_caps(args: argparse.Namespace, **server: object) -> ClusterCaps:
    """The operator's settings as the options give them (the chart's values), on `server`."""
    if args.allowed_images:
        try:
            re.compile(args.allowed_images)
        except re.error as exc:
            raise StepshotError(f"--allowed-images {args.allowed_images!r}: {exc}") from exc
    extra = {t.strip() for t in args.extra_volume_types.split(",") if t.strip()}
    defaults = {}
    if args.pod_defaults is not None:
        try:
            text = args.pod_defaults.read_text()
        except OSError as exc:
            raise StepshotError(f"--pod-defaults {args.pod_defaults}: {exc}") from exc
        defaults = load_pod_defaults(text, f"--pod-defaults {args.pod_defaults}")
    return ClusterCaps(volume_types=SAFE_VOLUME_TYPES | extra, allowed_images=args.allowed_images or None,
                       host_network=args.allow_host_network,
                       capabilities=frozenset(c.strip() for c in args.allowed_capabilities.split(",") if c.strip()),
                       pod_defaults=defaults, **server)


def checked(path: Path, caps: ClusterCaps | None) -> list[str]:
    """Every error of the file, in the operator's order (`caps`: its cluster checks too; None:
    only what `stepshot run` checks): the schema and rules, the cluster, then the plan."""
    try:
        spec = load_file(path)
        errors = cluster_errors(spec, caps) if caps is not None else []
        if not errors:
            build_plan(spec)       # a cut the space cannot make is found by planning it
        return errors
    except SpecError as exc:
        return exc.errors


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="SupernetTraining YAML")
    parser.add_argument("--cluster", action="store_true",
                        help="also the operator's checks (apiVersion/kind, storage.claimName, allowed "
                             "volume types, images, host networking and capabilities)")
    add_cluster_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    caps = admin_caps(args) if args.cluster else None
    failed = False
    for path in args.files:
        errors = checked(path, caps)
        for error in errors:
            line = " ".join(error.split())       # one line each (a YAML error spans several)
            print(line if line.startswith(f"{path}:") else f"{path}: {line}", file=sys.stderr)
        failed = failed or bool(errors)
    return StepshotError.exit_code if failed else 0
