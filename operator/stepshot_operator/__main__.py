"""`stepshot-operator` / `python -m stepshot_operator`: run the SupernetTraining operator.

Equivalent to `kopf run -m stepshot_operator.handlers` with the operator's own flags.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf

from stepshot.errors import StepshotError
from stepshot_operator import handlers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepshot-operator", description=__doc__.splitlines()[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="namespace to serve (repeatable; glob patterns as in kopf)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve the whole cluster (default)")
    p.add_argument("--standalone", action="store_true",
                   help="no peering: run as the only instance (one replica, strategy Recreate)")
    p.add_argument("--peering", default=None, help="kopf peering object name (when not standalone)")
    p.add_argument("--liveness", default=None, metavar="URL",
                   help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    p.add_argument("--metrics-port", type=int, default=handlers.DEFAULT_METRICS_PORT,
                   help="Prometheus port (0 disables)")
    p.add_argument("--metrics-address", default="0.0.0.0",
                   help="address the Prometheus endpoint binds (127.0.0.1: only the pod itself)")
    p.add_argument("--resync", type=float, default=handlers.DEFAULT_RESYNC_SECONDS,
                   help="seconds between full resyncs of every resource (missed events, TTL)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:   # the chart's settings (environment): invalid ones stop the operator here, each named
        handlers.admin_settings(os.environ)
    except StepshotError as exc:
        print(f"stepshot-operator: error: {exc}", file=sys.stderr)
        return StepshotError.exit_code
    kopf.configure(verbose=args.verbose, debug=args.debug)
    if not (args.verbose or args.debug):
        # The kubelet's liveness probe would be an INFO line every period (aiohttp's access
        # log), burying the operator's own lines.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(metrics_port=args.metrics_port, metrics_address=args.metrics_address, resync=args.resync,
                       # Exact namespace names need no scanning; skipping it saves kopf's
                       # ~1 min of retries where the role may not list namespaces.
                       scan=any(ch in ns for ns in args.namespace for ch in "*?[!")),
        registry=kopf.get_default_registry(),  # holds the handlers registered on import
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
