"""scripts/cluster-dns.py, the local node's CoreDNS stand-in, fed by a real API server: the
records a multi-node stage's pods resolve, NXDOMAIN for everything else, and changes followed
through the watch. (tests/node/test_multinode.py resolves through it from pods on the node.)"""
from __future__ import annotations

import subprocess
import sys

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from apiserver import ROOT, free_port, wait_for

pytestmark = pytest.mark.apiserver
SCRIPT = ROOT / "scripts" / "cluster-dns.py"
NS = "dns-check"


def ask(port: int, name: str, qtype: str = "A") -> DNSRecord:
    return DNSRecord.parse(DNSRecord.question(name, qtype).send("127.0.0.1", port, timeout=2))


def a_records(port: int, name: str) -> list[str]:
    return sorted(str(rr.rdata) for rr in ask(port, name).rr if rr.rtype == QTYPE.A)


@pytest.fixture
def dns(apiserver):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "serve", "--kubeconfig", str(apiserver.kubeconfig),
                             "--listen", "127.0.0.1", "--port", str(port)],
                            env=apiserver.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Serving starts at once; answers start after the first list of both kinds.
        wait_for(lambda: proc.poll() is not None or _answers(port, "kubernetes.default.svc.cluster.local"), 30,
                 "cluster-dns to answer", 0.2)
        assert proc.poll() is None, proc.communicate()[0]
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int, name: str) -> bool:
    try:
        return bool(a_records(port, name))
    except OSError:
        return False


def test_services_headless_pod_records_nxdomain_and_the_watch(apiserver, dns):
    from kubernetes import client
    core = client.CoreV1Api(apiserver.client())
    apiserver.create_namespace(NS)
    kubernetes_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert a_records(dns, "kubernetes.default.svc.cluster.local") == [kubernetes_ip]
    assert a_records(dns, "KUBERNETES.default.svc.cluster.local.") == [kubernetes_ip]   # DNS names ignore case

    web = core.create_namespaced_service(NS, {"metadata": {"name": "web"},
                                              "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}})
    # A multi-node stage's Service as the operator renders it, and the Endpoints the Endpoints
    # controller derives from its two pods (hostname tiny-oneshot-<rank>, subdomain tiny-oneshot).
    core.create_namespaced_service(NS, {"metadata": {"name": "tiny-oneshot"},
                                        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                                                 "selector": {"app": "tiny"}, "ports": [{"port": 29500}]}})
    addresses = [{"ip": "10.244.7.20", "hostname": "tiny-oneshot-0"}, {"ip": "10.244.7.21", "hostname": "tiny-oneshot-1"}]
    core.create_namespaced_endpoints(NS, {"metadata": {"name": "tiny-oneshot"},
                                          "subsets": [{"addresses": addresses, "ports": [{"port": 29500}]}]})

    name = f"tiny-oneshot.{NS}.svc.cluster.local"
    wait_for(lambda: a_records(dns, name) == ["10.244.7.20", "10.244.7.21"], 20, "the headless Service's records", 0.1)
    assert a_records(dns, f"web.{NS}.svc.cluster.local") == [web.spec.cluster_ip]
    assert a_records(dns, f"tiny-oneshot-0.{name}") == ["10.244.7.20"]
    assert a_records(dns, f"tiny-oneshot-1.{name}") == ["10.244.7.21"]

    # Unknown names: NXDOMAIN, with the zone's SOA for negative caching; an existing name asked
    # for AAAA (getaddrinfo asks both) and an empty non-terminal: NOERROR without answers.
    for unknown in (f"tiny-oneshot-2.{name}", f"nope.{NS}.svc.cluster.local", "example.com", "tiny-oneshot-0.tiny-oneshot"):
        reply = ask(dns, unknown)
        assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr and reply.auth[0].rtype == QTYPE.SOA, unknown
    for empty, qtype in ((f"tiny-oneshot-0.{name}", "AAAA"), (f"{NS}.svc.cluster.local", "A")):
        reply = ask(dns, empty, qtype)
        assert reply.header.rcode == RCODE.NOERROR and not reply.rr, empty

    # The watch: a replacement pod's new address, then the Service's Endpoints gone.
    addresses[1]["ip"] = "10.244.7.22"
    core.replace_namespaced_endpoints("tiny-oneshot", NS, {"metadata": {"name": "tiny-oneshot"},
                                                           "subsets": [{"addresses": addresses, "ports": [{"port": 29500}]}]})
    wait_for(lambda: a_records(dns, f"tiny-oneshot-1.{name}") == ["10.244.7.22"], 20, "the new address", 0.1)
    core.delete_namespaced_endpoints("tiny-oneshot", NS)
    wait_for(lambda: ask(dns, f"tiny-oneshot-0.{name}").header.rcode == RCODE.NXDOMAIN, 20, "the record to go", 0.1)
    assert a_records(dns, f"web.{NS}.svc.cluster.local") == [web.spec.cluster_ip]
