"""A real Prometheus (Debian's server binary, scripts/install-promtool.sh) configured from the chart.

One definition: the chart's PodMonitor and ServiceMonitor (as Helm rendered and installed them)
are turned into scrape jobs by the rules prometheus-operator applies to them (keep the selected
pods/services in the selected namespaces and the named port; drop Succeeded/Failed pods;
`namespace`, `pod`, `container`, `service`, `endpoint`, `job` target labels; then the monitor's
own relabelings; honorLabels). Discovery is file_sd, one file per kubernetes_sd role (pod,
endpoints) with the `__meta_kubernetes_*` labels kubernetes_sd gives: written by
tests/kubesd.py from a real API server (the node), or from a static list of processes on this
machine standing in for pods (set_targets). The chart's PrometheusRule groups are loaded as rule
files.

Bound to loopback; every wait is bounded.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from apiserver import free_port, wait_for
from kubesd import map_labels, meta_suffix as _sanitize, write_file_sd

ROLES = {"podMonitor": "pod", "serviceMonitor": "endpoints"}   # kubernetes_sd role per monitor kind


def prometheus_path() -> str:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("prometheus", path=path)
    if found is None:
        raise RuntimeError("prometheus not found: run `make setup` (scripts/install-promtool.sh)")
    return found


def _selector_keeps(kind: str, selector: dict) -> list[dict]:
    """relabel `keep` rules for a LabelSelector on pods or services."""
    out = []
    for key, value in (selector.get("matchLabels") or {}).items():
        out.append({"action": "keep", "source_labels": [f"__meta_kubernetes_{kind}_label_{_sanitize(key)}",
                                                        f"__meta_kubernetes_{kind}_labelpresent_{_sanitize(key)}"],
                    "regex": f"({re.escape(value)});true"})
    for expr in selector.get("matchExpressions") or []:
        key, op = _sanitize(expr["key"]), expr["operator"]
        if op in ("Exists", "DoesNotExist"):
            out.append({"action": "keep" if op == "Exists" else "drop",
                        "source_labels": [f"__meta_kubernetes_{kind}_labelpresent_{key}"], "regex": "true"})
        else:
            values = "|".join(re.escape(v) for v in expr["values"])
            out.append({"action": "keep" if op == "In" else "drop",
                        "source_labels": [f"__meta_kubernetes_{kind}_label_{key}"], "regex": f"({values})"})
    return out


def _relabelings(rules: list[dict]) -> list[dict]:
    """prometheus-operator's RelabelConfig (camelCase) -> Prometheus's relabel_config."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label", "separator": "separator",
             "regex": "regex", "replacement": "replacement", "modulus": "modulus", "action": "action"}
    out = []
    for rule in rules or []:
        converted = {names[k]: v for k, v in rule.items() if k in names}
        if "action" in converted:
            converted["action"] = converted["action"].lower()
        out.append(converted)
    return out


def _namespace_keep(monitor: dict) -> list[dict]:
    """The monitor's namespaceSelector (absent: the monitor's own namespace)."""
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return []
    names = selector.get("matchNames") or [monitor["metadata"]["namespace"]]
    return [{"action": "keep", "source_labels": ["__meta_kubernetes_namespace"],
             "regex": "|".join(re.escape(n) for n in names)}]


