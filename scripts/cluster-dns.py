#!/usr/bin/env python3
"""Cluster DNS for the local test node (scripts/local-cluster.sh): CoreDNS's stand-in there.

Debian carries no CoreDNS, so this small server answers the records the node's pods need from
the API server's Services and Endpoints (list + watch), as CoreDNS's `kubernetes` plugin would:

  <svc>.<ns>.svc.<domain>                    A  the ClusterIP; for a headless Service, its endpoints' IPs
  <hostname>.<svc>.<ns>.svc.<domain>         A  a headless Service's endpoint with that hostname (a pod
                                                with spec.hostname and spec.subdomain = <svc>)

Everything else is NXDOMAIN (an existing name asked for another type: an empty answer). There is
no forwarding: the node's pods need no names outside the cluster. It is part of the test node
only; nothing the operator renders depends on it being this server rather than CoreDNS.

  cluster-dns.py serve --kubeconfig FILE --listen IP [--port 53]
  cluster-dns.py query NAME --server IP [--port 53]     # exit 0 when NAME has an A record
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterable

from dnslib import QTYPE, RCODE, RR, SOA, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

TTL = 5   # CoreDNS's default: a pod replaced under the same hostname is found again within seconds


def records(services: Iterable, endpoints: Iterable, domain: str) -> dict[str, list[str]]:
    """The A records (lower-case FQDN without the final dot -> IPs) of these objects
    (kubernetes client models, V1Service and V1Endpoints)."""
    table: dict[str, set[str]] = {}
    headless: set[tuple[str, str]] = set()
    for svc in services:
        ns, name, ip = svc.metadata.namespace, svc.metadata.name, svc.spec.cluster_ip
        if ip == "None":
            headless.add((ns, name))
        elif ip:
            table.setdefault(f"{name}.{ns}.svc.{domain}", set()).add(ip)
    for ep in endpoints:
        ns, name = ep.metadata.namespace, ep.metadata.name
        if (ns, name) not in headless:
            continue
        # The Endpoints controller lists not-ready pods under addresses when the Service sets
        # publishNotReadyAddresses (a rendezvous must resolve before the pods are Ready).
        for subset in ep.subsets or []:
            for address in subset.addresses or []:
                table.setdefault(f"{name}.{ns}.svc.{domain}", set()).add(address.ip)
                if address.hostname:
                    table.setdefault(f"{address.hostname}.{name}.{ns}.svc.{domain}", set()).add(address.ip)
    return {name.lower(): sorted(ips) for name, ips in table.items()}


class ClusterResolver(BaseResolver):
    """Answers from the current table; `update` swaps it whole (one reference assignment)."""

    def __init__(self, domain: str):
        self.domain = domain.lower().strip(".")
        self.table: dict[str, list[str]] = {}
        self.names: set[str] = set()   # every name and its parents inside the domain (empty non-terminals)

    def update(self, table: dict[str, list[str]]) -> None:
        names = {self.domain}
        for name in table:
            labels = name.split(".")
            names.update(".".join(labels[i:]) for i in range(len(labels)))
        self.table, self.names = table, names

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        reply = request.reply()
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        table, names = self.table, self.names
        if question.qtype in (QTYPE.A, QTYPE.ANY) and name in table:
            for ip in table[name]:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
            return reply
        if name not in names:
            reply.header.rcode = RCODE.NXDOMAIN
        # NXDOMAIN, or an existing name without records of this type: the zone's SOA lets the
        # client cache the negative answer for TTL seconds.
        reply.add_auth(RR(DNSLabel(self.domain), QTYPE.SOA, ttl=TTL,
                          rdata=SOA(f"ns.dns.{self.domain}", f"hostmaster.{self.domain}",
                                    (1, 7200, 1800, 86400, TTL))))
        return reply


def follow(kind: str, list_call: Callable, on_change: Callable[[dict], None]) -> None:
    """List, then watch, the objects of one kind for ever; re-list after any error or expiry."""
    from kubernetes import watch
    while True:
        try:
            listed = list_call()
            objects = {(o.metadata.namespace, o.metadata.name): o for o in listed.items}
            on_change(objects)
            stream = watch.Watch().stream(list_call, resource_version=listed.metadata.resource_version,
                                          timeout_seconds=300)
            for event in stream:
                if event["type"] == "ERROR":   # e.g. 410 Gone: the resource version expired
                    break
                obj = event["object"]
                key = (obj.metadata.namespace, obj.metadata.name)
                if event["type"] == "DELETED":
                    objects.pop(key, None)
                else:
                    objects[key] = obj
                on_change(objects)
        except Exception as exc:  # noqa: BLE001 - the API server restarting must not end the DNS
            print(f"[cluster-dns] {kind}: {type(exc).__name__}: {exc}; listing again in 1 s", file=sys.stderr, flush=True)
            time.sleep(1)


def serve(kubeconfig: str, listen: str, port: int, domain: str) -> None:
    from kubernetes import client, config
    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    resolver = ClusterResolver(domain)
    state: dict[str, dict] = {}
    lock = threading.Lock()

    def changed(kind: str) -> Callable[[dict], None]:
        def on_change(objects: dict) -> None:
            with lock:
                state[kind] = dict(objects)
                if len(state) == 2:   # both kinds listed once: answer nothing before that
                    resolver.update(records(state["services"].values(), state["endpoints"].values(), domain))
        return on_change

    for kind, call in (("services", api.list_service_for_all_namespaces),
                       ("endpoints", api.list_endpoints_for_all_namespaces)):
        threading.Thread(target=follow, args=(kind, call, changed(kind)), daemon=True, name=kind).start()
    logger = DNSLogger("-request,-reply,-truncated", prefix=False,
                       logf=lambda line: print(f"[cluster-dns] {line}", file=sys.stderr, flush=True))
    servers = [DNSServer(resolver, address=listen, port=port, tcp=tcp, logger=logger) for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    print(f"[cluster-dns] serving {domain} on {listen}:{port}", file=sys.stderr, flush=True)
    while all(server.isAlive() for server in servers):
        time.sleep(1)
    sys.exit("[cluster-dns] a server thread ended")


def query(name: str, server: str, port: int, timeout: float) -> list[str]:
    """The A records a DNS server answers for `name` (empty on NXDOMAIN or no answer)."""
    reply = DNSRecord.parse(DNSRecord.question(name, "A").send(server, port, timeout=timeout))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="answer cluster names from the API server")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--listen", required=True, help="address the node's pods reach (the CNI bridge gateway)")
    s.add_argument("--port", type=int, default=53)
    s.add_argument("--domain", default="cluster.local")
    q = sub.add_parser("query", help="print NAME's A records; exit 1 when there are none")
    q.add_argument("name")
    q.add_argument("--server", required=True)
    q.add_argument("--port", type=int, default=53)
    q.add_argument("--timeout", type=float, default=2)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.kubeconfig, args.listen, args.port, args.domain)
    try:
        ips = query(args.name, args.server, args.port, args.timeout)
    except OSError as exc:   # nothing listening yet, or no answer within the timeout
        sys.exit(f"{args.name}: {exc}")
    print("\n".join(ips))
    sys.exit(0 if ips else 1)


if __name__ == "__main__":
    main()