def _job(kind: str, monitor: dict, index: int, endpoint: dict, sd: dict) -> dict:
    meta, spec = monitor["metadata"], monitor["spec"]
    role = ROLES[kind]
    port_label = ("__meta_kubernetes_pod_container_port_name" if role == "pod"
                  else "__meta_kubernetes_endpoint_port_name")
    relabel = _namespace_keep(monitor)
    relabel += _selector_keeps("pod" if role == "pod" else "service", spec.get("selector") or {})
    relabel += [{"action": "keep", "source_labels": [port_label], "regex": endpoint["port"]},
                # prometheus-operator's filterRunning: a finished pod's address may be reused
                {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]
    if role == "endpoints":
        relabel.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"})
    relabel += [{"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
                {"target_label": "endpoint", "replacement": endpoint["port"]}]
    relabel += _relabelings(endpoint.get("relabelings"))
    job = {"job_name": f"{kind}/{meta['namespace']}/{meta['name']}/{index}",
           "honor_labels": bool(endpoint.get("honorLabels", False)),
           "metrics_path": endpoint.get("path", "/metrics"), "relabel_configs": relabel, **sd}
    for ours, theirs in (("scrape_interval", "interval"), ("scrape_timeout", "scrapeTimeout")):
        if endpoint.get(theirs):
            job[ours] = endpoint[theirs]
    return job


def scrape_jobs(pod_monitors: list[dict], service_monitors: list[dict], files: dict[str, Path]) -> list[dict]:
    """Scrape jobs for the monitors, each discovering its role's targets from `files[role]` (file_sd)."""
    def sd(kind: str) -> dict:
        return {"file_sd_configs": [{"files": [str(files[ROLES[kind]])], "refresh_interval": "1s"}]}
    jobs = [_job("podMonitor", m, i, ep, sd("podMonitor"))
            for m in pod_monitors for i, ep in enumerate(m["spec"]["podMetricsEndpoints"])]
    jobs += [_job("serviceMonitor", m, i, ep, sd("serviceMonitor"))
             for m in service_monitors for i, ep in enumerate(m["spec"]["endpoints"])]
    return jobs


@dataclass
class PodTarget:
    """A process standing in for a pod: what kubernetes_sd (role pod, or role endpoints when
    `service` is set) would say of it."""
    address: str                   # host:port
    namespace: str
    pod: str
    container: str
    port_name: str
    labels: dict[str, str] = field(default_factory=dict)
    service: str | None = None     # set: an Endpoints target of this Service (ServiceMonitor)
    service_labels: dict[str, str] = field(default_factory=dict)

    def file_sd(self) -> dict:
        meta = {"__meta_kubernetes_namespace": self.namespace, "__meta_kubernetes_pod_name": self.pod,
                "__meta_kubernetes_pod_container_name": self.container,
                "__meta_kubernetes_pod_container_port_name": self.port_name}
        meta.update(map_labels("__meta_kubernetes_pod", "label", self.labels))
        if self.service:
            meta["__meta_kubernetes_service_name"] = self.service
            meta["__meta_kubernetes_endpoint_port_name"] = self.port_name
            meta.update(map_labels("__meta_kubernetes_service", "label", self.service_labels))
        return {"targets": [self.address], "labels": meta}


def rule_groups(prometheus_rules: list[dict]) -> dict:
    return {"groups": [g for rule in prometheus_rules for g in rule["spec"]["groups"]]}


class Prometheus:
    """`prometheus` on 127.0.0.1 in `workdir`: scrape jobs from the monitors, rule groups from
    the PrometheusRules; the targets are in `target_files` (set_targets, or tests/kubesd.py)."""

    def __init__(self, workdir: Path, pod_monitors: list[dict], service_monitors: list[dict],
                 prometheus_rules: list[dict], interval: str = "1s"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.target_files = {role: self.dir / f"targets-{role}.json" for role in ROLES.values()}
        for path in self.target_files.values():
            path.write_text("[]")
        jobs = scrape_jobs(pod_monitors, service_monitors, self.target_files)
        rules = rule_groups(prometheus_rules)
        (self.dir / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                  "rule_files": [str(self.dir / "rules.yaml")], "scrape_configs": jobs}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def set_targets(self, targets: list[PodTarget]) -> None:
        """Replace the file_sd targets (Prometheus re-reads the files on change)."""
        for role, path in self.target_files.items():
            write_file_sd(path, [t.file_sd() for t in targets if (t.service is not None) == (role == "endpoints")])

    def start(self) -> "Prometheus":
        log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [prometheus_path(), f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, 60, "prometheus ready", 0.2)
        except BaseException:
            self.stop()      # never leave a server behind a failed start
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log(self) -> str:
        path = self.dir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector (or [scalar]) `expr` evaluates to now."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def targets(self) -> list[dict]:
        return self.api("targets")["activeTargets"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def rules(self) -> list[dict]:
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------
# The dashboard's queries, with Grafana's variables substituted
DASHBOARD = Path(__file__).resolve().parents[1] / "charts" / "stepshot" / "dashboards" / "stepshot.json"


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for top in dash["panels"] for p in [top, *top.get("panels", [])] if p["type"] != "row"]
    out = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in panels for t in p["targets"]]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            out.append((f"variable {v['name']!r}", m.group(1)))   # its values come from this selector
    return out


def substitute(expr: str, run_seconds: float) -> str:
    """Grafana's substitution with every variable on "All" (the dashboard's default)."""
    for var in ("namespace", "name", "stage"):
        expr = expr.replace(f"${var}", ".*")
    return (expr.replace("$__rate_interval", "10s")
            .replace("$__range", f"{int(run_seconds) + 1}s"))


# ---------------------------------------------------------------------------------------
# The trainer's periodic log line against what the dashboard showed
LOG_RATE = re.compile(r"\[(\w+)\] step \d+/\d+ .* ([\d.]+) img/s data wait")


def logged_rates(log: str) -> dict[str, list[float]]:
    """The all-ranks images/s of each periodic log line, per stage, in order."""
    rates: dict[str, list[float]] = {}
    for stage, rate in LOG_RATE.findall(log):
        rates.setdefault(stage, []).append(float(rate))
    return rates


def matched_in_order(rates: list[float], series: list, rel: float = 0.10) -> list[tuple[float, float]]:
    """(logged, shown) pairs: each logged rate matched, in order, to a value the series took
    within `rel`. A window's value can be replaced (epoch-end flush) before a scrape sees it:
    such a rate stays unmatched, so callers require most, not all."""
    values = [float(v) for _, v in series]
    shown = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]   # each published value
    at, pairs = 0, []
    for rate in rates:
        match = next((i for i in range(at, len(shown)) if abs(shown[i] - rate) <= rel * rate), None)
        if match is not None:
            pairs.append((rate, shown[match]))
            at = match + 1
    return pairs
